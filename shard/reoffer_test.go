package shard

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ringkv/ringkv/fsm"
	"github.com/ringkv/ringkv/hlc"
	"github.com/ringkv/ringkv/internal/testing/wait"
)

// TestIsolatedPrimaryReoffersFastWrites is the re-offer guarantee end to
// end. A primary cut off from its group acknowledges fast writes until its
// lease runs out; the new leader overwrites them in the log, and writes one
// of their keys (fast0) again with a newer strong write. Once healed, the
// old primary re-offers them from its journal to the new primary through
// Config.Reoffer: every acknowledged fast write is
// readable with its original stamp, except fast0's, which loses to the
// newer write by the conflict rule. The strong writes before the cut and
// on the new primary are sent again if they meet an election (group.put);
// the isolated primary's fast writes are not.
func TestIsolatedPrimaryReoffersFastWrites(t *testing.T) {
	// A lease long enough for a few acknowledged fast writes on a loaded
	// machine.
	g := newGroup(t, func(c *Config) {
		c.Raft.HeartbeatTimeout = 500 * time.Millisecond
		c.Raft.ElectionTimeout = 500 * time.Millisecond
		c.Raft.LeaderLeaseTimeout = 500 * time.Millisecond
	})
	g.leader()
	ctx := context.Background()
	base, err := g.put(t, []byte("base"), []byte("0"), Strong)
	if err != nil {
		t.Fatal(err)
	}
	old := base.by
	g.isolate(old.cfg.NodeID)

	// Right after the cut, while the lease lasts.
	acked := map[string]fsm.Stamp{}
	for i := range 20 {
		key := fmt.Sprintf("fast%d", i)
		st, err := old.Put(ctx, []byte(key), []byte("v"), Fast)
		if err != nil {
			if !errors.Is(err, ErrNotPrimary) && !errors.Is(err, ErrNoQuorum) {
				t.Fatalf("fast write after step-down: %v", err)
			}
			break
		}
		acked[key] = st
	}
	if len(acked) < 2 {
		t.Fatalf("the isolated primary acknowledged %d fast writes before stepping down; the test needs 2", len(acked))
	}
	t.Logf("the isolated primary acknowledged %d fast writes", len(acked))
	eventually(t, "the isolated primary to step down", func() bool { return !old.IsPrimary() })

	nl := g.leader(old.cfg.NodeID)
	for key := range acked {
		if _, err := nl.Get(ctx, []byte(key), Quorum); !errors.Is(err, ErrNotFound) {
			t.Fatalf("%s on the new primary before healing: %v, want ErrNotFound", key, err)
		}
	}
	// Not on the isolated old primary: group.put skips a replica cut off.
	w, err := g.put(t, []byte("fast0"), []byte("newer"), Strong)
	if err != nil {
		t.Fatal(err)
	}
	newer := w.stamp
	if newer.Compare(acked["fast0"]) <= 0 {
		t.Fatalf("the new write %v is not newer than the cut one %v", newer, acked["fast0"])
	}

	g.connectAll()
	eventually(t, "the old primary to re-offer its fast writes", func() bool {
		return old.Stats().Reoffered.Load() >= uint64(len(acked))
	})
	eventually(t, "the old primary's journal to empty", func() bool {
		n, _ := old.journal.depth()
		return n == 0
	})
	for key, st := range acked {
		want := st
		if key == "fast0" {
			want = newer
		}
		g.waitStamp(key, want)
	}
	if lost := g.sumStats(func(s *Stats) uint64 { return s.ReofferLost.Load() }); lost == 0 {
		t.Error("the re-offer of fast0 did not lose to the newer write (ReofferLost is 0)")
	}
	g.converged()
}

// TestJournalSurvivesRestart: the journal is in the WAL, so a replica
// restarted before delivering its records finds them again, as records of
// an ended epoch, and delivers them then.
func TestJournalSurvivesRestart(t *testing.T) {
	g := newGroup(t, nil)
	l := g.leader()
	id := g.followers(l)[0].cfg.NodeID
	g.holdReoffers.Store(true)
	entries, stamps := fastEntries("restart", 3)
	journalAs(t, g.reps[id], entries)

	g.stop(id)
	g.start(id)
	if got := reofferRecords(t, g.reps[id]); !equalEntries(got, entries) {
		t.Fatalf("restarted replica re-offers %d records, want the %d journaled", len(got), len(entries))
	}
	g.holdReoffers.Store(false)
	for i, st := range stamps {
		g.waitStamp(fmt.Sprintf("restart%d", i), st)
	}
	eventually(t, "the restarted replica's journal to empty in the WAL", func() bool {
		return g.wals[id].LastIndex(JournalStreamOf(g.part)) == 0
	})
}

// TestReofferDeliveredToRemotePrimary: a replica that does not lead hands
// its journal's records to the primary through Config.Reoffer.
func TestReofferDeliveredToRemotePrimary(t *testing.T) {
	g := newGroup(t, nil)
	l := g.leader()
	f := g.follower(l)
	entries, stamps := fastEntries("remote", 3)
	journalAs(t, f, entries)
	for i, st := range stamps {
		g.waitStamp(fmt.Sprintf("remote%d", i), st)
	}
	eventually(t, "the follower's re-offers to end", func() bool { return len(reofferRecords(t, f)) == 0 })
	if n := g.reofferedVia[f.cfg.NodeID].Load(); n != uint64(len(entries)) {
		t.Fatalf("the follower delivered %d re-offers through Config.Reoffer, want %d", n, len(entries))
	}
}

// follower is a follower of l, once it knows that l leads.
func (g *group) follower(l *Replica) *Replica {
	g.t.Helper()
	f := g.followers(l)[0]
	eventually(g.t, "the follower to know the primary", func() bool {
		id, _ := f.Leader()
		return id == l.cfg.NodeID
	})
	return f
}

// fastEntries are n fast Puts of the fresh keys prefix0, prefix1, ... as a
// primary logs them, and their stamps.
func fastEntries(prefix string, n int) (entries [][]byte, stamps []fsm.Stamp) {
	now := time.Now().UnixNano()
	for i := range n {
		st := fsm.Stamp{Version: 1, Timestamp: hlc.Timestamp{WallTime: now + int64(i)}}
		put := fsm.Put{RequestID: uint64(i + 1), Key: []byte(fmt.Sprint(prefix, i)), Value: []byte("v"), Stamp: st}
		entries = append(entries, encodeEntry(flagFast, put))
		stamps = append(stamps, st)
	}
	return entries, stamps
}

// journalAs puts entries in r's journal as the records of an ended epoch,
// as a primary that lost leadership before applying them leaves them, and
// wakes the re-offer path.
func journalAs(t *testing.T, r *Replica, entries [][]byte) {
	t.Helper()
	j := r.journal
	j.mu.Lock()
	var dones []<-chan error
	for _, e := range entries {
		_, done := j.appendLocked(e)
		dones = append(dones, done)
	}
	j.epoch++
	j.reofferTo = j.next - 1
	j.mu.Unlock()
	for _, done := range dones {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	r.signalReoffers()
}

// reofferRecords are the records r's re-offer path has yet to deliver.
func reofferRecords(t *testing.T, r *Replica) [][]byte {
	t.Helper()
	j := r.journal
	j.mu.Lock()
	lo, hi := j.first, j.reofferTo
	j.mu.Unlock()
	var recs [][]byte
	if lo > hi {
		return nil
	}
	if err := j.w.Range(j.stream, lo, hi, func(_ uint64, data []byte) bool {
		recs = append(recs, data)
		return true
	}); err != nil {
		t.Fatal(err)
	}
	return recs
}

func equalEntries(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

// waitStamp waits until a quorum read on the group's primary finds key with
// stamp want.
func (g *group) waitStamp(key string, want fsm.Stamp) {
	g.t.Helper()
	wait.For(g.t, waitFor, key+" at "+want.String(), func() (bool, string) {
		for _, id := range g.ids {
			if r := g.reps[id]; !g.closed[id] && r.IsPrimary() {
				it, err := r.Get(context.Background(), []byte(key), Quorum)
				if err != nil {
					return false, err.Error()
				}
				return it.Stamp == want, "found " + it.Stamp.String()
			}
		}
		return false, "no primary"
	})
}

// sumStats adds up one counter over the running replicas.
func (g *group) sumStats(counter func(*Stats) uint64) uint64 {
	var n uint64
	for _, id := range g.ids {
		if !g.closed[id] {
			n += counter(g.reps[id].Stats())
		}
	}
	return n
}

// TestReofferDropsRefusedEntries: a record no primary can take is dropped,
// counted, and does not hold up the records behind it, whether this replica
// finds it out itself (it does not decode, or breaks the limits) or the
// remote primary answers so; an entry whose delivery fails for a while is
// offered again until it is delivered.
func TestReofferDropsRefusedEntries(t *testing.T) {
	var calls atomic.Int32
	g := newGroup(t, func(c *Config) {
		next := c.Reoffer
		c.Reoffer = func(ctx context.Context, primary raft.ServerAddress, partition uint32, entry []byte) error {
			_, cmd, err := decodeEntry(entry)
			if err != nil {
				return err
			}
			switch n := calls.Add(1); {
			case n <= 2:
				return &NoQuorumError{Partition: partition, Op: "re-offer", Cause: context.DeadlineExceeded}
			case writesKey(cmd, "refused"):
				// What a primary with smaller limits would answer.
				return fmt.Errorf("primary says: %w", &fsm.LimitError{Field: "key", Size: 7, Limit: 6, Err: fsm.ErrKeyTooLarge})
			}
			return next(ctx, primary, partition, entry)
		}
	})
	l := g.leader()
	good, stamps := fastEntries("good", 4)
	long := bytes.Repeat([]byte("k"), fsm.DefaultMaxKeySize+1)
	tooLong := encodeEntry(flagFast, fsm.Put{Key: long, Value: []byte("v"), Stamp: stamps[0]})
	malformed := []byte{flagFast, 0xde, 0xad}

	// On the primary itself, which finds both bad entries out.
	journalAs(t, l, [][]byte{malformed, good[0], tooLong, good[1]})
	g.waitStamp("good0", stamps[0])
	g.waitStamp("good1", stamps[1])
	eventually(t, "the primary's re-offers to end", func() bool { return len(reofferRecords(t, l)) == 0 })
	if n := l.Stats().ReofferDropped.Load(); n != 2 {
		t.Errorf("the primary dropped %d re-offers, want 2", n)
	}

	// Through Config.Reoffer: the first two deliveries of good2 and
	// "refused", as one entry, fail and are retried; the primary refuses
	// the third for good, and the follower offers good2 alone, then
	// "refused" alone, which is dropped; tooLong is dropped before it is
	// offered.
	f := g.follower(l)
	refused := encodeEntry(flagFast, fsm.Put{Key: []byte("refused"), Value: []byte("v"), Stamp: stamps[0]})
	journalAs(t, f, [][]byte{good[2], refused, tooLong, good[3]})
	g.waitStamp("good2", stamps[2])
	g.waitStamp("good3", stamps[3])
	eventually(t, "the follower's re-offers to end", func() bool { return len(reofferRecords(t, f)) == 0 })
	if n := f.Stats().ReofferDropped.Load(); n != 2 {
		t.Errorf("the follower dropped %d re-offers, want 2", n)
	}
	if n := calls.Load(); n != 6 {
		t.Errorf("Config.Reoffer called %d times, want 6: good2 with refused three times, good2, refused and good3 once", n)
	}
	if _, err := l.Get(context.Background(), []byte("refused"), Quorum); !errors.Is(err, ErrNotFound) {
		t.Errorf("the refused entry: %v, want ErrNotFound", err)
	}
}

// TestReofferReportsItsOutcome: Reoffer refuses an entry that does not
// decode or breaks the limits before it reaches the log, and otherwise
// answers with what applying the entry did: a write that wins, is already
// applied or loses the conflict rule is delivered (a loss is counted), and
// an entry Apply refuses is an error, not a delivery.
func TestReofferReportsItsOutcome(t *testing.T) {
	g := newGroup(t, nil)
	l := g.leader()
	ctx := context.Background()
	old := fsm.Stamp{Version: 1, Timestamp: hlc.Timestamp{WallTime: 1}}
	long := bytes.Repeat([]byte("k"), fsm.DefaultMaxKeySize+1)
	huge := make([]byte, fsm.DefaultMaxValueSize+1)
	fast := func(w fsm.Write) []byte { return encodeEntry(flagFast, w) }

	last := l.Raft().LastIndex()
	for _, tc := range []struct {
		name  string
		entry []byte
		want  error
	}{
		{"empty", nil, fsm.ErrMalformedCommand},
		{"not a command", []byte{flagFast, 0xde, 0xad}, fsm.ErrMalformedCommand},
		{"empty key", fast(fsm.Put{Value: []byte("v"), Stamp: old}), fsm.ErrEmptyKey},
		{"key too large", fast(fsm.Delete{Key: long, Stamp: old}), fsm.ErrKeyTooLarge},
		{"value too large", fast(fsm.Put{Key: []byte("k"), Value: huge, Stamp: old}), fsm.ErrValueTooLarge},
		{"a bad write in a batch", encodeEntry(flagFast, fsm.Batch{Writes: []fsm.Write{
			fsm.Put{Key: []byte("k"), Value: []byte("v"), Stamp: old},
			fsm.Put{Key: long, Value: []byte("v"), Stamp: old},
		}}), fsm.ErrKeyTooLarge},
	} {
		if err := l.Reoffer(ctx, tc.entry); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	if got := l.Raft().LastIndex(); got != last {
		t.Errorf("refused re-offers reached the log: last index %d → %d", last, got)
	}

	// Won, then already applied: delivered, nothing lost.
	won := fast(fsm.Put{RequestID: 1, Key: []byte("won"), Value: []byte("v"), Stamp: old})
	for range 2 {
		if err := l.Reoffer(ctx, won); err != nil {
			t.Fatal(err)
		}
	}
	if it, err := l.Get(ctx, []byte("won"), Quorum); err != nil || it.Stamp != old {
		t.Fatalf("won: %v %v, want %v", it.Stamp, err, old)
	}
	// Lost to a newer write: delivered, and counted.
	newer, err := l.Put(ctx, []byte("lost"), []byte("newer"), Strong)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Reoffer(ctx, fast(fsm.Put{RequestID: 2, Key: []byte("lost"), Value: []byte("v"), Stamp: old})); err != nil {
		t.Fatal(err)
	}
	if n := l.Stats().ReofferLost.Load(); n != 1 {
		t.Errorf("ReofferLost = %d, want 1", n)
	}
	if it, err := l.Get(ctx, []byte("lost"), Quorum); err != nil || it.Stamp != newer {
		t.Fatalf("lost: %v %v, want the newer %v", it.Stamp, err, newer)
	}

	// Refused by Apply. Apply checks with the limits its store was opened
	// with, the same as Reoffer's own check unless they differ, as they do
	// here once the primary's are raised after Open.
	l.cfg.Limits.MaxKeySize = 2 * fsm.DefaultMaxKeySize
	err = l.Reoffer(ctx, fast(fsm.Put{RequestID: 3, Key: long, Value: []byte("v"), Stamp: old}))
	l.cfg.Limits.MaxKeySize = 0
	var le *fsm.LimitError
	if !errors.As(err, &le) || !errors.Is(err, fsm.ErrKeyTooLarge) {
		t.Fatalf("an entry Apply refused: %v, want its *fsm.LimitError", err)
	}
}

// TestCloseStopsReofferRound: closing the replica does not wait for its
// re-offers to end. The round in progress stops after the delivery in
// flight (the first maxRunWrites records), and the records left stay in
// the journal for the next start. The test closes
// closeCh alone, as Close does first, and shuts raft down itself after: a
// raft shut down forgets the leader, which ends a round too, and would hide
// a round that does not look at closeCh.
func TestCloseStopsReofferRound(t *testing.T) {
	var calls atomic.Int32
	started, release := make(chan struct{}), make(chan struct{})
	g := newGroup(t, func(c *Config) {
		next := c.Reoffer
		c.Reoffer = func(ctx context.Context, primary raft.ServerAddress, partition uint32, entry []byte) error {
			if calls.Add(1) == 1 {
				// The first delivery is in flight when the replica closes.
				close(started)
				<-release
			}
			return next(ctx, primary, partition, entry)
		}
	})
	l := g.leader()
	f := g.follower(l)
	entries, _ := fastEntries("close", maxRunWrites+5)
	journalAs(t, f, entries)
	within(t, started, "the first delivery to start")

	close(f.closeCh)
	close(release)
	stopped := make(chan struct{})
	go func() {
		f.wg.Wait()
		close(stopped)
	}()
	within(t, stopped, "the replica's goroutines to end")
	if err := f.raft.Shutdown().Error(); err != nil {
		t.Fatal(err)
	}

	if n := calls.Load(); n != 1 {
		t.Errorf("%d deliveries, want the one in flight when the replica closed", n)
	}
	if got := reofferRecords(t, f); !equalEntries(got, entries[maxRunWrites:]) {
		t.Errorf("%d records left after closing, want the %d not delivered", len(got), len(entries)-maxRunWrites)
	}
	w, stream := g.wals[f.cfg.NodeID], JournalStreamOf(g.part)
	if first, last := w.FirstIndex(stream), w.LastIndex(stream); last-first+1 < 5 {
		t.Errorf("the WAL keeps records %d-%d of the journal, want at least the 5 not delivered", first, last)
	}
}

// within waits until ch is closed, failing t after waitFor.
func within(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(waitFor):
		t.Fatalf("timed out after %v waiting for %s", waitFor, what)
	}
}

// writesKey reports whether cmd, a write or a Batch, writes key.
func writesKey(cmd fsm.Command, key string) bool {
	for _, w := range writesIn(cmd) {
		if k, _ := writeOf(w); string(k) == key {
			return true
		}
	}
	return false
}
