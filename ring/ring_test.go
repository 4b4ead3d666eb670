package ring

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"
	"slices"
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

func mustGrown(t testing.TB, initial, partitions int) *Ring {
	t.Helper()
	r, err := Grown(initial, partitions)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestGrown(t *testing.T) {
	tests := []struct {
		initial, partitions int
		says                string // empty: valid
	}{
		{1, 1, ""}, {1, 2, ""}, {1, 3, ""}, {1, MaxPartitions, ""}, {4, 5, ""}, {16, 24, ""},
		{16, MaxPartitions - 1, ""}, {MaxPartitions, MaxPartitions, ""},
		{0, 0, "partitions = 0, want a power of two in [1, 4096]"},
		{3, 4, "partitions = 3, want a power of two in [1, 4096]"},
		{-4, 4, "partitions = -4, want a power of two"},
		{2 * MaxPartitions, 2 * MaxPartitions, "partitions = 8192, want a power of two"},
		{16, 15, "partitions = 15, want 16 (the initial count) to 4096"},
		{16, 0, "partitions = 0, want 16 (the initial count) to 4096"},
		{1, MaxPartitions + 1, "partitions = 4097, want 1 (the initial count) to 4096"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d/%d", tt.initial, tt.partitions), func(t *testing.T) {
			r, err := Grown(tt.initial, tt.partitions)
			if tt.says == "" {
				if err != nil || r.Initial() != tt.initial || r.Partitions() != tt.partitions {
					t.Fatalf("Grown(%d, %d) = %v, %v", tt.initial, tt.partitions, r, err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidPartitions) || r != nil {
				t.Fatalf("Grown(%d, %d) = %v, %v; want ErrInvalidPartitions", tt.initial, tt.partitions, r, err)
			}
			if !strings.Contains(err.Error(), tt.says) {
				t.Fatalf("error %q does not say %q", err, tt.says)
			}
		})
	}
	for p := 1; p <= MaxPartitions; p *= 2 {
		if r := mustRing(t, p); *r != *mustGrown(t, p, p) || r.Initial() != p {
			t.Fatalf("New(%d) = %+v, want Grown(%d, %d) = %+v", p, r, p, p, mustGrown(t, p, p))
		}
	}
}

// TestNextSplitOrder pins the order of splits: each sweep splits 0, 1, …,
// W−1, the children being W, W+1, …, 2W−1.
func TestNextSplitOrder(t *testing.T) {
	tests := []struct {
		initial int
		want    [][2]PartitionID // parent, child of successive splits
	}{
		{1, [][2]PartitionID{{0, 1}, {0, 2}, {1, 3}, {0, 4}, {1, 5}, {2, 6}, {3, 7}, {0, 8}}},
		{4, [][2]PartitionID{{0, 4}, {1, 5}, {2, 6}, {3, 7}, {0, 8}, {1, 9}, {2, 10}, {7, 15}, {0, 16}}},
		{16, [][2]PartitionID{{0, 16}, {1, 17}}},
	}
	for _, tt := range tests {
		r := mustRing(t, tt.initial)
		i := 0
		for i < len(tt.want) {
			parent, child, ok := r.NextSplit()
			if !ok || child != PartitionID(r.Partitions()) {
				t.Fatalf("P₀=%d, P=%d: NextSplit = %d, %d, %v", tt.initial, r.Partitions(), parent, child, ok)
			}
			if int(child) == int(tt.want[i][1]) {
				if parent != tt.want[i][0] {
					t.Fatalf("P₀=%d, P=%d: NextSplit parent = %d, want %d", tt.initial, r.Partitions(), parent, tt.want[i][0])
				}
				i++
			}
			var err error
			if r, err = r.Split(); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestPartitionOfGrown pins PartitionOf and Range on small grown rings,
// worked by hand from the tree of splits.
func TestPartitionOfGrown(t *testing.T) {
	const q = 1 << 62 // a quarter of the hash space
	tests := []struct {
		initial, partitions int
		// ranges[i] is partition i's; each is [a·q/8, b·q/8) as {a, b}.
		ranges [][2]uint64
	}{
		{1, 1, [][2]uint64{{0, 32}}},
		{1, 2, [][2]uint64{{0, 16}, {16, 32}}},
		{1, 3, [][2]uint64{{0, 8}, {16, 32}, {8, 16}}},
		{1, 4, [][2]uint64{{0, 8}, {16, 24}, {8, 16}, {24, 32}}},
		{1, 5, [][2]uint64{{0, 4}, {16, 24}, {8, 16}, {24, 32}, {4, 8}}},
		{2, 3, [][2]uint64{{0, 8}, {16, 32}, {8, 16}}},
		{4, 4, [][2]uint64{{0, 8}, {8, 16}, {16, 24}, {24, 32}}},
		{4, 5, [][2]uint64{{0, 4}, {8, 16}, {16, 24}, {24, 32}, {4, 8}}},
		{4, 7, [][2]uint64{{0, 4}, {8, 12}, {16, 20}, {24, 32}, {4, 8}, {12, 16}, {20, 24}}},
		// Level 4 split all four roots; level 8 has split 0 into 0 and 8.
		{4, 9, [][2]uint64{{0, 2}, {8, 12}, {16, 20}, {24, 28}, {4, 8}, {12, 16}, {20, 24}, {28, 32}, {2, 4}}},
	}
	for _, tt := range tests {
		r := mustGrown(t, tt.initial, tt.partitions)
		for p, ab := range tt.ranges {
			want := HashRange{ab[0] * (q / 8), ab[1]*(q/8) - 1}
			if got := r.Range(PartitionID(p)); got != want {
				t.Errorf("P₀=%d, P=%d: Range(%d) = %#x, want %#x", tt.initial, tt.partitions, p, got, want)
			}
			for _, h := range []uint64{want.First, want.First + (want.Last-want.First)/2, want.Last} {
				if got := r.PartitionOf(h); got != PartitionID(p) {
					t.Errorf("P₀=%d, P=%d: PartitionOf(%#x) = %d, want %d", tt.initial, tt.partitions, h, got, p)
				}
			}
		}
	}
}

// refPartitionOf is the lookup rule as first specified, bit by bit.
func refPartitionOf(initial, partitions int, h uint64) PartitionID {
	consumed := bits.TrailingZeros(uint(initial))
	id := 0
	if consumed > 0 {
		id = int(h >> (64 - consumed))
	}
	for width := initial; id+width < partitions; width *= 2 {
		if h>>(63-consumed)&1 == 1 {
			id += width
		}
		consumed++
	}
	return PartitionID(id)
}

// refPath derives partition p's hash prefix under the given counts from
// the history of splits: a root's top bits, or the parent's prefix as of
// the child's creation followed by a 1, then a 0 for each later split of p.
func refPath(initial, partitions, p int) (prefix uint64, depth int) {
	var next int // the width of the first level at which p may split
	if p < initial {
		depth = bits.TrailingZeros(uint(initial))
		if depth > 0 {
			prefix = uint64(p) << (64 - depth)
		}
		next = initial
	} else {
		w := initial
		for 2*w <= p {
			w *= 2
		}
		prefix, depth = refPath(initial, p, p-w)
		prefix |= 1 << (63 - depth)
		depth++
		next = 2 * w
	}
	for w := next; p+w < partitions; w *= 2 {
		depth++
	}
	return prefix, depth
}

func refRange(initial, partitions int, p PartitionID) HashRange {
	prefix, depth := refPath(initial, partitions, int(p))
	return HashRange{First: prefix, Last: prefix | math.MaxUint64>>depth}
}

// grownSizes returns the (P₀, P) pairs of the property tests: every P from
// P₀ through the second doubling and a few more, and some near the bound.
func grownSizes() [][2]int {
	var out [][2]int
	for _, p0 := range []int{1, 2, 4, 16, 64} {
		for n := p0; n <= min(4*p0+3, MaxPartitions); n++ {
			out = append(out, [2]int{p0, n})
		}
	}
	return append(out, [2]int{1, 1000}, [2]int{16, 2049}, [2]int{16, 4095}, [2]int{16, 4096},
		[2]int{1, 4096}, [2]int{MaxPartitions, MaxPartitions})
}

// checkTiles fails t unless r's ranges, sorted, are contiguous and cover
// [0, 2⁶⁴-1], and PartitionOf agrees with them at both ends and beyond.
func checkTiles(t *testing.T, r *Ring) {
	t.Helper()
	name := fmt.Sprintf("P₀=%d, P=%d", r.Initial(), r.Partitions())
	byFirst := make([]PartitionID, r.Partitions())
	for p := range byFirst {
		byFirst[p] = PartitionID(p)
	}
	slices.SortFunc(byFirst, func(a, b PartitionID) int { return cmp.Compare(r.Range(a).First, r.Range(b).First) })
	var next uint64
	for i, p := range byFirst {
		hr := r.Range(p)
		if hr.First != next || hr.Last < hr.First || (i > 0 && hr.First == 0) {
			t.Fatalf("%s: Range(%d) = %#x, want it to start at %#x", name, p, hr, next)
		}
		if r.PartitionOf(hr.First) != p || r.PartitionOf(hr.Last) != p {
			t.Fatalf("%s: ends of Range(%d) = %#x map to %d and %d", name, p, hr,
				r.PartitionOf(hr.First), r.PartitionOf(hr.Last))
		}
		if (hr.First > 0 && r.PartitionOf(hr.First-1) == p) || (hr.Last < math.MaxUint64 && r.PartitionOf(hr.Last+1) == p) {
			t.Fatalf("%s: PartitionOf maps a hash just outside Range(%d) = %#x to it", name, p, hr)
		}
		next = hr.Last + 1
	}
	if next != 0 {
		t.Fatalf("%s: ranges end at %#x, want 2⁶⁴-1", name, next-1)
	}
}

func TestGrownRangesTileTheRing(t *testing.T) {
	for _, size := range grownSizes() {
		checkTiles(t, mustGrown(t, size[0], size[1]))
	}
}

// TestGrownMatchesReference checks PartitionOf and Range against the rules
// as specified, on random hashes and on every partition.
func TestGrownMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(*seed, 3))
	for _, size := range grownSizes() {
		p0, n := size[0], size[1]
		r := mustGrown(t, p0, n)
		for p := range PartitionID(n) {
			if got, want := r.Range(p), refRange(p0, n, p); got != want {
				t.Fatalf("P₀=%d, P=%d: Range(%d) = %#x, reference %#x", p0, n, p, got, want)
			}
		}
		for range 1000 {
			h := rng.Uint64()
			got := r.PartitionOf(h)
			if want := refPartitionOf(p0, n, h); got != want {
				t.Fatalf("P₀=%d, P=%d: PartitionOf(%#x) = %d, reference %d", p0, n, h, got, want)
			}
			if !r.Range(got).Contains(h) {
				t.Fatalf("P₀=%d, P=%d: PartitionOf(%#x) = %d, whose Range %#x does not contain it",
					p0, n, h, got, r.Range(got))
			}
		}
	}
}

// TestUnsplitIsUnchanged checks that a ring that never split routes as
// the top bits of the hash, as clusters did before splits existed.
func TestUnsplitIsUnchanged(t *testing.T) {
	rng := rand.New(rand.NewPCG(*seed, 4))
	for b := uint(0); 1<<b <= MaxPartitions; b++ {
		r := mustGrown(t, 1<<b, 1<<b)
		for range 1000 {
			h := rng.Uint64()
			if got, want := r.PartitionOf(h), PartitionID(h>>(64-b)); got != want {
				t.Fatalf("P=%d: PartitionOf(%#x) = %d, want %d", 1<<b, h, got, want)
			}
		}
		for p := range PartitionID(1 << b) {
			first := uint64(p) << (64 - b)
			if got, want := r.Range(p), (HashRange{first, first | math.MaxUint64>>b}); got != want {
				t.Fatalf("P=%d: Range(%d) = %#x, want %#x", 1<<b, p, got, want)
			}
		}
	}
}

// checkSplit fails t unless next is r after one split: the parent keeps
// the lower half of its range, the child takes the upper half, and every
// other partition keeps its range.
func checkSplit(t *testing.T, r, next *Ring, others []PartitionID) {
	t.Helper()
	name := fmt.Sprintf("P₀=%d, P=%d→%d", r.Initial(), r.Partitions(), next.Partitions())
	parent, child, ok := r.NextSplit()
	if !ok || int(child) != r.Partitions() || next.Partitions() != r.Partitions()+1 || next.Initial() != r.Initial() {
		t.Fatalf("%s: NextSplit = %d, %d, %v", name, parent, child, ok)
	}
	if got, ok := next.Parent(child); !ok || got != parent {
		t.Fatalf("%s: Parent(%d) = %d, %v; want %d", name, child, got, ok, parent)
	}
	old := r.Range(parent)
	mid := old.First + (old.Last-old.First)/2
	if old.Last == old.First {
		t.Fatalf("%s: parent %d's range %#x is one hash", name, parent, old)
	}
	if got, want := next.Range(parent), (HashRange{old.First, mid}); got != want {
		t.Fatalf("%s: parent %d's range %#x became %#x, want the lower half %#x", name, parent, old, got, want)
	}
	if got, want := next.Range(child), (HashRange{mid + 1, old.Last}); got != want {
		t.Fatalf("%s: child %d's range is %#x, want the upper half %#x of %#x", name, child, got, want, old)
	}
	for _, p := range others {
		if p != parent && r.Range(p) != next.Range(p) {
			t.Fatalf("%s: partition %d's range %#x became %#x", name, p, r.Range(p), next.Range(p))
		}
	}
}

func TestSplitChangesOnlyParent(t *testing.T) {
	for _, size := range grownSizes() {
		r := mustGrown(t, size[0], size[1])
		next, err := r.Split()
		if size[1] == MaxPartitions {
			if _, _, ok := r.NextSplit(); ok || next != nil || !errors.Is(err, ErrInvalidPartitions) {
				t.Fatalf("P=%d: Split = %v, %v; want ErrInvalidPartitions", size[1], next, err)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		all := make([]PartitionID, size[1])
		for p := range all {
			all[p] = PartitionID(p)
		}
		checkSplit(t, r, next, all)
	}
}

// TestSplitsMatchModel grows rings from P₀ to MaxPartitions, halving a
// model's ranges alongside, and compares them, in full at the end.
func TestSplitsMatchModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(*seed, 5))
	for _, p0 := range []int{1, 16} {
		r := mustRing(t, p0)
		model := make([]HashRange, p0)
		for p := range model {
			model[p] = r.Range(PartitionID(p))
		}
		for r.Partitions() < MaxPartitions {
			next, err := r.Split()
			if err != nil {
				t.Fatal(err)
			}
			others := make([]PartitionID, 4)
			for i := range others {
				others[i] = PartitionID(rng.IntN(r.Partitions()))
			}
			checkSplit(t, r, next, others)
			parent, _, _ := r.NextSplit()
			old := model[parent]
			mid := old.First + (old.Last-old.First)/2
			model[parent] = HashRange{old.First, mid}
			model = append(model, HashRange{mid + 1, old.Last})
			r = next
		}
		for p, want := range model {
			if got := r.Range(PartitionID(p)); got != want {
				t.Fatalf("P₀=%d, P=%d: Range(%d) = %#x, model %#x", p0, r.Partitions(), p, got, want)
			}
		}
		for range 10000 {
			h := rng.Uint64()
			if p := r.PartitionOf(h); !model[p].Contains(h) {
				t.Fatalf("P₀=%d, P=%d: PartitionOf(%#x) = %d, model range %#x", p0, r.Partitions(), h, p, model[p])
			}
		}
		if _, err := r.Split(); !errors.Is(err, ErrInvalidPartitions) || !strings.Contains(err.Error(), "4096") {
			t.Fatalf("Split at MaxPartitions: %v, want ErrInvalidPartitions", err)
		}
	}
}

func TestParent(t *testing.T) {
	tests := []struct {
		initial, partitions int
		p, parent           PartitionID
		ok                  bool
	}{
		{1, 1, 0, 0, false}, {1, 4, 1, 0, true}, {1, 4, 2, 0, true}, {1, 4, 3, 1, true},
		{4, 4, 3, 0, false}, {4, 9, 4, 0, true}, {4, 9, 7, 3, true}, {4, 9, 8, 0, true},
		{16, 4096, 4095, 2047, true}, {16, 4096, 15, 0, false}, {16, 4096, 16, 0, true},
	}
	for _, tt := range tests {
		parent, ok := mustGrown(t, tt.initial, tt.partitions).Parent(tt.p)
		if parent != tt.parent || ok != tt.ok {
			t.Errorf("P₀=%d, P=%d: Parent(%d) = %d, %v; want %d, %v",
				tt.initial, tt.partitions, tt.p, parent, ok, tt.parent, tt.ok)
		}
	}
}

func TestOutOfRangePanics(t *testing.T) {
	r := mustGrown(t, 4, 6)
	for name, f := range map[string]func(){
		"Range":  func() { r.Range(6) },
		"Parent": func() { r.Parent(6) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s(6) with 6 partitions did not panic", name)
				}
			}()
			f()
		}()
	}
}

// benchRings are an unsplit ring, one mid-sweep, and the longest lookup
// path, of log2(MaxPartitions) steps.
var benchRings = []struct {
	name             string
	initial, current int
}{
	{"", DefaultPartitions, DefaultPartitions},
	{"P0=16,P=24/", 16, 24},
	{"P0=1,P=4095/", 1, 4095},
}

func BenchmarkLookup(b *testing.B) {
	for _, br := range benchRings {
		r := mustGrown(b, br.initial, br.current)
		for _, size := range []int{16, 64, 256} {
			key := make([]byte, size)
			b.Run(fmt.Sprintf("%skey=%dB", br.name, size), func(b *testing.B) {
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
}

// BenchmarkPartitionOf isolates routing from hashing.
func BenchmarkPartitionOf(b *testing.B) {
	for _, br := range benchRings {
		r := mustGrown(b, br.initial, br.current)
		name := strings.TrimSuffix(br.name, "/")
		if name == "" {
			name = fmt.Sprintf("P=%d", br.current)
		}
		b.Run(name, func(b *testing.B) {
			var sink PartitionID
			h := uint64(0x9e3779b97f4a7c15)
			for b.Loop() {
				h = h*6364136223846793005 + 1442695040888963407
				sink ^= r.PartitionOf(h)
			}
			_ = sink
		})
	}
}
