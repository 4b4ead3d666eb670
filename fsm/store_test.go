package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/ringkv/ringkv/hlc"
	"github.com/ringkv/ringkv/internal/storage"
)

// newStore opens a store in an engine of its own, in memory.
func newStore(t testing.TB, opts Options) *Store {
	t.Helper()
	return openStore(t, vfs.NewMem(), opts)
}

// openStore opens partition 1's store in the engine of fs, closed when the
// test ends.
func openStore(t testing.TB, fs vfs.FS, opts Options) *Store {
	t.Helper()
	e, err := storage.Open(storage.Options{Dir: "/engine", FS: fs, CacheSize: 4 << 20, MemTableSize: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	s, err := New(opts, e.Partition(1))
	if err != nil {
		t.Fatalf("New(%+v): %v", opts, err)
	}
	return s
}

func stamp(version uint64, wall int64) Stamp {
	return Stamp{Version: version, Timestamp: hlc.Timestamp{WallTime: wall}}
}

func put(key, value string, st Stamp) Put {
	return Put{Key: []byte(key), Value: []byte(value), Stamp: st}
}

func del(key string, st Stamp) Delete { return Delete{Key: []byte(key), Stamp: st} }

// apply applies cmd at the next index and fails the test on error.
func apply(t testing.TB, s *Store, cmd Command) Result {
	t.Helper()
	res, err := s.Apply(s.AppliedIndex()+1, cmd)
	if err != nil {
		t.Fatalf("Apply(%#v): %v", cmd, err)
	}
	return res
}

// storeBytes is the store's snapshot stream.
func storeBytes(t testing.TB, s *Store) []byte {
	t.Helper()
	snap := s.Snapshot()
	defer snap.Close()
	return snapshotBytes(t, snap)
}

// streamHeaderLen is the length of the stream's header, which holds the
// applied index; the records follow it.
const streamHeaderLen = 17

func snapshotBytes(t testing.TB, snap *Snapshot) []byte {
	t.Helper()
	var buf bytes.Buffer
	n, err := snap.WriteTo(&buf)
	if err != nil {
		t.Fatalf("WriteTo: %v", err)
	}
	if n != int64(buf.Len()) {
		t.Fatalf("WriteTo returned %d, wrote %d bytes", n, buf.Len())
	}
	return buf.Bytes()
}

func TestConflictRule(t *testing.T) {
	tests := []struct {
		name      string
		before    []Write
		in        Write
		outcome   Outcome
		current   Stamp
		wantValue string // "" with wantLive false: Get reports not found
		wantLive  bool
		wantTomb  bool // Lookup finds a tombstone
	}{
		{"put on empty key wins", nil, put("k", "a", stamp(1, 10)), Won, stamp(1, 10), "a", true, false},
		{"higher version wins despite earlier timestamp", []Write{put("k", "a", stamp(1, 50))},
			put("k", "b", stamp(2, 10)), Won, stamp(2, 10), "b", true, false},
		{"lower version loses despite later timestamp", []Write{put("k", "a", stamp(2, 10))},
			put("k", "b", stamp(1, 50)), Lost, stamp(2, 10), "a", true, false},
		{"equal version, later timestamp wins", []Write{put("k", "a", stamp(3, 10))},
			put("k", "b", stamp(3, 11)), Won, stamp(3, 11), "b", true, false},
		{"equal version, earlier timestamp loses", []Write{put("k", "a", stamp(3, 10))},
			put("k", "b", stamp(3, 9)), Lost, stamp(3, 10), "a", true, false},
		{"equal version, logical counter breaks the tie", []Write{put("k", "a", stamp(3, 10))},
			put("k", "b", Stamp{Version: 3, Timestamp: hlc.Timestamp{WallTime: 10, Logical: 1}}),
			Won, Stamp{Version: 3, Timestamp: hlc.Timestamp{WallTime: 10, Logical: 1}}, "b", true, false},
		{"equal pair is already applied and keeps the first value", []Write{put("k", "a", stamp(3, 10))},
			put("k", "other", stamp(3, 10)), AlreadyApplied, stamp(3, 10), "a", true, false},
		{"delete beats older put", []Write{put("k", "a", stamp(1, 10))},
			del("k", stamp(2, 20)), Won, stamp(2, 20), "", false, true},
		{"delete older than put loses", []Write{put("k", "a", stamp(5, 10))},
			del("k", stamp(4, 20)), Lost, stamp(5, 10), "a", true, false},
		{"delete on absent key leaves a tombstone", nil, del("k", stamp(1, 10)), Won, stamp(1, 10), "", false, true},
		{"put older than tombstone loses", []Write{del("k", stamp(5, 10))},
			put("k", "a", stamp(4, 99)), Lost, stamp(5, 10), "", false, true},
		{"put newer than tombstone revives the key", []Write{del("k", stamp(5, 10))},
			put("k", "a", stamp(6, 11)), Won, stamp(6, 11), "a", true, false},
		{"delete with the put's pair is already applied", []Write{put("k", "a", stamp(5, 10))},
			del("k", stamp(5, 10)), AlreadyApplied, stamp(5, 10), "a", true, false},
		{"repeated delete is already applied", []Write{del("k", stamp(5, 10))},
			del("k", stamp(5, 10)), AlreadyApplied, stamp(5, 10), "", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t, Options{})
			for _, w := range tt.before {
				apply(t, s, w)
			}
			res := apply(t, s, tt.in)
			want := WriteResult{RequestID: tt.in.asWrite().requestID, Outcome: tt.outcome, Current: tt.current}
			if len(res.Writes) != 1 || res.Writes[0] != want {
				t.Fatalf("result = %+v, want one %+v", res, want)
			}
			got, ok := s.Get([]byte("k"))
			if ok != tt.wantLive || (ok && string(got.Value) != tt.wantValue) {
				t.Fatalf("Get = %q, %v; want %q, %v", got.Value, ok, tt.wantValue, tt.wantLive)
			}
			look, ok := s.Lookup([]byte("k"))
			if !ok || look.Tombstone != tt.wantTomb || look.Stamp != tt.current {
				t.Fatalf("Lookup = %+v, %v; want tombstone %v with stamp %v", look, ok, tt.wantTomb, tt.current)
			}
			if st, ok := s.Stamp([]byte("k")); !ok || st != tt.current {
				t.Fatalf("Stamp = %v, %v; want %v", st, ok, tt.current)
			}
			wantLen, wantTombs := 0, 0
			if tt.wantLive {
				wantLen = 1
			} else {
				wantTombs = 1
			}
			if s.Len() != wantLen || s.Tombstones() != wantTombs {
				t.Fatalf("Len, Tombstones = %d, %d; want %d, %d", s.Len(), s.Tombstones(), wantLen, wantTombs)
			}
		})
	}
}

func TestWriteResultEchoesRequestID(t *testing.T) {
	s := newStore(t, Options{})
	res := apply(t, s, Batch{Writes: []Write{
		Put{RequestID: 7, Key: []byte("a"), Stamp: stamp(2, 1)},
		Delete{RequestID: 8, Key: []byte("a"), Stamp: stamp(1, 1)},
		Put{RequestID: 9, Key: []byte("a"), Stamp: stamp(2, 1)},
	}})
	want := []WriteResult{
		{RequestID: 7, Outcome: Won, Current: stamp(2, 1)},
		{RequestID: 8, Outcome: Lost, Current: stamp(2, 1)},
		{RequestID: 9, Outcome: AlreadyApplied, Current: stamp(2, 1)},
	}
	if !slices.Equal(res.Writes, want) {
		t.Fatalf("batch results = %+v, want %+v", res.Writes, want)
	}
}

func TestPurgeTombstones(t *testing.T) {
	setup := []Write{
		del("d10", stamp(1, 10)),
		del("d20", stamp(1, 20)),
		del("d30", stamp(9, 30)),
		put("live5", "v", stamp(1, 5)),
		// Deleted at 15, then revived at 40: the purge must not remove the live value.
		del("revived", stamp(1, 15)),
		put("revived", "back", stamp(2, 40)),
		// Deleted twice: only the newer tombstone (35) counts.
		del("redeleted", stamp(1, 12)),
		del("redeleted", stamp(2, 35)),
	}
	tests := []struct {
		name   string
		cutoff hlc.Timestamp
		purged int
		remain []string // tombstones left, in key order
	}{
		{"zero cutoff purges nothing", hlc.Timestamp{}, 0, []string{"d10", "d20", "d30", "redeleted"}},
		{"cutoff equal to a tombstone keeps it", hlc.Timestamp{WallTime: 20}, 1, []string{"d20", "d30", "redeleted"}},
		{"logical part of the cutoff counts", hlc.Timestamp{WallTime: 20, Logical: 1}, 2, []string{"d30", "redeleted"}},
		{"tombstone newer than cutoff stays", hlc.Timestamp{WallTime: 31}, 3, []string{"redeleted"}},
		{"cutoff after everything purges all tombstones", hlc.Timestamp{WallTime: 1000}, 4, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t, Options{})
			for _, w := range setup {
				apply(t, s, w)
			}
			res := apply(t, s, PurgeTombstones{Cutoff: tt.cutoff})
			if res.Purged != tt.purged {
				t.Fatalf("Purged = %d, want %d", res.Purged, tt.purged)
			}
			var remain []string
			for _, k := range []string{"d10", "d20", "d30", "live5", "redeleted", "revived"} {
				if it, ok := s.Lookup([]byte(k)); ok && it.Tombstone {
					remain = append(remain, k)
				}
			}
			if !slices.Equal(remain, tt.remain) || s.Tombstones() != len(tt.remain) {
				t.Fatalf("tombstones left = %v (count %d), want %v", remain, s.Tombstones(), tt.remain)
			}
			for k, v := range map[string]string{"live5": "v", "revived": "back"} {
				if it, ok := s.Get([]byte(k)); !ok || string(it.Value) != v {
					t.Fatalf("live key %q = %q, %v after purge; want %q", k, it.Value, ok, v)
				}
			}
			if s.Len() != 2 {
				t.Fatalf("Len = %d, want 2", s.Len())
			}
		})
	}
}

// TestPurgedKeyAcceptsOlderWrite pins down the documented price of purging:
// once a tombstone is gone, a delayed write older than the delete wins.
func TestPurgedKeyAcceptsOlderWrite(t *testing.T) {
	s := newStore(t, Options{})
	apply(t, s, del("k", stamp(5, 10)))
	if res := apply(t, s, put("k", "old", stamp(4, 9))); res.Writes[0].Outcome != Lost {
		t.Fatalf("older put before purge: %v, want lost", res.Writes[0].Outcome)
	}
	apply(t, s, PurgeTombstones{Cutoff: hlc.Timestamp{WallTime: 11}})
	if res := apply(t, s, put("k", "old", stamp(4, 9))); res.Writes[0].Outcome != Won {
		t.Fatalf("older put after purge: %v, want won", res.Writes[0].Outcome)
	}
}

func TestPurgeCommand(t *testing.T) {
	now := hlc.Timestamp{WallTime: int64(100 * time.Hour), Logical: 4}
	tests := []struct {
		grace time.Duration
		want  int64
	}{
		{0, int64(100*time.Hour - DefaultTombstoneGrace)},
		{time.Minute, int64(100*time.Hour - time.Minute)},
	}
	for _, tt := range tests {
		s := newStore(t, Options{TombstoneGrace: tt.grace})
		if got := s.PurgeCommand(now); got != (PurgeTombstones{Cutoff: hlc.Timestamp{WallTime: tt.want}}) {
			t.Errorf("grace %v: PurgeCommand(%v) = %v, want cutoff wall %d", tt.grace, now, got, tt.want)
		}
	}
}

func TestApplyIndex(t *testing.T) {
	s := newStore(t, Options{})
	if _, err := s.Apply(0, put("a", "1", stamp(1, 1))); !errors.Is(err, ErrStaleIndex) {
		t.Fatalf("Apply at index 0 = %v, want ErrStaleIndex", err)
	}
	if _, err := s.Apply(5, put("a", "1", stamp(1, 1))); err != nil {
		t.Fatal(err)
	}
	before := storeBytes(t, s)
	for _, idx := range []uint64{5, 4} {
		if _, err := s.Apply(idx, put("b", "2", stamp(1, 1))); !errors.Is(err, ErrStaleIndex) {
			t.Fatalf("Apply at index %d after 5 = %v, want ErrStaleIndex", idx, err)
		}
	}
	if after := storeBytes(t, s); !bytes.Equal(before, after) {
		t.Fatal("stale Apply changed the store")
	}
	if _, err := s.Apply(9, put("b", "2", stamp(1, 1))); err != nil || s.AppliedIndex() != 9 {
		t.Fatalf("Apply at 9 after a gap: %v, applied %d", err, s.AppliedIndex())
	}
}

func TestApplyRejectsInvalidCommands(t *testing.T) {
	opts := Options{MaxKeySize: 8, MaxValueSize: 16}
	big := func(n int) []byte { return bytes.Repeat([]byte("x"), n) }
	tests := []struct {
		name  string
		cmd   Command
		err   error
		field string
		size  int
		limit int
	}{
		{"empty put key", Put{Value: []byte("v"), Stamp: stamp(2, 1)}, ErrEmptyKey, "key", 0, 1},
		{"empty delete key", Delete{Stamp: stamp(2, 1)}, ErrEmptyKey, "key", 0, 1},
		{"key too large", Put{Key: big(9), Stamp: stamp(2, 1)}, ErrKeyTooLarge, "key", 9, 8},
		{"delete key too large", Delete{Key: big(100), Stamp: stamp(2, 1)}, ErrKeyTooLarge, "key", 100, 8},
		{"value too large", Put{Key: []byte("a"), Value: big(17), Stamp: stamp(2, 1)}, ErrValueTooLarge, "value", 17, 16},
		{"one bad write spoils the batch", Batch{Writes: []Write{
			put("a", "fine", stamp(2, 1)),
			Put{Key: []byte("b"), Value: big(20), Stamp: stamp(2, 1)},
		}}, ErrValueTooLarge, "writes[1].value", 20, 16},
		{"nil command", nil, ErrMalformedCommand, "", 0, 0},
		{"nil write in batch", Batch{Writes: []Write{put("a", "fine", stamp(2, 1)), nil}}, ErrMalformedCommand, "", 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t, opts)
			apply(t, s, put("a", "orig", stamp(1, 1)))
			beforeData := storeBytes(t, s)[streamHeaderLen:]
			if err := s.Validate(tt.cmd); !errors.Is(err, tt.err) {
				t.Fatalf("Validate = %v, want %v", err, tt.err)
			}
			if err := opts.Validate(tt.cmd); !errors.Is(err, tt.err) {
				t.Fatalf("Options.Validate = %v, want %v", err, tt.err)
			}
			_, err := s.Apply(2, tt.cmd)
			if !errors.Is(err, tt.err) {
				t.Fatalf("Apply error = %v, want %v", err, tt.err)
			}
			if tt.field != "" {
				var le *LimitError
				if !errors.As(err, &le) || le.Field != tt.field || le.Size != tt.size || le.Limit != tt.limit {
					t.Fatalf("Apply error = %#v, want LimitError{Field: %q, Size: %d, Limit: %d}", err, tt.field, tt.size, tt.limit)
				}
			}
			if s.AppliedIndex() != 2 {
				t.Fatalf("AppliedIndex = %d, want 2: a rejected entry is still consumed", s.AppliedIndex())
			}
			it, ok := s.Get([]byte("a"))
			if !ok || string(it.Value) != "orig" || it.Stamp != stamp(1, 1) || s.Len() != 1 || s.Tombstones() != 0 {
				t.Fatalf("rejected command changed the data: a = %q %v, Len %d", it.Value, it.Stamp, s.Len())
			}
			if !bytes.Equal(beforeData, storeBytes(t, s)[streamHeaderLen:]) {
				t.Fatal("rejected command changed the snapshot records")
			}
		})
	}
}

func TestLimitErrorMessage(t *testing.T) {
	err := Options{}.ValidateKey(make([]byte, DefaultMaxKeySize+1))
	want := "fsm: key too large: key is 4097 bytes, maximum 4096"
	if err == nil || err.Error() != want {
		t.Fatalf("ValidateKey error = %v, want %q", err, want)
	}
	err = Options{}.ValidateKey(nil)
	if want := "fsm: empty key: key is 0 bytes, minimum 1"; err == nil || err.Error() != want {
		t.Fatalf("ValidateKey(nil) error = %v, want %q", err, want)
	}
	if err := (Options{MaxValueSize: 3}).ValidateValue([]byte("abcd")); !errors.Is(err, ErrValueTooLarge) {
		t.Fatalf("ValidateValue = %v, want ErrValueTooLarge", err)
	}
	if err := (Options{}).ValidateValue(make([]byte, DefaultMaxValueSize)); err != nil {
		t.Fatalf("ValidateValue at the default limit = %v", err)
	}
}

func TestNewRejectsNegativeOptions(t *testing.T) {
	for _, opts := range []Options{{MaxKeySize: -1}, {MaxValueSize: -1}, {TombstoneGrace: -time.Second}} {
		if _, err := New(opts, nil); !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("New(%+v) = %v, want ErrInvalidOptions", opts, err)
		}
	}
}

func TestRange(t *testing.T) {
	s := newStore(t, Options{})
	for i, k := range []string{"a", "b", "c", "d", "e"} {
		apply(t, s, put(k, k, stamp(1, int64(i))))
	}
	apply(t, s, del("c", stamp(2, 0)))
	tests := []struct {
		name       string
		start, end []byte
		limit      int // stop after this many; 0 = no limit
		want       string
	}{
		{"all", nil, nil, 0, "abde"},
		{"from b", []byte("b"), nil, 0, "bde"},
		{"to d exclusive", nil, []byte("d"), 0, "ab"},
		{"between keys", []byte("aa"), []byte("dd"), 0, "bd"},
		{"empty range", []byte("x"), []byte("z"), 0, ""},
		{"start after end", []byte("d"), []byte("b"), 0, ""},
		{"early stop", nil, nil, 2, "ab"},
		{"tombstone as bounds", []byte("c"), []byte("e"), 0, "d"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []byte
			s.Range(tt.start, tt.end, func(it Item) bool {
				got = append(got, it.Key...)
				return tt.limit == 0 || len(got) < tt.limit
			})
			if string(got) != tt.want {
				t.Fatalf("Range(%q, %q) = %q, want %q", tt.start, tt.end, got, tt.want)
			}
		})
	}
}

// TestApplyCopiesInput checks the store keeps no reference to the caller's
// buffers, which DecodeCommand aliases to a log entry, and that reads hand
// out the store's key rather than the one they were asked for.
func TestApplyCopiesInput(t *testing.T) {
	s := newStore(t, Options{})
	key, value := []byte("key"), []byte("value")
	apply(t, s, Put{Key: key, Value: value, Stamp: stamp(1, 1)})
	copy(key, "xxx")
	copy(value, "xxxxx")
	snap := s.Snapshot()
	defer snap.Close()
	for name, get := range map[string]func([]byte) (Item, bool){
		"Store.Get":       s.Get,
		"Store.Lookup":    s.Lookup,
		"Snapshot.Get":    snap.Get,
		"Snapshot.Lookup": snap.Lookup,
	} {
		query := []byte("key")
		it, ok := get(query)
		copy(query, "yyy")
		if !ok || string(it.Key) != "key" || string(it.Value) != "value" {
			t.Fatalf("%s after the caller reused its buffers = %q: %q, %v", name, it.Key, it.Value, ok)
		}
	}
}

func TestSnapshotIsolation(t *testing.T) {
	s := newStore(t, Options{})
	apply(t, s, put("a", "1", stamp(1, 1)))
	apply(t, s, put("b", "1", stamp(1, 1)))
	snap := s.Snapshot()
	defer snap.Close()
	image := snapshotBytes(t, snap)

	apply(t, s, put("a", "2", stamp(2, 2)))
	apply(t, s, del("b", stamp(2, 2)))
	apply(t, s, put("c", "new", stamp(1, 3)))
	apply(t, s, PurgeTombstones{Cutoff: hlc.Timestamp{WallTime: 100}})

	if it, ok := snap.Get([]byte("a")); !ok || string(it.Value) != "1" {
		t.Fatalf("snapshot Get(a) = %q, %v; want the old value", it.Value, ok)
	}
	if _, ok := snap.Get([]byte("b")); !ok {
		t.Fatal("snapshot lost b, deleted and purged after it was taken")
	}
	if _, ok := snap.Get([]byte("c")); ok {
		t.Fatal("snapshot sees c, written after it was taken")
	}
	if live, _, err := snap.Counts(); err != nil || live != 2 || snap.AppliedIndex() != 2 {
		t.Fatalf("snapshot Len %d (%v), applied %d; want 2, 2", live, err, snap.AppliedIndex())
	}
	if !bytes.Equal(image, snapshotBytes(t, snap)) {
		t.Fatal("snapshot serializes differently after later writes")
	}
	if it, ok := s.Get([]byte("a")); !ok || string(it.Value) != "2" {
		t.Fatalf("store Get(a) = %q, %v; want 2", it.Value, ok)
	}
}

// groupKeys returns n keys for groupBatch.
func groupKeys(n int) [][]byte {
	keys := make([][]byte, n)
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "k%02d", i)
	}
	return keys
}

// groupBatch writes version v to every key, deleting every fifth version
// and otherwise storing v in decimal, so a key's state alone tells which
// entry wrote it.
func groupBatch(keys [][]byte, v uint64) Batch {
	ws := make([]Write, 0, len(keys))
	for _, k := range keys {
		if v%5 == 0 {
			ws = append(ws, Delete{Key: k, Stamp: Stamp{Version: v}})
		} else {
			ws = append(ws, Put{Key: k, Value: fmt.Appendf(nil, "%d", v), Stamp: Stamp{Version: v}})
		}
	}
	return Batch{Writes: ws}
}

// TestConcurrentReadersAndSnapshots runs writers against readers that take
// snapshots, check invariants the writers maintain, and serialize them; run
// with -race. Each batch writes the same version to every key of a group, so
// a reader seeing mixed versions in one snapshot saw half a batch.
func TestConcurrentReadersAndSnapshots(t *testing.T) {
	s := newStore(t, Options{})
	const groupSize, batches = 8, 300
	keys := groupKeys(groupSize)
	var done atomic.Bool
	var wg sync.WaitGroup
	wg.Go(func() {
		defer done.Store(true)
		for v := uint64(1); v <= batches; v++ {
			if _, err := s.Apply(v, groupBatch(keys, v)); err != nil {
				t.Error(err)
				return
			}
		}
	})
	for range 2 {
		wg.Go(func() {
			var lastApplied uint64
			for !done.Load() {
				snap := s.Snapshot()
				if snap.AppliedIndex() < lastApplied {
					t.Errorf("applied index went back from %d to %d", lastApplied, snap.AppliedIndex())
					return
				}
				lastApplied = snap.AppliedIndex()
				var versions []uint64
				for _, k := range keys {
					if it, ok := snap.Lookup(k); ok {
						versions = append(versions, it.Version)
					}
				}
				if len(versions) > 0 && (len(versions) != groupSize || slices.Min(versions) != slices.Max(versions)) {
					t.Errorf("snapshot at %d sees a partial batch: versions %v", snap.AppliedIndex(), versions)
					return
				}
				live, dead, err := snap.Counts()
				if err != nil || live+dead != len(versions) {
					t.Errorf("snapshot counts %d keys (%v), holds %d", live+dead, err, len(versions))
					return
				}
				restored := newStore(t, Options{})
				if err := restored.Restore(bytes.NewReader(snapshotBytes(t, snap))); err != nil {
					t.Errorf("restoring a snapshot taken under writes: %v", err)
					return
				}
				if restored.AppliedIndex() != snap.AppliedIndex() || restored.Len() != live {
					t.Errorf("restored applied %d len %d, want %d %d", restored.AppliedIndex(), restored.Len(), snap.AppliedIndex(), live)
					return
				}
				snap.Close()
			}
		})
	}
	wg.Wait()
	if s.AppliedIndex() != batches {
		t.Fatalf("AppliedIndex = %d, want %d", s.AppliedIndex(), batches)
	}
}

// TestPointReadsNeverBehindAppliedIndex pins the ordering a quorum read
// relies on: once a reader sees AppliedIndex() >= i, Store.Get and
// Store.Lookup show every write of entries up to i, and a key's state
// never goes back. Two writers race for each index, the loser getting
// ErrStaleIndex; the entry at index i is groupBatch(keys, i). Run with -race.
func TestPointReadsNeverBehindAppliedIndex(t *testing.T) {
	s := newStore(t, Options{})
	const groupSize, entries = 8, 2000
	keys := groupKeys(groupSize)
	var done atomic.Bool
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			defer done.Store(true)
			for {
				v := s.AppliedIndex() + 1
				if v > entries {
					return
				}
				if _, err := s.Apply(v, groupBatch(keys, v)); err != nil && !errors.Is(err, ErrStaleIndex) {
					t.Error(err)
					return
				}
			}
		})
	}
	for range 2 {
		wg.Go(func() {
			seen := make([]uint64, groupSize) // per key: the latest version read
			for !done.Load() && !t.Failed() {
				func() {
					snap := s.Snapshot()
					defer snap.Close()
					readAll(t, s, snap, keys, seen)
				}()
			}
		})
	}
	wg.Wait()
	if s.AppliedIndex() != entries {
		t.Fatalf("AppliedIndex = %d, want %d", s.AppliedIndex(), entries)
	}
}

// readAll checks every key's latest state against snap (see
// TestPointReadsNeverBehindAppliedIndex).
func readAll(t *testing.T, s *Store, snap *Snapshot, keys [][]byte, seen []uint64) {
	for i, k := range keys {
		it, ok := s.Lookup(k)
		if !ok {
			if snap.AppliedIndex() > 0 {
				t.Errorf("Lookup(%s) not found at applied index %d", k, snap.AppliedIndex())
				return
			}
			continue
		}
		if old, _ := snap.Lookup(k); it.Version < snap.AppliedIndex() || it.Version < old.Version {
			t.Errorf("Lookup(%s) = v%d, behind applied index %d (snapshot v%d)", k, it.Version, snap.AppliedIndex(), old.Version)
			return
		}
		if it.Version < seen[i] {
			t.Errorf("Lookup(%s) went back from v%d to v%d", k, seen[i], it.Version)
			return
		}
		seen[i] = it.Version
		if !bytes.Equal(it.Key, k) || it.Tombstone != (it.Version%5 == 0) ||
			(!it.Tombstone && string(it.Value) != fmt.Sprint(it.Version)) {
			t.Errorf("Lookup(%s) = %+v: key, value and stamp of different writes", k, it)
			return
		}
		if got, live := s.Get(k); live && got.Version < it.Version {
			t.Errorf("Get(%s) = %+v after Lookup saw v%d", k, got, it.Version)
			return
		}
	}
}

// randomCommand draws from a small key space so writes collide, with stamps
// that sometimes tie or lose, and occasional purges.
func randomCommand(r *rand.Rand, now int64) Command {
	write := func() Write {
		key := []byte{byte(r.IntN(4)), byte(r.IntN(64))}
		st := Stamp{Version: r.Uint64N(8), Timestamp: hlc.Timestamp{WallTime: now - r.Int64N(50), Logical: r.Uint32N(2)}}
		if r.IntN(4) == 0 {
			return Delete{RequestID: r.Uint64(), Key: key, Stamp: st}
		}
		value := make([]byte, r.IntN(40))
		for i := range value {
			value[i] = byte(r.Uint32())
		}
		return Put{RequestID: r.Uint64(), Key: key, Value: value, Stamp: st}
	}
	switch n := r.IntN(20); {
	case n == 0:
		return PurgeTombstones{Cutoff: hlc.Timestamp{WallTime: now - 30}}
	case n < 4:
		ws := make([]Write, 1+r.IntN(6))
		for i := range ws {
			ws[i] = write()
		}
		return Batch{Writes: ws}
	default:
		return write()
	}
}

// TestDeterminism feeds two stores the same random log, the second through
// encode/decode as a follower would, and requires byte-identical snapshots
// at checkpoints; a third store restored mid-way must agree from then on.
func TestDeterminism(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 1))
	a, b := newStore(t, Options{}), newStore(t, Options{})
	var c *Store
	for i := 1; i <= 3000; i++ {
		cmd := randomCommand(r, int64(i))
		resA, errA := a.Apply(uint64(i), cmd)
		enc, err := cmd.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		dec, err := DecodeCommand(enc)
		if err != nil {
			t.Fatal(err)
		}
		resB, errB := b.Apply(uint64(i), dec)
		if errA != nil || errB != nil {
			t.Fatalf("entry %d: %v / %v", i, errA, errB)
		}
		if fmt.Sprint(resA) != fmt.Sprint(resB) {
			t.Fatalf("entry %d: results differ: %+v vs %+v", i, resA, resB)
		}
		if c != nil {
			if _, err := c.Apply(uint64(i), cmd); err != nil {
				t.Fatal(err)
			}
		}
		if i%500 == 0 {
			imgA := storeBytes(t, a)
			if !bytes.Equal(imgA, storeBytes(t, b)) {
				t.Fatalf("after entry %d the replicas' snapshots differ", i)
			}
			if c != nil && !bytes.Equal(imgA, storeBytes(t, c)) {
				t.Fatalf("after entry %d the restored replica differs", i)
			}
			if c == nil {
				c = newStore(t, Options{})
				if err := c.Restore(bytes.NewReader(imgA)); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	if a.Len()+a.Tombstones() == 0 {
		t.Fatal("random log left the store empty; the test compares nothing")
	}
}

// TestConvergence applies the same set of writes in different orders: since
// the greatest Stamp per key wins wherever it lands, every order must end in
// the same state.
func TestConvergence(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 2))
	var writes []Write
	for i := range 2000 {
		// Distinct timestamps: two different writes never share a Stamp.
		st := Stamp{Version: r.Uint64N(5), Timestamp: hlc.Timestamp{WallTime: int64(i)}}
		key := []byte{byte(r.IntN(50))}
		if r.IntN(3) == 0 {
			writes = append(writes, Delete{Key: key, Stamp: st})
		} else {
			writes = append(writes, Put{Key: key, Value: fmt.Appendf(nil, "v%d", i), Stamp: st})
		}
	}
	replay := func(order []Write) []byte {
		s := newStore(t, Options{})
		for i, w := range order {
			if _, err := s.Apply(uint64(i+1), w); err != nil {
				t.Fatal(err)
			}
		}
		return storeBytes(t, s)
	}
	want := replay(writes)
	for range 5 {
		shuffled := slices.Clone(writes)
		r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		if !bytes.Equal(want, replay(shuffled)) {
			t.Fatal("a shuffled replay of the same writes ended in a different state")
		}
	}
}
