package ring

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

func TestNew(t *testing.T) {
	tests := []struct {
		partitions int
		valid      bool
	}{
		{1, true}, {2, true}, {DefaultPartitions, true}, {1024, true}, {MaxPartitions, true},
		{0, false}, {-16, false}, {3, false}, {12, false}, {MaxPartitions + 1, false}, {2 * MaxPartitions, false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.partitions), func(t *testing.T) {
			r, err := New(tt.partitions)
			if tt.valid {
				if err != nil || r.Partitions() != tt.partitions {
					t.Fatalf("New(%d) = %v, %v", tt.partitions, r, err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidPartitions) || r != nil {
				t.Fatalf("New(%d) = %v, %v; want ErrInvalidPartitions", tt.partitions, r, err)
			}
			for _, want := range []string{fmt.Sprintf("partitions = %d", tt.partitions), "power of two in [1, 4096]"} {
				if !strings.Contains(err.Error(), want) {
					t.Fatalf("error %q does not say %q", err, want)
				}
			}
		})
	}
}

// TestHashIsStable pins Hash to the published XXH64 (seed 0) test vectors
// and Lookup to their top bits: keys must never change partition.
func TestHashIsStable(t *testing.T) {
	const s63 = "Call me Ishmael. Some years ago--never mind how long precisely-"
	tests := []struct {
		key  string
		hash uint64
		p16  PartitionID
	}{
		{"", 0xef46db3751d8e999, 0xe},
		{"a", 0xd24ec4f1a98c6e5b, 0xd},
		{"as", 0x1c330fb2d66be179, 0x1},
		{"asd", 0x631c37ce72a97393, 0x6},
		{"asdf", 0x415872f599cea71e, 0x4},
		{s63, 0x02a2e85470d6fd96, 0x0},
	}
	r := mustRing(t, 16)
	one := mustRing(t, 1)
	for _, tt := range tests {
		if got := Hash([]byte(tt.key)); got != tt.hash {
			t.Errorf("Hash(%q) = %#x, want %#x", tt.key, got, tt.hash)
		}
		if got := r.Lookup([]byte(tt.key)); got != tt.p16 {
			t.Errorf("Lookup(%q) with 16 partitions = %d, want %d", tt.key, got, tt.p16)
		}
		if got := one.Lookup([]byte(tt.key)); got != 0 {
			t.Errorf("Lookup(%q) with 1 partition = %d, want 0", tt.key, got)
		}
	}
}

// TestLookupDistribution hashes a million keys of two shapes and checks
// every partition's share is within six standard deviations of even.
func TestLookupDistribution(t *testing.T) {
	const keys = 1_000_000
	rng := rand.New(rand.NewPCG(1, 2))
	shapes := []struct {
		name string
		key  func(i int, buf []byte) []byte
	}{
		{"random 16 bytes", func(_ int, buf []byte) []byte {
			return binary.LittleEndian.AppendUint64(binary.LittleEndian.AppendUint64(buf, rng.Uint64()), rng.Uint64())
		}},
		{"sequential user:N", func(i int, buf []byte) []byte { return fmt.Appendf(buf, "user:%d", i) }},
	}
	sizes := []int{2, DefaultPartitions, 64, 256}
	for _, shape := range shapes {
		rings := make([]*Ring, len(sizes))
		counts := make([][]int, len(sizes))
		for i, p := range sizes {
			rings[i], counts[i] = mustRing(t, p), make([]int, p)
		}
		var buf []byte
		for k := range keys {
			buf = shape.key(k, buf[:0])
			for i, r := range rings {
				counts[i][r.Lookup(buf)]++
			}
		}
		for i, p := range sizes {
			t.Run(fmt.Sprintf("%s/P=%d", shape.name, p), func(t *testing.T) {
				mean := float64(keys) / float64(p)
				sigma := math.Sqrt(mean * (1 - 1/float64(p)))
				worst := 0.0
				for q, c := range counts[i] {
					dev := math.Abs(float64(c) - mean)
					worst = max(worst, dev)
					if dev > 6*sigma {
						t.Errorf("partition %d holds %d keys, mean %.0f ± %.0f", q, c, mean, sigma)
					}
				}
				t.Logf("worst partition off by %.2f%% of the mean (6σ = %.2f%%)", 100*worst/mean, 600*sigma/mean)
			})
		}
	}
}

func TestRange(t *testing.T) {
	tests := []struct {
		partitions int
		p          PartitionID
		want       HashRange
	}{
		{1, 0, HashRange{0, math.MaxUint64}},
		{2, 0, HashRange{0, 1<<63 - 1}},
		{2, 1, HashRange{1 << 63, math.MaxUint64}},
		{16, 1, HashRange{0x1000_0000_0000_0000, 0x1fff_ffff_ffff_ffff}},
		{16, 15, HashRange{0xf000_0000_0000_0000, math.MaxUint64}},
		{4096, 4095, HashRange{0xfff0_0000_0000_0000, math.MaxUint64}},
	}
	for _, tt := range tests {
		if got := mustRing(t, tt.partitions).Range(tt.p); got != tt.want {
			t.Errorf("P=%d: Range(%d) = %#x, want %#x", tt.partitions, tt.p, got, tt.want)
		}
	}
}

// TestRangesTileTheRing checks that, for every P, the ranges are contiguous,
// cover [0, 2⁶⁴-1], and agree with PartitionOf at both ends and just beyond.
func TestRangesTileTheRing(t *testing.T) {
	for p := 1; p <= MaxPartitions; p *= 2 {
		r := mustRing(t, p)
		var next uint64
		for q := range PartitionID(p) {
			hr := r.Range(q)
			if hr.First != next || hr.Last < hr.First {
				t.Fatalf("P=%d: Range(%d) = %#x, want it to start at %#x", p, q, hr, next)
			}
			if r.PartitionOf(hr.First) != q || r.PartitionOf(hr.Last) != q {
				t.Fatalf("P=%d: ends of Range(%d) = %#x map to %d and %d", p, q, hr,
					r.PartitionOf(hr.First), r.PartitionOf(hr.Last))
			}
			if !hr.Contains(hr.First) || !hr.Contains(hr.Last) ||
				(hr.First > 0 && hr.Contains(hr.First-1)) || (hr.Last < math.MaxUint64 && hr.Contains(hr.Last+1)) {
				t.Fatalf("P=%d: Contains disagrees with the bounds of %#x", p, hr)
			}
			if hr.Last-hr.First != math.MaxUint64/uint64(p) {
				t.Fatalf("P=%d: Range(%d) = %#x is not 2⁶⁴/P wide", p, q, hr)
			}
			next = hr.Last + 1
		}
		if next != 0 {
			t.Fatalf("P=%d: ranges end at %#x, want 2⁶⁴-1", p, next-1)
		}
	}
}

func TestRangePanicsOutOfRange(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("Range(16) with 16 partitions did not panic")
		}
	}()
	mustRing(t, 16).Range(16)
}

func BenchmarkLookup(b *testing.B) {
	r := mustRing(b, DefaultPartitions)
	for _, size := range []int{16, 64, 256} {
		key := make([]byte, size)
		b.Run(fmt.Sprintf("key=%dB", size), func(b *testing.B) {
			b.SetBytes(int64(size))
			var sink PartitionID
			for i := 0; b.Loop(); i++ {
				key[0] = byte(i)
				sink ^= r.Lookup(key)
			}
			_ = sink
		})
	}
}
