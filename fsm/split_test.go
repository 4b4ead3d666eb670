package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/ringkv/ringkv/hlc"
	"github.com/ringkv/ringkv/internal/storage"
	"github.com/ringkv/ringkv/ring"
)

// splitFixture is partition 1 of an engine holding 400 keys, every third
// one deleted, and the state each key should have.
type splitFixture struct {
	e     *storage.Engine
	s     *Store
	items map[string]Item
}

func newSplitFixture(t *testing.T, fs vfs.FS) splitFixture {
	t.Helper()
	e, err := storage.Open(storage.Options{Dir: "/engine", FS: fs, CacheSize: 4 << 20, MemTableSize: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	s, err := New(Options{}, e.Partition(1))
	if err != nil {
		t.Fatal(err)
	}
	f := splitFixture{e: e, s: s, items: map[string]Item{}}
	for i := range 400 {
		k := fmt.Sprintf("key%04d", i)
		apply(t, s, put(k, "v"+k, stamp(1, int64(i+1))))
		f.items[k] = Item{Key: []byte(k), Value: []byte("v" + k), Stamp: stamp(1, int64(i+1))}
		if i%3 == 0 {
			apply(t, s, del(k, stamp(2, int64(1000+i))))
			f.items[k] = Item{Key: []byte(k), Tombstone: true, Stamp: stamp(2, int64(1000+i))}
		}
	}
	return f
}

func (f splitFixture) count(r ring.HashRange) (live, dead int) {
	for k, it := range f.items {
		if r.Contains(ring.Hash([]byte(k))) {
			if it.Tombstone {
				dead++
			} else {
				live++
			}
		}
	}
	return live, dead
}

// checkHolds fails unless s holds exactly the fixture's keys of r.
func (f splitFixture) checkHolds(t *testing.T, name string, s *Store, r ring.HashRange) {
	t.Helper()
	if got := s.HashRange(); got != r {
		t.Fatalf("%s owns %#x-%#x, want %#x-%#x", name, got.First, got.Last, r.First, r.Last)
	}
	for k, want := range f.items {
		got, ok := s.Lookup([]byte(k))
		switch {
		case !r.Contains(ring.Hash([]byte(k))):
			if ok {
				t.Fatalf("%s still holds %s, outside its range", name, k)
			}
		case !ok || got.Stamp != want.Stamp || got.Tombstone != want.Tombstone || !bytes.Equal(got.Value, want.Value):
			t.Fatalf("%s: %s = %+v, %v; want %+v", name, k, got, ok, want)
		}
	}
	live, dead := f.count(r)
	if s.Len() != live || s.Tombstones() != dead {
		t.Fatalf("%s counts %d live, %d tombstones; want %d, %d", name, s.Len(), s.Tombstones(), live, dead)
	}
}

func TestSplitHandsTheUpperHalfToTheChild(t *testing.T) {
	f := newSplitFixture(t, vfs.NewMem())
	lower := ring.HashRange{First: 0, Last: 1<<63 - 1}
	upper := ring.HashRange{First: 1 << 63, Last: ^uint64(0)}
	if lo, got, ok := Halves(f.s.HashRange()); !ok || got != upper || lo != lower {
		t.Fatalf("Halves(full) = %v, %v, %v", lo, got, ok)
	}
	before := f.s.AppliedIndex()
	res := apply(t, f.s, Split{Child: 2, Right: upper, Genesis: []byte("genesis")})
	live, dead := f.count(upper)
	if res.Moved != live+dead || live == 0 || dead == 0 {
		t.Fatalf("moved %d keys, the upper half holds %d live and %d tombstones", res.Moved, live, dead)
	}
	f.checkHolds(t, "the parent", f.s, lower)
	if _, ok, err := f.s.Genesis(); ok || err != nil {
		t.Fatalf("the parent has a genesis (%v)", err)
	}
	child, err := New(Options{}, f.e.Partition(2))
	if err != nil {
		t.Fatal(err)
	}
	f.checkHolds(t, "the child", child, upper)
	if child.AppliedIndex() != SplitChildIndex || f.s.AppliedIndex() != before+1 {
		t.Fatalf("applied indexes: child %d, parent %d", child.AppliedIndex(), f.s.AppliedIndex())
	}
	if g, ok, err := child.Genesis(); !ok || err != nil || string(g) != "genesis" {
		t.Fatalf("child genesis = %q, %v, %v", g, ok, err)
	}
	// Each keeps its own tombstones: a purge removes exactly them.
	cutoff := hlc.Timestamp{WallTime: 1 << 40}
	if got := apply(t, child, PurgeTombstones{Cutoff: cutoff}).Purged; got != dead {
		t.Fatalf("the child purged %d tombstones, want %d", got, dead)
	}
	_, pdead := f.count(lower)
	if got := apply(t, f.s, PurgeTombstones{Cutoff: cutoff}).Purged; got != pdead {
		t.Fatalf("the parent purged %d tombstones, want %d", got, pdead)
	}
	// The parent's range is part of its state: it survives a reopen and
	// travels in its snapshots.
	reopened, err := New(Options{}, f.e.Partition(1))
	if err != nil {
		t.Fatal(err)
	}
	if reopened.HashRange() != lower {
		t.Fatalf("reopened parent owns %v", reopened.HashRange())
	}
	fresh := newStore(t, Options{})
	if err := fresh.Restore(bytes.NewReader(storeBytes(t, f.s))); err != nil {
		t.Fatal(err)
	}
	if fresh.HashRange() != lower {
		t.Fatalf("a replica restored from the parent's snapshot owns %v", fresh.HashRange())
	}
}

func TestSplitRefusesWhatItDoesNotHalve(t *testing.T) {
	f := newSplitFixture(t, vfs.NewMem())
	upper := ring.HashRange{First: 1 << 63, Last: ^uint64(0)}
	for name, sp := range map[string]Split{
		"lower half":   {Child: 2, Right: ring.HashRange{First: 0, Last: 1<<63 - 1}},
		"off by one":   {Child: 2, Right: ring.HashRange{First: 1<<63 + 1, Last: ^uint64(0)}},
		"whole range":  {Child: 2, Right: FullRange},
		"empty range":  {Child: 2, Right: ring.HashRange{First: 9, Last: 3}},
		"huge genesis": {Child: 2, Right: upper, Genesis: make([]byte, MaxGenesis+1)},
	} {
		t.Run(name, func(t *testing.T) {
			img := storeBytes(t, f.s)
			if _, err := f.s.Apply(f.s.AppliedIndex()+1, sp); err == nil {
				t.Fatal("applied")
			}
			if !bytes.Equal(img[streamHeaderLen:], storeBytes(t, f.s)[streamHeaderLen:]) {
				t.Fatal("a refused split changed the store")
			}
		})
	}
	apply(t, f.s, Split{Child: 2, Right: upper})
	_, err := f.s.Apply(f.s.AppliedIndex()+1, Split{Child: 2, Right: upper})
	if !errors.Is(err, ErrSplitMismatch) {
		t.Fatalf("the same split again: %v, want ErrSplitMismatch", err)
	}
	if _, _, ok := halves(ring.HashRange{First: 7, Last: 7}); ok {
		t.Fatal("a range of one hash was cut in two")
	}
}

// A key whose half went to the child is refused from the split on, by
// Validate and by Apply, and the entry changes nothing.
func TestWritesOutsideTheRangeAreRefused(t *testing.T) {
	f := newSplitFixture(t, vfs.NewMem())
	upper := ring.HashRange{First: 1 << 63, Last: ^uint64(0)}
	apply(t, f.s, Split{Child: 2, Right: upper})
	var in, out string
	for k := range f.items {
		if upper.Contains(ring.Hash([]byte(k))) {
			out = k
		} else {
			in = k
		}
	}
	for name, tt := range map[string]struct {
		cmd   Command
		field string
	}{
		"put":    {put(out, "x", stamp(9, 9)), "key"},
		"delete": {del(out, stamp(9, 9)), "key"},
		"batch":  {Batch{Writes: []Write{put(in, "x", stamp(9, 9)), del(out, stamp(9, 9))}}, "writes[1].key"},
	} {
		t.Run(name, func(t *testing.T) {
			var re *RangeError
			if err := f.s.Validate(tt.cmd); !errors.As(err, &re) || re.Field != tt.field || !errors.Is(err, ErrWrongPartition) {
				t.Fatalf("Validate: %v, want a RangeError on %s", err, tt.field)
			}
			img := storeBytes(t, f.s)
			at := f.s.AppliedIndex() + 1
			if _, err := f.s.Apply(at, tt.cmd); !errors.As(err, &re) || re.Field != tt.field {
				t.Fatalf("Apply: %v, want a RangeError on %s", err, tt.field)
			}
			if f.s.AppliedIndex() != at {
				t.Fatal("a refused entry did not consume its index")
			}
			if !bytes.Equal(img[streamHeaderLen:], storeBytes(t, f.s)[streamHeaderLen:]) {
				t.Fatal("a refused write changed the store")
			}
		})
	}
	if err := f.s.Owns([]byte(out)); !errors.Is(err, ErrWrongPartition) {
		t.Fatalf("Owns(%s) = %v", out, err)
	}
	if err := f.s.Owns([]byte(in)); err != nil {
		t.Fatalf("Owns(%s) = %v", in, err)
	}
	apply(t, f.s, put(in, "still mine", stamp(9, 9)))
}

// A child span that holds data already (its own group's) is left alone;
// the parent gives up the half all the same.
func TestSplitKeepsAChildThatExists(t *testing.T) {
	f := newSplitFixture(t, vfs.NewMem())
	child, err := New(Options{Range: ring.HashRange{First: 1 << 63, Last: ^uint64(0)}}, f.e.Partition(2))
	if err != nil {
		t.Fatal(err)
	}
	own := "child's own"
	for i := 0; child.Owns([]byte(own)) != nil; i++ {
		own = fmt.Sprintf("child's own %d", i)
	}
	apply(t, child, put(own, "v", stamp(1, 1)))
	img := storeBytes(t, child)
	apply(t, f.s, Split{Child: 2, Right: child.HashRange()})
	if !bytes.Equal(img, storeBytes(t, child)) {
		t.Fatal("the split overwrote a child that existed")
	}
	f.checkHolds(t, "the parent", f.s, ring.HashRange{First: 0, Last: 1<<63 - 1})
}

// A crash after a split leaves the parent at the split or before it, and
// the child complete (it is ingested, durably, before the parent's batch
// commits); Raft then replays the split, which finds the child there and
// only gives up the parent's half: both halves end as the split left them.
func TestCrashAfterSplitLeavesAStateTheReplayCompletes(t *testing.T) {
	for seed := range uint64(6) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			fs := vfs.NewCrashableMem()
			f := newSplitFixture(t, fs)
			if err := f.e.Flush(); err != nil {
				t.Fatal(err)
			}
			before := f.s.AppliedIndex()
			sp := Split{Child: 2, Right: ring.HashRange{First: 1 << 63, Last: ^uint64(0)}, Genesis: []byte("g")}
			apply(t, f.s, sp)
			if seed%2 == 1 {
				if err := f.e.Flush(); err != nil {
					t.Fatal(err)
				}
			}
			crashed := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 50, RNG: rand.New(rand.NewPCG(seed, 5))})
			parent := openStore(t, crashed, Options{})
			switch a := parent.AppliedIndex(); {
			case a == before:
				if seed%2 == 1 {
					t.Fatal("the split was lost though the engine was flushed after it")
				}
				if _, err := parent.Apply(before+1, sp); err != nil {
					t.Fatalf("replaying the split: %v", err)
				}
			case a != before+1:
				t.Fatalf("applied %d after the crash; the split was %d", a, before+1)
			}
			child, err := New(Options{}, parent.part.Engine().Partition(2))
			if err != nil {
				t.Fatal(err)
			}
			f.checkHolds(t, "the parent", parent, ring.HashRange{First: 0, Last: 1<<63 - 1})
			f.checkHolds(t, "the child", child, ring.HashRange{First: 1 << 63, Last: ^uint64(0)})
			if g, ok, _ := child.Genesis(); !ok || string(g) != "g" || child.AppliedIndex() != SplitChildIndex {
				t.Fatalf("the child: genesis %q, applied %d", g, child.AppliedIndex())
			}
		})
	}
}

func TestRangeSinceIsTheSplitsIndex(t *testing.T) {
	f := newSplitFixture(t, vfs.NewMem())
	if f.s.RangeSince() != 0 {
		t.Fatalf("a partition never split: RangeSince = %d", f.s.RangeSince())
	}
	at := f.s.AppliedIndex() + 1
	apply(t, f.s, Split{Child: 2, Right: ring.HashRange{First: 1 << 63, Last: ^uint64(0)}})
	child, err := New(Options{}, f.e.Partition(2))
	if err != nil {
		t.Fatal(err)
	}
	if f.s.RangeSince() != at || child.RangeSince() != SplitChildIndex {
		t.Fatalf("RangeSince: parent %d (split at %d), child %d", f.s.RangeSince(), at, child.RangeSince())
	}
}
