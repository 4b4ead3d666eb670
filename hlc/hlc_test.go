package hlc

import (
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// script returns a physical clock that yields readings in order and then
// repeats the last one, so a test controls exactly what Now and Update see.
func script(readings ...int64) func() int64 {
	var i int
	return func() int64 {
		r := readings[min(i, len(readings)-1)]
		i++
		return r
	}
}

func ts(wall int64, logical uint32) Timestamp { return Timestamp{WallTime: wall, Logical: logical} }

func TestCompare(t *testing.T) {
	tests := []struct {
		a, b Timestamp
		want int
	}{
		{ts(1, 0), ts(1, 0), 0},
		{ts(1, 0), ts(2, 0), -1},
		{ts(2, 0), ts(1, 9), 1},
		{ts(5, 1), ts(5, 2), -1},
		{ts(5, 3), ts(5, 2), 1},
		{ts(-1, 0), ts(0, 0), -1},
		{ts(0, math.MaxUint32), ts(1, 0), -1},
	}
	for _, tt := range tests {
		if got := tt.a.Compare(tt.b); got != tt.want {
			t.Errorf("%v.Compare(%v) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
		if got := tt.a.Less(tt.b); got != (tt.want < 0) {
			t.Errorf("%v.Less(%v) = %v, want %v", tt.a, tt.b, got, tt.want < 0)
		}
	}
}

func TestIsZeroAndString(t *testing.T) {
	tests := []struct {
		t    Timestamp
		zero bool
		str  string
	}{
		{Timestamp{}, true, "0.000000000,0"},
		{ts(0, 1), false, "0.000000000,1"},
		{ts(1_700_000_000_000_000_042, 3), false, "1700000000.000000042,3"},
		{ts(-1, 0), false, "-0.000000001,0"},
		{ts(math.MinInt64, 0), false, "-9223372036.854775808,0"},
	}
	for _, tt := range tests {
		if got := tt.t.IsZero(); got != tt.zero {
			t.Errorf("%#v.IsZero() = %v, want %v", tt.t, got, tt.zero)
		}
		if got := tt.t.String(); got != tt.str {
			t.Errorf("%#v.String() = %q, want %q", tt.t, got, tt.str)
		}
	}
}

func TestNow(t *testing.T) {
	tests := []struct {
		name     string
		physical []int64
		want     []Timestamp
	}{
		{"advancing", []int64{10, 20, 30}, []Timestamp{ts(10, 0), ts(20, 0), ts(30, 0)}},
		{"stalled", []int64{10, 10, 10}, []Timestamp{ts(10, 0), ts(10, 1), ts(10, 2)}},
		{"steps back", []int64{100, 50, 60, 101}, []Timestamp{ts(100, 0), ts(100, 1), ts(100, 2), ts(101, 0)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(script(tt.physical...))
			for i, want := range tt.want {
				if got := c.Now(); got != want {
					t.Fatalf("Now #%d = %v, want %v", i, got, want)
				}
			}
		})
	}
}

func TestNowLogicalOverflowAdvancesWall(t *testing.T) {
	c := New(script(7))
	c.last = ts(7, math.MaxUint32-1)
	if got := c.Now(); got != ts(7, math.MaxUint32) {
		t.Fatalf("Now = %v, want %v", got, ts(7, math.MaxUint32))
	}
	if got := c.Now(); got != ts(8, 0) {
		t.Fatalf("Now after exhausting logical = %v, want %v", got, ts(8, 0))
	}
}

func TestUpdate(t *testing.T) {
	tests := []struct {
		name     string
		last     Timestamp
		physical int64
		remote   Timestamp
		want     Timestamp
	}{
		{"physical ahead of both", ts(10, 4), 20, ts(15, 9), ts(20, 0)},
		{"remote ahead", ts(10, 4), 12, ts(15, 9), ts(15, 10)},
		{"local ahead", ts(30, 4), 12, ts(15, 9), ts(30, 5)},
		{"equal walls, remote logical higher", ts(30, 4), 12, ts(30, 9), ts(30, 10)},
		{"equal walls, local logical higher", ts(30, 9), 30, ts(30, 4), ts(30, 10)},
		{"zero remote", ts(30, 9), 12, Timestamp{}, ts(30, 10)},
		{"remote logical exhausted", ts(1, 0), 1, ts(40, math.MaxUint32), ts(41, 0)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(script(tt.physical))
			c.last = tt.last
			got, err := c.Update(tt.remote)
			if err != nil {
				t.Fatalf("Update(%v): %v", tt.remote, err)
			}
			if got != tt.want {
				t.Fatalf("Update(%v) = %v, want %v", tt.remote, got, tt.want)
			}
			if next := c.Now(); !got.Less(next) {
				t.Fatalf("Now after Update = %v, not after %v", next, got)
			}
		})
	}
}

func TestUpdateMaxOffset(t *testing.T) {
	const maxOffset = 100 * time.Millisecond
	base := int64(1_000_000_000)
	tests := []struct {
		name    string
		remote  Timestamp
		wantErr bool
	}{
		{"behind", ts(base-int64(time.Hour), 0), false},
		{"exactly max ahead", ts(base+int64(maxOffset), 7), false},
		{"just over max ahead", ts(base+int64(maxOffset)+1, 0), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(script(base), WithMaxOffset(maxOffset))
			before := c.Now()
			got, err := c.Update(tt.remote)
			if !tt.wantErr {
				if err != nil {
					t.Fatalf("Update(%v): %v", tt.remote, err)
				}
				if !before.Less(got) || got.Less(tt.remote) {
					t.Fatalf("Update(%v) = %v, want after %v and not before remote", tt.remote, got, before)
				}
				return
			}
			var oe *OffsetError
			if !errors.Is(err, ErrClockOffset) || !errors.As(err, &oe) {
				t.Fatalf("Update(%v) error = %v, want *OffsetError wrapping ErrClockOffset", tt.remote, err)
			}
			if oe.Remote != tt.remote || oe.Physical != base || oe.MaxOffset != maxOffset {
				t.Fatalf("OffsetError = %+v, want remote %v physical %d max %v", oe, tt.remote, base, maxOffset)
			}
			if after := c.Now(); after != before.next() {
				t.Fatalf("rejected Update moved the clock: Now = %v, want %v", after, before.next())
			}
		})
	}
}

func TestZeroClockUsesWallTime(t *testing.T) {
	var c Clock
	lo := time.Now().UnixNano()
	got := c.Now()
	hi := time.Now().UnixNano()
	if got.WallTime < lo || got.WallTime > hi {
		t.Fatalf("zero Clock Now = %v, want wall time in [%d, %d]", got, lo, hi)
	}
}

// TestConcurrentMonotonic has goroutines share a clock whose physical time
// jumps back and forth; every timestamp issued must be unique and each
// goroutine must see its own sequence strictly increase.
func TestConcurrentMonotonic(t *testing.T) {
	var tick atomic.Int64
	c := New(func() int64 {
		n := tick.Add(1)
		return (n % 7) * 3 // steps back every seventh reading, stalls between goroutines
	})
	const goroutines, perG = 8, 2000
	out := make([][]Timestamp, goroutines)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			seq := make([]Timestamp, 0, perG)
			for i := range perG {
				if i%5 == 0 {
					got, err := c.Update(ts(int64(i%11), uint32(i)))
					if err != nil {
						t.Errorf("Update: %v", err)
						return
					}
					seq = append(seq, got)
					continue
				}
				seq = append(seq, c.Now())
			}
			out[g] = seq
		})
	}
	wg.Wait()
	seen := make(map[Timestamp]bool, goroutines*perG)
	for g, seq := range out {
		for i, ts := range seq {
			if i > 0 && !seq[i-1].Less(ts) {
				t.Fatalf("goroutine %d: timestamp %d = %v not after %v", g, i, ts, seq[i-1])
			}
			if seen[ts] {
				t.Fatalf("timestamp %v issued twice", ts)
			}
			seen[ts] = true
		}
	}
}

func TestEncoding(t *testing.T) {
	for _, in := range []Timestamp{{}, ts(1, 2), ts(-1, math.MaxUint32), ts(math.MaxInt64, 0), ts(math.MinInt64, 7)} {
		b := in.Append([]byte{0xAA})
		if len(b) != 1+EncodedLen || b[0] != 0xAA {
			t.Fatalf("Append(%v) = %x, want prefix preserved and %d bytes added", in, b, EncodedLen)
		}
		got, err := Decode(b[1:])
		if err != nil || got != in {
			t.Fatalf("Decode(Append(%v)) = %v, %v", in, got, err)
		}
	}
	for _, n := range []int{0, EncodedLen - 1, EncodedLen + 1} {
		if _, err := Decode(make([]byte, n)); !errors.Is(err, ErrEncoding) {
			t.Errorf("Decode(%d bytes) error = %v, want ErrEncoding", n, err)
		}
	}
}

func BenchmarkNow(b *testing.B) {
	var c Clock
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c.Now()
		}
	})
}
