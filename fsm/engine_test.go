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
)

// TestReopenKeepsTheState: a store reopened on its engine's files has the
// state, counts, tombstone index and applied index it had, and refuses the
// entries Raft replays at or below that index.
func TestReopenKeepsTheState(t *testing.T) {
	fs := vfs.NewMem()
	e, err := storage.Open(storage.Options{Dir: "/engine", FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Options{}, e.Partition(1))
	if err != nil {
		t.Fatal(err)
	}
	apply(t, s, put("a", "1", stamp(1, 10)))
	apply(t, s, del("b", stamp(1, 20)))
	apply(t, s, put("c", "3", stamp(1, 30)))
	image := storeBytes(t, s)
	if err := e.Flush(); err != nil {
		t.Fatal(err)
	}
	e.Close()

	r := openStore(t, fs, Options{})
	if r.AppliedIndex() != 3 || r.Len() != 2 || r.Tombstones() != 1 {
		t.Fatalf("reopened: applied %d, %d live, %d tombstones; want 3, 2, 1", r.AppliedIndex(), r.Len(), r.Tombstones())
	}
	if !bytes.Equal(storeBytes(t, r), image) {
		t.Fatal("the reopened store streams differently")
	}
	if _, err := r.Apply(3, put("a", "replayed", stamp(1, 10))); !errors.Is(err, ErrStaleIndex) {
		t.Fatalf("a replayed entry = %v, want ErrStaleIndex", err)
	}
	if res := apply(t, r, PurgeTombstones{Cutoff: hlc.Timestamp{WallTime: 25}}); res.Purged != 1 || r.Tombstones() != 0 {
		t.Fatalf("purge after reopening removed %d, %d left; the tombstone index did not survive", res.Purged, r.Tombstones())
	}
}

// TestRestoreRefusesCorruptStreamsAndChangesNothing: Restore verifies the
// whole stream before it changes anything.
func TestRestoreRefusesCorruptStreamsAndChangesNothing(t *testing.T) {
	src := newStore(t, Options{})
	for i := range 300 {
		apply(t, src, put(fmt.Sprintf("k%03d", i), "v", stamp(1, int64(i))))
	}
	apply(t, src, del("k007", stamp(2, 400)))
	image := storeBytes(t, src)

	dst := newStore(t, Options{})
	apply(t, dst, put("mine", "x", stamp(1, 1)))
	before := storeBytes(t, dst)
	rng := rand.New(rand.NewPCG(4, 5))
	for i := range 40 {
		bad := bytes.Clone(image)
		if i%2 == 0 {
			bad[rng.IntN(len(bad))] ^= byte(1 + rng.IntN(255))
		} else {
			bad = bad[:rng.IntN(len(bad))]
		}
		if err := dst.Restore(bytes.NewReader(bad)); !errors.Is(err, storage.ErrCorruptSnapshot) && !errors.Is(err, storage.ErrSnapshotFormat) {
			t.Fatalf("corrupt stream %d: Restore = %v", i, err)
		}
		if !bytes.Equal(storeBytes(t, dst), before) || dst.AppliedIndex() != 1 || dst.Len() != 1 {
			t.Fatalf("corrupt stream %d changed the store", i)
		}
	}
	if err := dst.Restore(bytes.NewReader(image)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(storeBytes(t, dst), image) || dst.AppliedIndex() != 301 || dst.Len() != 299 || dst.Tombstones() != 1 {
		t.Fatalf("restored: applied %d, %d live, %d tombstones", dst.AppliedIndex(), dst.Len(), dst.Tombstones())
	}
}

// TestCrashLeavesTheStateOfOneIndex applies a random log, crashes the
// engine's file system at random points (some unsynced data kept, some
// lost) and requires the reopened store to equal a replica that applied
// exactly the log up to the applied index it reports.
func TestCrashLeavesTheStateOfOneIndex(t *testing.T) {
	for seed := range uint64(6) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 3))
			fs := vfs.NewCrashableMem()
			e, err := storage.Open(storage.Options{Dir: "/engine", FS: fs, MemTableSize: 1 << 20})
			if err != nil {
				t.Fatal(err)
			}
			s, err := New(Options{}, e.Partition(1))
			if err != nil {
				t.Fatal(err)
			}
			var log []Command
			for i := 1; i <= 3000; i++ {
				cmd := randomCommand(r, int64(i))
				log = append(log, cmd)
				if _, err := s.Apply(uint64(i), cmd); err != nil {
					t.Fatal(err)
				}
				if r.IntN(500) == 0 {
					if err := e.Flush(); err != nil {
						t.Fatal(err)
					}
				}
			}
			crashed := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 30, RNG: rand.New(rand.NewPCG(seed, 7))})
			e.Close()
			got := openStore(t, crashed, Options{})
			want := newStore(t, Options{})
			for i, cmd := range log[:got.AppliedIndex()] {
				if _, err := want.Apply(uint64(i+1), cmd); err != nil {
					t.Fatal(err)
				}
			}
			t.Logf("applied 3000, %d after the crash", got.AppliedIndex())
			if !bytes.Equal(storeBytes(t, got), storeBytes(t, want)) || got.Len() != want.Len() || got.Tombstones() != want.Tombstones() {
				t.Fatalf("after the crash the store at applied index %d differs from the log's state at that index", got.AppliedIndex())
			}
		})
	}
}
