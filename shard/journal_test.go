package shard

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ringkv/ringkv/fsm"
)

// TestFastThenStrongKeepOrder: a fast write followed by a strong write of
// the same key from one client is never proposed in the other order, under
// load from many such clients: in the primary's log, every key's fast
// write sits at a lower index than its strong write, whether the strong
// write queued behind the fast one or found the queue empty.
func TestFastThenStrongKeepOrder(t *testing.T) {
	g := newGroup(t, nil)
	l := g.leader()
	ctx := context.Background()
	type pair struct{ fast, strong fsm.Stamp }
	var mu sync.Mutex
	pairs := map[string]pair{}
	var wg sync.WaitGroup
	for c := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 40 {
				key := fmt.Sprintf("c%d-%d", c, i)
				f, err := l.Put(ctx, []byte(key), []byte("fast"), Fast)
				if err != nil {
					t.Error(err)
					return
				}
				s, err := l.Put(ctx, []byte(key), []byte("strong"), Strong)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				pairs[key] = pair{f, s}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}

	at := map[string]map[fsm.Stamp]uint64{} // key → stamp → log index
	last := l.raft.LastIndex()
	for i := uint64(1); i <= last; i++ {
		var e raft.Log
		if err := l.logs.GetLog(i, &e); err != nil || e.Type != raft.LogCommand {
			continue
		}
		_, cmd, err := decodeEntry(e.Data)
		if err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		for _, w := range writesIn(cmd) {
			key, st := writeOf(w)
			if at[string(key)] == nil {
				at[string(key)] = map[fsm.Stamp]uint64{}
			}
			at[string(key)][st] = i
		}
	}
	batched := 0
	for key, p := range pairs {
		fi, fok := at[key][p.fast]
		si, sok := at[key][p.strong]
		switch {
		case !fok || !sok:
			t.Fatalf("%s: fast write at %d (found %v), strong at %d (found %v)", key, fi, fok, si, sok)
		case fi >= si:
			t.Errorf("%s: fast write %v at index %d, the strong write after it %v at %d", key, p.fast, fi, p.strong, si)
		case p.strong.Version != p.fast.Version+1:
			t.Errorf("%s: versions %d then %d, want consecutive", key, p.fast.Version, p.strong.Version)
		}
		if si == fi+1 {
			batched++
		}
	}
	t.Logf("%d keys; %d strong writes right after their fast write's entry", len(pairs), batched)
}

// TestJournalBackpressure: a primary whose entries cannot commit (cut off
// from its followers, its lease long) acknowledges fast writes until its
// journal is full; the next one waits for room and fails with a
// *JournalFullError naming the partition once its deadline passes, having
// written nothing. Once the primary is healed, what it acknowledged is
// applied, the journal empties and fast writes are taken again.
func TestJournalBackpressure(t *testing.T) {
	const limit = 5
	g := newGroup(t, func(c *Config) {
		c.JournalEntries = limit
		c.Raft.HeartbeatTimeout = 3 * time.Second
		c.Raft.ElectionTimeout = 3 * time.Second
		c.Raft.LeaderLeaseTimeout = 3 * time.Second
	})
	l := g.cutOffPrimary()
	ctx := context.Background()
	acked := map[string]fsm.Stamp{}
	for i := range limit {
		key := fmt.Sprint("bp", i)
		st, err := l.Put(ctx, []byte(key), []byte("v"), Fast)
		if err != nil {
			t.Fatalf("fast write %d of %d: %v", i+1, limit, err)
		}
		acked[key] = st
	}
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	_, err := l.Put(short, []byte("refused"), []byte("v"), Fast)
	var full *JournalFullError
	if !errors.As(err, &full) || !errors.Is(err, ErrJournalFull) || full.Partition != g.part || full.Records != limit {
		t.Fatalf("fast write into a full journal: %v, want a *JournalFullError of partition %d with %d records", err, g.part, limit)
	}
	if n := l.Stats().JournalRecords.Load(); n != limit {
		t.Errorf("JournalRecords = %d, want %d", n, limit)
	}

	g.connectAll()
	for key, st := range acked {
		g.waitStamp(key, st)
	}
	eventually(t, "the journal to empty", func() bool { return l.Stats().JournalRecords.Load() == 0 })
	nl := g.leader()
	if _, err := nl.Put(ctx, []byte("after"), []byte("v"), Fast); err != nil {
		t.Fatalf("fast write once replication caught up: %v", err)
	}
	if _, err := nl.Get(ctx, []byte("refused"), Quorum); !errors.Is(err, ErrNotFound) {
		t.Errorf("the refused write: %v, want ErrNotFound", err)
	}
}

// TestFastWriteDuringTransfer: during a leadership transfer raft refuses
// the primary's entries, but a fast write is acknowledged from the
// journal; its refused entry ends the journal's epoch and the write is
// re-offered, so it is applied whichever way the transfer ends (here it
// fails and the primary stays).
func TestFastWriteDuringTransfer(t *testing.T) {
	g, entered, releaseOnce := heldTransferGroup(t)
	l := g.leader()
	ctx := context.Background()
	transfer := make(chan error, 1)
	go func() { transfer <- l.TransferLeadership() }()
	within(t, entered, "the transfer to send TimeoutNow")
	st, err := l.Put(ctx, []byte("during"), []byte("v"), Fast)
	if err != nil {
		t.Fatalf("fast write during the transfer: %v", err)
	}
	releaseOnce()
	<-transfer
	g.waitStamp("during", st)
	eventually(t, "the journal to empty", func() bool { return l.Stats().JournalRecords.Load() == 0 })
}

// TestPrimaryStoppedWithDeepJournal: a primary cut off from its followers
// acknowledges fast writes that cannot commit, then stops with all of them
// in its journal; the others elect a new primary and take writes. When the
// old primary starts again it re-offers its journal: every acknowledged
// write is there, and the replicas converge. (The chaos campaign and
// TestKill9DuringDeepJournal kill -9 a primary with its journal deep.)
func TestPrimaryStoppedWithDeepJournal(t *testing.T) {
	g := newGroup(t, func(c *Config) {
		c.Raft.HeartbeatTimeout = 2 * time.Second
		c.Raft.ElectionTimeout = 2 * time.Second
		c.Raft.LeaderLeaseTimeout = 2 * time.Second
	})
	l := g.cutOffPrimary()
	ctx := context.Background()
	acked := map[string]fsm.Stamp{}
	for i := range 200 {
		key := fmt.Sprint("deep", i)
		st, err := l.Put(ctx, []byte(key), []byte("v"), Fast)
		if err != nil {
			break // the lease ran out
		}
		acked[key] = st
	}
	if len(acked) < 20 {
		t.Fatalf("the cut-off primary acknowledged %d fast writes; the test needs 20", len(acked))
	}
	id := l.cfg.NodeID
	g.stop(id)
	g.connectAll()
	nl := g.leader(id)
	if _, err := nl.Put(ctx, []byte("meanwhile"), []byte("v"), Strong); err != nil {
		t.Fatal(err)
	}
	g.start(id)
	for key, st := range acked {
		g.waitStamp(key, st)
	}
	eventually(t, "the restarted replica's journal to empty", func() bool { return g.reps[id].Stats().JournalRecords.Load() == 0 })
	g.converged()
}

// cutOffPrimary has the group's primary commit a write, so that it is
// ready, then cuts it off from the others, and returns it: until its lease
// runs out it acknowledges fast writes that cannot commit.
func (g *group) cutOffPrimary() *Replica {
	g.t.Helper()
	l := g.leader()
	if _, err := l.Put(context.Background(), []byte("warm"), []byte("v"), Strong); err != nil {
		g.t.Fatal(err)
	}
	g.isolate(l.cfg.NodeID)
	return l
}
