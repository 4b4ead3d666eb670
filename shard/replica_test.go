package shard

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/ringkv/ringkv/fsm"
	"github.com/ringkv/ringkv/hlc"
	"github.com/ringkv/ringkv/internal/storage"
	"github.com/ringkv/ringkv/internal/testing/wait"
	"github.com/ringkv/ringkv/raftgroup"
	"github.com/ringkv/ringkv/wal"
)

// group is a 3-replica partition in one process over raft's in-memory
// transport, whose Disconnect cuts links for partition tests. Its replicas
// re-offer to each other as nodes do through Admin.Reoffer (group.reoffer).
type group struct {
	t      *testing.T
	dir    string
	ids    []raft.ServerID
	trans  map[raft.ServerID]*raft.InmemTransport
	wals   map[raft.ServerID]*wal.WAL
	engs   map[raft.ServerID]*storage.Engine
	reps   map[raft.ServerID]*Replica
	tweak  func(*Config)
	closed map[raft.ServerID]bool
	// part is the partition the group serves; a child group (split_test.go)
	// shares its parent's WALs and engines, which only the parent closes.
	part   uint32
	shared bool

	// mu guards reps and cut against the replicas' re-offer goroutines;
	// the test's goroutine, their only writer, reads them without it.
	mu  sync.Mutex
	cut map[raft.ServerID]bool // replicas isolated from the others
	// holdReoffers makes every re-offer through Config.Reoffer fail, as an
	// unreachable primary would.
	holdReoffers atomic.Bool
	// reofferedVia counts the writes each replica re-offered through
	// Config.Reoffer, that is to a primary other than itself.
	reofferedVia map[raft.ServerID]*atomic.Uint64
}

const waitFor = 20 * time.Second // generous: a loaded 2-core CI machine

func newGroup(t *testing.T, tweak func(*Config)) *group {
	t.Helper()
	g := unstartedGroup(t, t.TempDir(), 7, tweak)
	g.wals, g.engs = map[raft.ServerID]*wal.WAL{}, map[raft.ServerID]*storage.Engine{}
	var servers []raft.Server
	for _, id := range g.ids {
		servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: id, Address: raft.ServerAddress(id)})
	}
	for _, id := range g.ids {
		g.start(id)
		if err := g.reps[id].Bootstrap(servers); err != nil {
			t.Fatal(err)
		}
	}
	return g
}

// unstartedGroup is a group of partition part with its transports
// connected and no replica running, stopped when the test ends; the
// caller gives it WALs and engines.
func unstartedGroup(t *testing.T, dir string, part uint32, tweak func(*Config)) *group {
	g := &group{
		t: t, dir: dir, tweak: tweak, part: part,
		ids:    []raft.ServerID{"n1", "n2", "n3"},
		trans:  map[raft.ServerID]*raft.InmemTransport{},
		reps:   map[raft.ServerID]*Replica{},
		closed: map[raft.ServerID]bool{},
		cut:    map[raft.ServerID]bool{},

		reofferedVia: map[raft.ServerID]*atomic.Uint64{},
	}
	for _, id := range g.ids {
		_, tr := raft.NewInmemTransport(raft.ServerAddress(id))
		g.trans[id] = tr
		g.reofferedVia[id] = new(atomic.Uint64)
		g.closed[id] = true
	}
	g.connectAll()
	t.Cleanup(func() {
		for _, id := range g.ids {
			g.stop(id)
		}
	})
	return g
}

func (g *group) connectAll() {
	g.mu.Lock()
	clear(g.cut)
	g.mu.Unlock()
	for _, a := range g.ids {
		for _, b := range g.ids {
			if a != b {
				g.trans[a].Connect(raft.ServerAddress(b), g.trans[b])
			}
		}
	}
}

// isolate cuts id off from the others in both directions.
func (g *group) isolate(id raft.ServerID) {
	g.mu.Lock()
	g.cut[id] = true
	g.mu.Unlock()
	g.trans[id].DisconnectAll()
	for _, o := range g.ids {
		if o != id {
			g.trans[o].Disconnect(raft.ServerAddress(id))
		}
	}
}

func (g *group) start(id raft.ServerID) {
	g.t.Helper()
	w, eng := g.wals[id], g.engs[id]
	if !g.shared {
		var err error
		if w, err = wal.Open(filepath.Join(g.dir, string(id), "wal"), wal.Options{SegmentSize: 1 << 20}); err != nil {
			g.t.Fatal(err)
		}
		if eng, err = storage.Open(storage.Options{Dir: filepath.Join(g.dir, string(id), "state"), CacheSize: 8 << 20, MemTableSize: 4 << 20}); err != nil {
			g.t.Fatal(err)
		}
	}
	cfg := Config{
		Partition: g.part,
		NodeID:    id,
		Dir:       filepath.Join(g.dir, string(id), fmt.Sprintf("p%d", g.part)),
		WAL:       w,
		Engine:    eng,
		Transport: g.trans[id],
		Logger:    hclog.New(&hclog.LoggerOptions{Level: hclog.Warn, Name: string(id)}),
		Raft: raftgroup.Timing{
			HeartbeatTimeout:   200 * time.Millisecond,
			ElectionTimeout:    200 * time.Millisecond,
			LeaderLeaseTimeout: 200 * time.Millisecond,
			CommitTimeout:      10 * time.Millisecond,
		},
		OpTimeout: 2 * time.Second,
		Snapshots: make(chan struct{}, 2),
		Reoffer: func(ctx context.Context, primary raft.ServerAddress, _ uint32, entry []byte) error {
			return g.reoffer(ctx, id, primary, entry)
		},
	}
	if g.tweak != nil {
		g.tweak(&cfg)
	}
	r, err := Open(cfg)
	if err != nil {
		g.t.Fatal(err)
	}
	g.mu.Lock()
	g.reps[id] = r
	g.mu.Unlock()
	g.wals[id], g.engs[id], g.closed[id] = w, eng, false
}

var errReofferHeld = errors.New("re-offers held by the test")

// reoffer is the group's Config.Reoffer, what Admin.Reoffer is between
// nodes: replica from hands entry to the replica at primary, unless a link
// between them is cut or the test holds re-offers.
func (g *group) reoffer(ctx context.Context, from raft.ServerID, primary raft.ServerAddress, entry []byte) error {
	to := raft.ServerID(primary)
	g.mu.Lock()
	r, cut := g.reps[to], g.cut[from] || g.cut[to]
	g.mu.Unlock()
	switch {
	case g.holdReoffers.Load():
		return errReofferHeld
	case cut || r == nil:
		return fmt.Errorf("%s cannot reach %s", from, primary)
	}
	if err := r.Reoffer(ctx, entry); err != nil {
		return err
	}
	n := 1
	if _, cmd, _ := decodeEntry(entry); cmd != nil {
		if b, ok := cmd.(fsm.Batch); ok {
			n = len(b.Writes)
		}
	}
	g.reofferedVia[from].Add(uint64(n))
	return nil
}

func (g *group) stop(id raft.ServerID) {
	if g.closed[id] {
		return
	}
	g.closed[id] = true
	g.reps[id].Close()
	if !g.shared {
		g.wals[id].Close()
		g.engs[id].Close()
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	wait.Until(t, waitFor, what, cond)
}

// leader waits until one running replica leads and has applied its term's
// marker, and returns it.
func (g *group) leader(except ...raft.ServerID) *Replica {
	g.t.Helper()
	var l *Replica
	eventually(g.t, "a ready primary", func() bool {
		for _, id := range g.ids {
			r := g.reps[id]
			if g.closed[id] || contains(except, id) || !r.IsPrimary() {
				continue
			}
			if r.isReady() {
				l = r
				return true
			}
		}
		return false
	})
	return l
}

// resendFor bounds how long onPrimary keeps sending an operation that met
// an election.
const resendFor = 30 * time.Second

var errNoPrimary = errors.New("no running replica, not cut off, leads")

// primary is a running replica, not cut off, that believes it leads, or
// nil. It may not be ready yet, or may be deposed without knowing it: an
// operation sent to it then fails NotPrimary or NoQuorum, and onPrimary
// sends it again. No test starts or stops a replica while other
// goroutines write, so closed is read without a lock, as everywhere else.
func (g *group) primary() *Replica {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, id := range g.ids {
		if r := g.reps[id]; !g.closed[id] && !g.cut[id] && r.IsPrimary() {
			return r
		}
	}
	return nil
}

// onPrimary runs op, a write or a read, on the group's primary, and while it
// fails with ErrNotPrimary or ErrNoQuorum sends it again to whichever
// replica leads by then, for up to resendFor, as the router and the client
// do across an election. It is for tests whose subject is not elections,
// which a loaded 2-core machine brings now and then even with every link
// up (200 ms timing): a write refused with NotPrimary did not happen, so
// sending it again is safe; one that failed NoQuorum may have taken effect
// or may yet (its outcome is unknown), so sending it again suits tests
// that write fixed values and check the final state, or that allow for the
// versions such attempts may have taken: unknown counts them. It returns
// the replica of the last attempt and op's last error. It fails nothing
// itself, so any goroutine may call it, and it logs on t an operation that
// took more than one attempt.
func (g *group) onPrimary(t testing.TB, what string, op func(*Replica) error) (by *Replica, unknown int, err error) {
	t.Helper()
	deadline := time.Now().Add(resendFor)
	attempts := 0
	for poll := 5 * time.Millisecond; ; poll = min(2*poll, 50*time.Millisecond) {
		if by = g.primary(); by == nil {
			err = errNoPrimary
		} else {
			attempts++
			err = op(by)
			if !errors.Is(err, ErrNotPrimary) && !errors.Is(err, ErrNoQuorum) {
				break
			}
			if errors.Is(err, ErrNoQuorum) {
				unknown++
			}
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(poll)
	}
	if attempts > 1 || by == nil {
		var on raft.ServerID
		if by != nil {
			on = by.cfg.NodeID
		}
		t.Logf("%s met an election: %d attempts, %d of unknown outcome; the last, on %q: %v", what, attempts, unknown, on, err)
	}
	return by, unknown, err
}

// written is a write onPrimary had acknowledged: its stamp, the replica
// that acknowledged it, and how many earlier attempts failed with their
// outcome unknown, each of which may have taken a version of the key too.
type written struct {
	stamp   fsm.Stamp
	by      *Replica
	unknown int
}

// put is Put on the group's primary, sent again across elections
// (onPrimary).
func (g *group) put(t testing.TB, key, value []byte, mode WriteMode) (written, error) {
	t.Helper()
	var w written
	var err error
	w.by, w.unknown, err = g.onPrimary(t, fmt.Sprintf("%v put of %q", mode, key), func(r *Replica) (err error) {
		w.stamp, err = r.Put(context.Background(), key, value, mode)
		return err
	})
	return w, err
}

// del is Delete on the group's primary, sent again across elections
// (onPrimary).
func (g *group) del(t testing.TB, key []byte, mode WriteMode) (written, error) {
	t.Helper()
	var w written
	var err error
	w.by, w.unknown, err = g.onPrimary(t, fmt.Sprintf("%v delete of %q", mode, key), func(r *Replica) (err error) {
		w.stamp, err = r.Delete(context.Background(), key, mode)
		return err
	})
	return w, err
}

// get is Get on the group's primary, sent again across elections
// (onPrimary), and the replica that answered.
func (g *group) get(t testing.TB, key []byte, mode ReadMode) (it fsm.Item, by *Replica, err error) {
	t.Helper()
	by, _, err = g.onPrimary(t, fmt.Sprintf("%v read of %q", mode, key), func(r *Replica) (err error) {
		it, err = r.Get(context.Background(), key, mode)
		return err
	})
	return it, by, err
}

func contains(ids []raft.ServerID, id raft.ServerID) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

func (g *group) followers(l *Replica) []*Replica {
	var out []*Replica
	for _, id := range g.ids {
		if r := g.reps[id]; r != l && !g.closed[id] {
			out = append(out, r)
		}
	}
	return out
}

// converged waits until every running replica's store holds the same data.
func (g *group) converged() {
	g.t.Helper()
	eventually(g.t, "replicas to converge", func() bool {
		var first []byte
		for _, id := range g.ids {
			if g.closed[id] {
				continue
			}
			var buf bytes.Buffer
			if _, err := g.reps[id].Store().Snapshot().WriteTo(&buf); err != nil {
				g.t.Fatal(err)
			}
			// The applied index is part of the snapshot header; compare data only.
			data := dumpItems(g.reps[id].Store())
			if first == nil {
				first = data
			} else if !bytes.Equal(first, data) {
				return false
			}
		}
		return true
	})
}

func dumpItems(s *fsm.Store) []byte {
	var b bytes.Buffer
	s.Snapshot().Range(nil, nil, func(it fsm.Item) bool {
		fmt.Fprintf(&b, "%q=%q@%v\n", it.Key, it.Value, it.Stamp)
		return true
	})
	fmt.Fprintf(&b, "tombstones=%d", s.Tombstones())
	return b.Bytes()
}

// TestWriteAndReadEveryMode: every write mode read back in every read mode.
// Writes and reads go to the group's primary and are sent again if they
// meet an election (onPrimary); a version is then 1 more for each attempt
// of unknown outcome that may have taken one.
func TestWriteAndReadEveryMode(t *testing.T) {
	g := newGroup(t, nil)
	g.leader()
	tests := []struct {
		name  string
		key   []byte
		value []byte
		wmode WriteMode
		rmode ReadMode
	}{
		{"strong/local", []byte("a"), []byte("1"), Strong, Local},
		{"strong/quorum", []byte("b"), []byte("2"), Strong, Quorum},
		{"fast/local", []byte("c"), []byte("3"), Fast, Local},
		{"fast/quorum", []byte("d"), []byte("4"), Fast, Quorum},
		{"binary", []byte{0, 0xff, 0, 1}, []byte{0xff, 0, 0xfe}, Strong, Quorum},
		{"empty value", []byte("e"), []byte{}, Strong, Local},
	}
	var putA written
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w, err := g.put(t, tc.key, tc.value, tc.wmode)
			if err != nil {
				t.Fatal(err)
			}
			if st := w.stamp; st.Version < 1 || st.Version > 1+uint64(w.unknown) || st.Timestamp.IsZero() {
				t.Fatalf("stamp %v, want version 1 (up to %d after %d attempts of unknown outcome) and a timestamp", st, 1+w.unknown, w.unknown)
			}
			if string(tc.key) == "a" {
				putA = w
			}
			// A fast write may still be in flight for a quorum read: it is
			// visible once committed, which the read waits for only if it
			// was committed before the read began (and, on a primary elected
			// since, once re-offered). Retry until it is.
			var it fsm.Item
			eventually(t, "the write to be readable", func() bool {
				it, _, err = g.get(t, tc.key, tc.rmode)
				return err == nil
			})
			if !bytes.Equal(it.Value, tc.value) || it.Stamp != w.stamp {
				t.Fatalf("read %q %v, want %q %v", it.Value, it.Stamp, tc.value, w.stamp)
			}
		})
	}
	w, err := g.del(t, []byte("a"), Strong)
	if want := putA.stamp.Version + 1; err != nil || w.stamp.Version < want || w.stamp.Version > want+uint64(w.unknown) {
		t.Fatalf("delete: %v %v, want version %d (up to %d after %d attempts of unknown outcome)", w.stamp, err, want, want+uint64(w.unknown), w.unknown)
	}
	for _, m := range []ReadMode{Local, Quorum} {
		if _, _, err := g.get(t, []byte("a"), m); !errors.Is(err, ErrNotFound) {
			t.Fatalf("%v read after delete: %v, want ErrNotFound", m, err)
		}
	}
	g.converged()
}

// TestFastWriteVisibleLocallyAtAck: a local read on the primary that
// acknowledged a fast write sees it. Writes are sent again if they meet an
// election (group.put); a primary that has lost leadership since the ack
// answers NotPrimary, and has nothing left to check.
func TestFastWriteVisibleLocallyAtAck(t *testing.T) {
	g := newGroup(t, nil)
	g.leader()
	ctx := context.Background()
	for i := range 200 {
		key := []byte(fmt.Sprintf("k%d", i%7))
		w, err := g.put(t, key, []byte(fmt.Sprint(i)), Fast)
		if err != nil {
			t.Fatal(err)
		}
		it, err := w.by.Get(ctx, key, Local)
		if errors.Is(err, ErrNotPrimary) {
			t.Logf("write %d: its primary lost leadership before the read", i)
			continue
		}
		if err != nil || it.Stamp.Compare(w.stamp) < 0 {
			t.Fatalf("write %d: local read %v %v right after ack of %v", i, it.Stamp, err, w.stamp)
		}
	}
	g.converged()
}

func TestFollowerAnswersNotPrimary(t *testing.T) {
	g := newGroup(t, nil)
	l := g.leader()
	f := g.followers(l)[0]
	ctx := context.Background()
	eventually(t, "the follower to know the leader", func() bool {
		id, _ := f.Leader()
		return id == l.cfg.NodeID
	})
	checks := map[string]func() error{
		"put":         func() error { _, err := f.Put(ctx, []byte("k"), []byte("v"), Strong); return err },
		"fast put":    func() error { _, err := f.Put(ctx, []byte("k"), []byte("v"), Fast); return err },
		"delete":      func() error { _, err := f.Delete(ctx, []byte("k"), Strong); return err },
		"local read":  func() error { _, err := f.Get(ctx, []byte("k"), Local); return err },
		"quorum read": func() error { _, err := f.Get(ctx, []byte("k"), Quorum); return err },
		"reoffer":     func() error { return f.Reoffer(ctx, encodeEntry(flagFast, fsm.Put{Key: []byte("k")})) },
	}
	for name, fn := range checks {
		var np *NotPrimaryError
		if err := fn(); !errors.As(err, &np) || np.LeaderID != string(l.cfg.NodeID) || !errors.Is(err, ErrNotPrimary) {
			t.Errorf("%s on follower: %v, want NotPrimaryError naming %s", name, err, l.cfg.NodeID)
		}
	}
}

func TestBadInputChangesNothing(t *testing.T) {
	g := newGroup(t, nil)
	l := g.leader()
	ctx := context.Background()
	before := l.AppliedIndex()
	tests := []struct {
		name  string
		key   []byte
		value []byte
		want  error
	}{
		{"empty key", nil, []byte("v"), fsm.ErrEmptyKey},
		{"key too large", bytes.Repeat([]byte("k"), 4097), []byte("v"), fsm.ErrKeyTooLarge},
		{"value too large", []byte("k"), make([]byte, 1<<20+1), fsm.ErrValueTooLarge},
	}
	for _, tc := range tests {
		for _, m := range []WriteMode{Strong, Fast} {
			if _, err := l.Put(ctx, tc.key, tc.value, m); !errors.Is(err, tc.want) {
				t.Errorf("%s (%v): %v, want %v", tc.name, m, err, tc.want)
			}
		}
	}
	if _, err := l.Get(ctx, nil, Quorum); !errors.Is(err, fsm.ErrEmptyKey) {
		t.Errorf("get of empty key: %v", err)
	}
	if got := l.AppliedIndex(); got != before {
		t.Fatalf("bad input reached the log: applied index %d → %d", before, got)
	}
}

func TestConcurrentWritesGetDistinctVersions(t *testing.T) {
	g := newGroup(t, nil)
	l := g.leader()
	const writers, each = 8, 25
	var mu sync.Mutex
	seen := map[uint64]bool{}
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				mode := Strong
				if i%2 == 1 {
					mode = Fast
				}
				st, err := l.Put(context.Background(), []byte("hot"), []byte(fmt.Sprint(w, i)), mode)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if seen[st.Version] {
					t.Errorf("version %d assigned twice", st.Version)
				}
				seen[st.Version] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	it, err := l.Get(context.Background(), []byte("hot"), Quorum)
	if err != nil || it.Version != writers*each {
		t.Fatalf("final version %d (%v), want %d", it.Version, err, writers*each)
	}
}

// TestIsolatedPrimary: a primary cut off from its group fails a strong
// write and a quorum read within about OpTimeout, and the group converges
// once healed. Its fast writes are TestIsolatedPrimaryReoffersFastWrites.
// The writes and the read around the isolation are sent again if they meet
// an election (group.put); the isolated primary's are not.
func TestIsolatedPrimary(t *testing.T) {
	g := newGroup(t, nil)
	g.leader()
	ctx := context.Background()
	base, err := g.put(t, []byte("base"), []byte("0"), Strong)
	if err != nil {
		t.Fatal(err)
	}
	old := base.by
	g.isolate(old.cfg.NodeID)

	start := time.Now()
	_, err = old.Put(ctx, []byte("s"), []byte("x"), Strong)
	if !errors.Is(err, ErrNoQuorum) && !errors.Is(err, ErrNotPrimary) {
		t.Fatalf("strong write on isolated primary: %v, want ErrNoQuorum or ErrNotPrimary", err)
	}
	if took := time.Since(start); took > old.cfg.OpTimeout+time.Second {
		t.Fatalf("strong write failed after %v, bound is %v", took, old.cfg.OpTimeout)
	}
	if _, err := old.Get(ctx, []byte("base"), Quorum); !errors.Is(err, ErrNoQuorum) && !errors.Is(err, ErrNotPrimary) {
		t.Fatalf("quorum read on isolated primary: %v", err)
	}

	g.leader(old.cfg.NodeID)
	// Not on the isolated old primary: group.put skips a replica cut off.
	if _, err := g.put(t, []byte("s"), []byte("newer"), Strong); err != nil {
		t.Fatal(err)
	}
	g.connectAll()
	g.converged()
	if it, _, err := g.get(t, []byte("s"), Quorum); err != nil || string(it.Value) != "newer" {
		t.Fatalf("after healing: %q %v, want the new primary's write", it.Value, err)
	}
}

// TestRestartedReplicaCatchesUpBySnapshot: a replica down while the others
// wrote and compacted their logs catches up by installing a snapshot. The
// writes are sent again if they meet an election (group.put), and both
// replicas left compact, so whichever leads once the replica is back must
// send it a snapshot.
func TestRestartedReplicaCatchesUpBySnapshot(t *testing.T) {
	g := newGroup(t, func(c *Config) {
		c.SnapshotPolicy = raftgroup.SnapshotPolicy{Threshold: 64, TrailingLogs: 32, Interval: 50 * time.Millisecond}
	})
	l := g.leader()
	down := g.followers(l)[0]
	downID := down.cfg.NodeID
	g.stop(downID)
	for i := range 1000 {
		if _, err := g.put(t, []byte(fmt.Sprintf("key%04d", i)), []byte(fmt.Sprint(i)), Strong); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range g.ids {
		if id == downID {
			continue
		}
		r := g.reps[id]
		eventually(t, string(id)+" to compact its log", func() bool {
			return r.raft.Stats()["last_snapshot_index"] != "0" && g.wals[id].FirstIndex(StreamOf(7)) > 1
		})
	}
	g.start(downID)
	g.converged()
	if n := g.reps[downID].Store().Len(); n != 1000 {
		t.Fatalf("restarted replica holds %d keys, want 1000", n)
	}
	if n := g.reps[downID].Stats().SnapshotsInstalled.Load(); n == 0 {
		t.Fatal("the replica caught up without installing a snapshot: the test no longer covers catch-up by snapshot")
	}
}

func TestBoltBackend(t *testing.T) {
	g := newGroup(t, func(c *Config) { c.Backend = LogBoltDB })
	g.leader()
	for _, m := range []WriteMode{Strong, Fast} {
		if _, err := g.put(t, []byte("k"+m.String()), []byte("v"), m); err != nil {
			t.Fatal(err)
		}
	}
	g.converged()
}

func TestWriteResult(t *testing.T) {
	mine := fsm.Stamp{Version: 5}
	newer := fsm.Stamp{Version: 5, Timestamp: hlc.Timestamp{WallTime: 9}}
	result := func(o fsm.Outcome, cur fsm.Stamp) applyResult {
		return applyResult{res: fsm.Result{Writes: []fsm.WriteResult{{Outcome: o, Current: cur}}}}
	}
	tests := []struct {
		name     string
		response interface{}
		want     error
	}{
		{"won", result(fsm.Won, mine), nil},
		{"already applied", result(fsm.AlreadyApplied, mine), nil},
		{"lost to a re-offered write", result(fsm.Lost, newer), ErrSuperseded},
		{"rejected by the store", applyResult{err: fsm.ErrKeyTooLarge}, fsm.ErrKeyTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st, err := writeResult(7, mine, tc.response)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
			if tc.want == nil && st != mine {
				t.Fatalf("stamp %v, want %v", st, mine)
			}
			var se *SupersededError
			if errors.As(err, &se) && (se.Winner != newer || se.Stamp != mine) {
				t.Fatalf("superseded error names %v over %v", se.Winner, se.Stamp)
			}
		})
	}
	if _, err := writeResult(7, mine, "junk"); err == nil {
		t.Fatal("an unexpected response type was accepted")
	}
}

// TestCurrentVersionNeverMissesAnAppliedWrite races currentVersion against
// writes that apply and leave the overlay: a version proposed before the
// call must be seen, in the overlay or in the store, however the apply
// interleaves — or it would be handed out twice.
func TestCurrentVersionNeverMissesAnAppliedWrite(t *testing.T) {
	r := &Replica{store: memStore(t), overlay: map[string]*pendingKey{}}
	key := []byte("k")
	const n = 200000
	var proposed atomic.Uint64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for v := uint64(1); v <= n; v++ {
			r.pendingMu.Lock()
			r.overlay[string(key)] = &pendingKey{version: v}
			r.pendingMu.Unlock()
			proposed.Store(v)
			put := fsm.Put{Key: key, Value: key, Stamp: fsm.Stamp{Version: v, Timestamp: hlc.Timestamp{WallTime: int64(v)}}}
			if _, err := r.store.Apply(v, put); err != nil {
				t.Error(err)
				return
			}
			r.retireOverlay(put)
		}
	}()
	for {
		select {
		case <-done:
			return
		default:
		}
		want := proposed.Load()
		if got := r.currentVersion(key); got < want {
			t.Fatalf("currentVersion = %d after version %d was proposed", got, want)
		}
	}
}

// expediteCounter is a transport that, like transport.Group, can be asked
// to send heartbeats at once.
type expediteCounter struct {
	*raft.InmemTransport
	calls, open atomic.Int32
}

func (e *expediteCounter) Expedite() func() {
	e.calls.Add(1)
	e.open.Add(1)
	return func() { e.open.Add(-1) }
}

// TestQuorumReadExpeditesHeartbeats: the leadership check of a quorum read
// asks the transport to send its heartbeats at once, and lets go after.
func TestQuorumReadExpeditesHeartbeats(t *testing.T) {
	counters := map[raft.ServerID]*expediteCounter{}
	g := newGroup(t, func(c *Config) {
		e := &expediteCounter{InmemTransport: c.Transport.(*raft.InmemTransport)}
		counters[c.NodeID] = e
		c.Transport = e
	})
	g.leader()
	if _, err := g.put(t, []byte("k"), []byte("v"), Strong); err != nil {
		t.Fatal(err)
	}
	_, l, err := g.get(t, []byte("k"), Quorum)
	if err != nil {
		t.Fatal(err)
	}
	if e := counters[l.cfg.NodeID]; e.calls.Load() == 0 || e.open.Load() != 0 {
		t.Fatalf("a quorum read made %d Expedite calls, %d still open; want at least one, none open", e.calls.Load(), e.open.Load())
	}
}

// lastApplied is the index and command of the last entry r applied, a
// write the test just made.
func lastApplied(t *testing.T, r *Replica) (uint64, fsm.Command) {
	t.Helper()
	index := r.AppliedIndex()
	var entry raft.Log
	if err := r.logs.GetLog(index, &entry); err != nil {
		t.Fatal(err)
	}
	_, cmd, err := decodeEntry(entry.Data)
	if err != nil {
		t.Fatal(err)
	}
	return index, cmd
}

// TestSettle: a write whose primary lost leadership with its entry in
// flight is settled from the log once the replica has applied that index:
// its own entry there means it took effect; another entry means a strong
// write provably did not happen (NotPrimary, so the client sends it to the
// new primary) while a fast write, which may be re-offered, stays unknown;
// and an index not applied in time stays unknown.
func TestSettle(t *testing.T) {
	g := newGroup(t, nil)
	g.leader()
	w, err := g.put(t, []byte("k"), []byte("v"), Strong)
	if err != nil {
		t.Fatal(err)
	}
	l, st := w.by, w.stamp
	index, mine := lastApplied(t, l)
	other := mine.(fsm.Put)
	other.RequestID++
	tests := []struct {
		name  string
		index uint64
		cmd   fsm.Command
		mode  WriteMode
		want  error // nil: acknowledged with st
	}{
		{"own entry committed", index, mine, Strong, nil},
		{"own fast entry committed", index, mine, Fast, nil},
		{"strong write cut", index, other, Strong, ErrNotPrimary},
		{"fast write cut", index, other, Fast, ErrNoQuorum},
		{"not applied in time", index + 1000, mine, Strong, ErrNoQuorum},
		{"never dispatched", 0, mine, Strong, ErrNoQuorum},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			got, err := l.settle(ctx, tt.index, tt.cmd, tt.mode, raft.ErrLeadershipLost)
			if tt.want == nil {
				if err != nil || got != st {
					t.Fatalf("settle = %v, %v; want %v acknowledged", got, err, st)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("settle = %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

// TestSettleWaitIsBounded: settle waits settleBound (the time an election
// takes) to learn a write's outcome unless it knows a leader, not the
// write's whole op timeout. A primary cut off from its group hears from no
// leader after its lease ran out, so its write in flight fails NoQuorum
// (outcome unknown) about a lease and settleBound (4 s here) after it was
// sent, here with an op timeout of 20 s; a replica in touch with a leader
// keeps waiting past the bound, as the leader will tell it the commit
// index.
func TestSettleWaitIsBounded(t *testing.T) {
	const opTimeout = 20 * time.Second
	// 1 s timing: the write below must reach raft before the isolated
	// primary's lease runs out, and the follower keep its leader through
	// phase one, on a loaded machine.
	timing := raftgroup.Timing{
		HeartbeatTimeout:   time.Second,
		ElectionTimeout:    time.Second,
		LeaderLeaseTimeout: time.Second,
		CommitTimeout:      10 * time.Millisecond,
	}
	g := newGroup(t, func(c *Config) { c.Raft, c.OpTimeout = timing, opTimeout })
	g.leader()
	ctx := context.Background()
	base, err := g.put(t, []byte("base"), []byte("0"), Strong)
	if err != nil {
		t.Fatal(err)
	}
	l := base.by
	index, mine := lastApplied(t, l)

	// A follower that knows its leader waits for an index nobody proposed
	// until its deadline, past the bound.
	f := g.followers(l)[0]
	eventually(t, "the follower to know its leader", func() bool { id, _ := f.Leader(); return id != "" })
	fctx, cancel := context.WithTimeout(ctx, settleBound(timing)+500*time.Millisecond)
	_, err = f.settle(fctx, index+1000, mine, Strong, raft.ErrLeadershipLost)
	cancel()
	if !errors.Is(err, ErrNoQuorum) || fctx.Err() == nil {
		t.Fatalf("settle on a follower with a leader: %v before its deadline; want NoQuorum at the deadline", err)
	}

	// The isolated primary's write: without the bound it would wait the
	// whole op timeout.
	g.isolate(l.cfg.NodeID)
	start := time.Now()
	_, err = l.Put(ctx, []byte("s"), []byte("x"), Strong)
	took := time.Since(start)
	switch {
	case errors.Is(err, ErrNotPrimary):
		t.Fatalf("the isolated primary stepped down before the write reached raft (%v): machine too slow for a 1 s lease", err)
	case !errors.Is(err, ErrNoQuorum) || !errors.Is(err, raft.ErrLeadershipLost) || !errors.Is(err, errNoLeaderHeard):
		t.Fatalf("write on the isolated primary: %v; want NoQuorum after leadership lost, no leader heard from", err)
	case took > opTimeout/2:
		t.Fatalf("write on the isolated primary failed after %v; the bound is about a lease plus %v, the op timeout %v",
			took, settleBound(timing), opTimeout)
	}
	g.connectAll()
	g.converged()
}

// TestSettleAfterSpuriousStepDown: a primary that lost leadership for a
// moment, not cut off (its lease ran out in a stall on a loaded machine),
// learns its write's outcome in settle and answers it, rather than failing
// it NoQuorum (Unavailable, which a client does not resend) before the
// group has had time to elect a leader. After stepping down it hears from
// no leader until some heartbeat timeout has run out, its own at the
// earliest, which raft draws between HeartbeatTimeout and twice it: with
// settle bounded by one ElectionTimeout (equal to HeartbeatTimeout, as by
// default) the write failed though its entry then committed. The
// followers' long heartbeat timeout leaves the election to the old
// primary, which holds the write's entry, so the write takes effect.
func TestSettleAfterSpuriousStepDown(t *testing.T) {
	const opTimeout = 30 * time.Second
	// 1 s: the write below must reach raft before the primary's lease runs
	// out, on a loaded machine.
	short := raftgroup.Timing{
		HeartbeatTimeout:   time.Second,
		ElectionTimeout:    time.Second,
		LeaderLeaseTimeout: time.Second,
		CommitTimeout:      10 * time.Millisecond,
	}
	long := short
	long.HeartbeatTimeout, long.ElectionTimeout = time.Minute, time.Minute
	g := newGroup(t, func(c *Config) {
		c.Raft, c.OpTimeout = long, opTimeout
		if c.NodeID == "n1" {
			c.Raft = short
		}
	})
	l := g.leader()
	if l.cfg.NodeID != "n1" {
		t.Fatalf("%s leads; want n1, whose heartbeat timeout alone is short", l.cfg.NodeID)
	}
	ctx := context.Background()
	if _, err := g.put(t, []byte("base"), []byte("0"), Strong); err != nil {
		t.Fatal(err)
	}

	// Cut off just until the lease runs out: the write's entry stays on
	// the primary alone, and it steps down.
	g.isolate(l.cfg.NodeID)
	done := make(chan error, 1)
	go func() {
		_, err := l.Put(ctx, []byte("s"), []byte("x"), Strong)
		done <- err
	}()
	eventually(t, "the cut-off primary to step down", func() bool { return !l.IsPrimary() })
	g.connectAll()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("write on a primary that stepped down for a moment: %v; want it settled once the group elected a leader", err)
		}
	case <-time.After(2 * opTimeout):
		t.Fatal("the write did not return within twice its op timeout")
	}
	eventually(t, "the old primary to lead again", l.IsPrimary)
	it, err := l.Get(ctx, []byte("s"), Quorum)
	if err != nil || string(it.Value) != "x" {
		t.Fatalf("quorum read after the settled write: %v, %v", it, err)
	}
	g.converged()
}

// heldTimeoutNow is a transport whose TimeoutNow, the last step of a
// leadership transfer, waits until the test releases it and then fails:
// until then its primary's transfer stays in progress, and raft refuses
// every proposal with ErrLeadershipTransferInProgress.
type heldTimeoutNow struct {
	*raft.InmemTransport
	entered chan struct{}
	release <-chan struct{}
}

var errTransferHeld = errors.New("leadership transfer held by the test")

func (h *heldTimeoutNow) TimeoutNow(id raft.ServerID, target raft.ServerAddress, args *raft.TimeoutNowRequest, resp *raft.TimeoutNowResponse) error {
	select {
	case h.entered <- struct{}{}:
	default:
	}
	<-h.release
	return errTransferHeld
}

// heldTransferGroup is a group whose leadership transfers hold in
// TimeoutNow: entered receives once one is there, and release (idempotent,
// and called when the test ends, before the group closes raft) lets it
// fail.
func heldTransferGroup(t *testing.T) (g *group, entered <-chan struct{}, release func()) {
	held := make(chan struct{})
	enteredCh := make(chan struct{}, 1)
	g = newGroup(t, func(c *Config) {
		c.Transport = &heldTimeoutNow{InmemTransport: c.Transport.(*raft.InmemTransport), entered: enteredCh, release: held}
	})
	var once sync.Once
	release = func() { once.Do(func() { close(held) }) }
	t.Cleanup(release)
	return g, enteredCh, release
}

// TestRefusedWriteGivesItsVersionBack: a strong write that raft refuses
// before it reaches the log (here during a leadership transfer) gives back
// the version it reserved, so the key's next write gets the next version: two
// writes to one key get consecutive versions in log order. It does so only
// while no later write reserved above it (TestGiveBackOnlyTheNewest).
func TestRefusedWriteGivesItsVersionBack(t *testing.T) {
	g, entered, releaseOnce := heldTransferGroup(t)
	l := g.leader()
	ctx := context.Background()
	key := []byte("k")
	if st, err := l.Put(ctx, key, []byte("v1"), Strong); err != nil || st.Version != 1 {
		t.Fatalf("first write: %v %v, want version 1", st, err)
	}

	transfer := make(chan error, 1)
	go func() { transfer <- l.TransferLeadership() }()
	within(t, entered, "the transfer to send TimeoutNow")
	// (A fast write is acknowledged from the journal meanwhile; its entry
	// is refused, and the journal re-offers it: TestFastWriteDuringTransfer.)
	for i := range 3 {
		var err error
		if i == 1 {
			_, err = l.Delete(ctx, key, Strong)
		} else {
			_, err = l.Put(ctx, key, []byte("refused"), Strong)
		}
		if !errors.Is(err, ErrNotPrimary) {
			t.Fatalf("write %d during the transfer: %v, want NotPrimary", i, err)
		}
	}
	l.pendingMu.Lock()
	_, kept := l.overlay[string(key)]
	l.pendingMu.Unlock()
	if kept {
		t.Error("refused writes left the key in the overlay")
	}

	releaseOnce()
	if err := <-transfer; err == nil {
		t.Fatal("the held transfer succeeded")
	}
	if nl := g.leader(); nl != l {
		t.Fatalf("leadership moved to %s despite the failed transfer", nl.cfg.NodeID)
	}
	eventually(t, "the transfer to end", func() bool {
		_, err := l.Put(ctx, []byte("probe"), nil, Strong)
		return err == nil
	})
	st, err := l.Put(ctx, key, []byte("v2"), Strong)
	if err != nil || st.Version != 2 {
		t.Fatalf("write after the refused ones: %v %v, want version 2", st, err)
	}
}

// TestGiveBackOnlyTheNewest: a refused write gives its version back only
// while it is the key's newest reservation in the overlay it was made in;
// and the entry goes once nothing the store lacks is left in it.
func TestGiveBackOnlyTheNewest(t *testing.T) {
	r := bareReplica(t)
	key := []byte("k")
	version := func() (uint64, bool) {
		pk := r.overlay[string(key)]
		if pk == nil {
			return 0, false
		}
		return pk.version, true
	}

	// A (version 1) and then B (version 2) reserved; A refused: B's
	// reservation stands.
	pk := &pendingKey{version: 2}
	r.overlay[string(key)] = pk
	r.giveBack(key, pk, 1)
	if v, ok := version(); !ok || v != 2 {
		t.Fatalf("A gave back under B: overlay version %d (%v), want 2", v, ok)
	}
	// B refused too: it gives back its own version. A's stays reserved:
	// its give-back came first and found B above it.
	r.giveBack(key, pk, 2)
	if v, ok := version(); !ok || v != 1 {
		t.Fatalf("B refused: overlay version %d (%v), want 1", v, ok)
	}

	// The overlay was dropped and the key reserved again in a new term:
	// the old write's give-back does not touch the new entry.
	fresh := &pendingKey{version: 1}
	r.overlay[string(key)] = fresh
	r.giveBack(key, pk, 1)
	if v, ok := version(); !ok || v != 1 || r.overlay[string(key)] != fresh {
		t.Fatalf("a dropped entry's give-back changed the new one: version %d (%v)", v, ok)
	}

	// Version 1 applied while 2 was reserved (its retireOverlay kept the
	// entry), then 2 refused: the entry holds nothing the store lacks.
	put := fsm.Put{Key: key, Value: []byte("v"), Stamp: fsm.Stamp{Version: 1, Timestamp: hlc.Timestamp{WallTime: 1}}}
	fresh.version = 2
	(*fsmAdapter)(r).Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: encodeEntry(0, put)})
	if _, ok := version(); !ok {
		t.Fatal("applying version 1 retired the reservation of version 2")
	}
	r.giveBack(key, fresh, 2)
	if v, ok := version(); ok {
		t.Fatalf("after giving back over an applied write the key is still in the overlay at version %d", v)
	}
	if got := r.currentVersion(key); got != 1 {
		t.Fatalf("currentVersion = %d, want the applied 1", got)
	}
}

// TestConfigWithDefaults: zero fields take the package's defaults (and
// raftgroup's for the timing, never hashicorp/raft's), and a bad
// configuration is refused before anything opens, wrapping
// raftgroup.ErrInvalid and naming the field.
func TestConfigWithDefaults(t *testing.T) {
	eng, err := storage.Open(storage.Options{Dir: "/engine", FS: vfs.NewMem(), CacheSize: 1 << 20, MemTableSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	_, trans := raft.NewInmemTransport("")
	base := Config{Transport: trans, Engine: eng, WAL: &wal.WAL{}, Backend: LogBoltDB}

	got, err := base.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	wantRaft, _ := raftgroup.Timing{}.WithDefaults()
	wantSnap := raftgroup.SnapshotPolicy{Threshold: DefaultSnapshotThreshold, Interval: DefaultSnapshotInterval, TrailingLogs: DefaultTrailingLogs}
	if got.Raft != wantRaft || got.SnapshotPolicy != wantSnap || got.OpTimeout != DefaultOpTimeout || got.Logger == nil || got.Clock == nil ||
		got.JournalEntries != DefaultJournalEntries || got.JournalBytes != DefaultJournalBytes {
		t.Fatalf("defaults: Raft %+v, SnapshotPolicy %+v, OpTimeout %v, Logger %v, Clock %v, journal %d records %d bytes",
			got.Raft, got.SnapshotPolicy, got.OpTimeout, got.Logger, got.Clock, got.JournalEntries, got.JournalBytes)
	}
	if got, err := (Config{Transport: trans, Engine: eng, WAL: &wal.WAL{}}).withDefaults(); err != nil || got.Backend != LogWAL {
		t.Fatalf("default backend %q (%v), want %q", got.Backend, err, LogWAL)
	}

	for _, tc := range []struct {
		name  string
		tweak func(*Config)
		want  string
	}{
		{"no transport", func(c *Config) { c.Transport = nil }, "Transport, Engine and WAL are required"},
		{"no engine", func(c *Config) { c.Engine = nil }, "Transport, Engine and WAL are required"},
		{"no WAL", func(c *Config) { c.WAL = nil }, "Transport, Engine and WAL are required"},
		{"negative journal records", func(c *Config) { c.JournalEntries = -1 }, "JournalEntries"},
		{"negative journal bytes", func(c *Config) { c.JournalBytes = -1 }, "JournalBytes"},
		{"bad timing", func(c *Config) { c.Raft.HeartbeatTimeout = time.Millisecond }, "HeartbeatTimeout"},
		{"snapshot interval", func(c *Config) { c.SnapshotPolicy.Interval = time.Millisecond }, "SnapshotPolicy.Interval"},
		{"negative op timeout", func(c *Config) { c.OpTimeout = -time.Second }, "OpTimeout"},
		{"unknown backend", func(c *Config) { c.Backend = "sqlite" }, `Backend "sqlite"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base
			tc.tweak(&c)
			if _, err := c.withDefaults(); !errors.Is(err, raftgroup.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want raftgroup.ErrInvalid naming %q", err, tc.want)
			}
		})
	}
}
