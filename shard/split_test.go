package shard

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ringkv/ringkv/fsm"
	"github.com/ringkv/ringkv/raftgroup"
	"github.com/ringkv/ringkv/ring"
)

const childPart = 8

var (
	lowerHalf = ring.HashRange{First: 0, Last: 1<<63 - 1}
	upperHalf = ring.HashRange{First: 1 << 63, Last: ^uint64(0)}
)

// childGroup is the group of the partition a split of g creates: on g's
// nodes, WALs and engines, with a transport of its own, and no bootstrap:
// its replicas start from the split's genesis, or empty.
func childGroup(g *group) *group {
	c := unstartedGroup(g.t, g.dir, childPart, g.tweak)
	c.shared, c.wals, c.engs = true, g.wals, g.engs
	for _, id := range c.ids {
		// Campaign sends the replica's own raft a TimeoutNow.
		c.trans[id].Connect(raft.ServerAddress(id), c.trans[id])
	}
	return c
}

func voters(g *group) []raft.Server {
	var out []raft.Server
	for _, id := range g.ids {
		out = append(out, raft.Server{Suffrage: raft.Voter, ID: id, Address: raft.ServerAddress(id)})
	}
	return out
}

// keyIn returns the i-th key ("k<i>-<n>") whose hash falls in r.
func keyIn(r ring.HashRange, i int) []byte {
	for n := 0; ; n++ {
		if k := fmt.Appendf(nil, "k%d-%d", i, n); r.Contains(ring.Hash(k)) {
			return k
		}
	}
}

// splitOutcome is what one writer saw of its writes during a split.
type splitOutcome struct {
	key   []byte
	stamp fsm.Stamp // of the last acknowledged write
}

// TestSplitUnderWriters splits a partition while strong and fast writers
// write both halves. Every write is acknowledged, refused with a RangeError
// (nothing written: the writer sends it to the child), or unknown; every
// acknowledged write reads back from the partition that owns its key, with
// its stamp; each replica of the child holds the same state, derived where
// it applied the split.
func TestSplitUnderWriters(t *testing.T) {
	var c *group
	var cmu sync.Mutex
	// childUp is set once every replica of the child is open: the group
	// harness is not safe for starting replicas while others use it.
	var childUp atomic.Bool
	g := newGroup(t, func(cfg *Config) {
		// What the node does through its map: the child's primary takes
		// the re-offered writes of the keys the split handed it.
		cfg.Rehome = func(ctx context.Context, _, entry []byte) error {
			cmu.Lock()
			defer cmu.Unlock()
			if !childUp.Load() || c.primary() == nil {
				return errNoPrimary
			}
			return c.primary().Reoffer(ctx, entry)
		}
	})
	for i := range 200 {
		if _, err := g.put(t, keyIn(ring.HashRange{Last: ^uint64(0)}, i), []byte("before"), Strong); err != nil {
			t.Fatal(err)
		}
	}
	cmu.Lock()
	c = childGroup(g)
	cmu.Unlock()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	acked := map[string]fsm.Stamp{}
	ackedBy := map[string]string{}
	var refused, moved int
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			mode := []WriteMode{Strong, Fast}[w%2]
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				key := keyIn(ring.HashRange{Last: ^uint64(0)}, 1000*w+rng.IntN(50))
				on := g
				if upperHalf.Contains(ring.Hash(key)) && childUp.Load() && c.primary() != nil {
					on = c
				}
				st, err := onPrimaryOnce(on, key, mode)
				var re *fsm.RangeError
				switch {
				case err == nil:
					mu.Lock()
					if st.Compare(acked[string(key)]) > 0 {
						acked[string(key)] = st
						ackedBy[string(key)] = fmt.Sprintf("child=%v mode=%v upper=%v", on == c, mode, upperHalf.Contains(ring.Hash(key)))
					}
					if on == c {
						moved++
					}
					mu.Unlock()
				case errors.As(err, &re):
					mu.Lock()
					refused++
					mu.Unlock()
				}
			}
		}()
	}
	eventually(t, "writers under way", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(acked) >= 20
	})
	p := g.leader()
	if err := p.Split(context.Background(), fsm.FullRange, childPart, voters(g)); err != nil {
		t.Fatal(err)
	}
	for _, id := range g.ids {
		r := g.reps[id]
		eventually(t, string(id)+" to apply the split", func() bool { return r.Store().HashRange() == lowerHalf })
		c.start(id)
	}
	childUp.Store(true)
	cl := c.leader()
	eventually(t, "writes acknowledged by the child", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return moved >= 20
	})
	close(stop)
	wg.Wait()
	// A fast write is acknowledged before it commits, so quorum reads see
	// it once every replica applied its log; one acknowledged by a primary
	// that lost leadership before its entry committed reads back once
	// re-offered.
	var reoffered uint64
	for _, gr := range []*group{g, c} {
		eventually(t, "every replica to apply its whole log", func() bool {
			var last uint64
			for _, id := range gr.ids {
				last = max(last, gr.reps[id].raft.LastIndex())
			}
			for _, id := range gr.ids {
				if gr.reps[id].AppliedIndex() < last {
					return false
				}
			}
			return true
		})
		for _, id := range gr.ids {
			r := gr.reps[id]
			eventually(t, "the journals to empty", func() bool {
				n, _ := r.journal.depth()
				return n == 0
			})
			reoffered += r.Stats().Reoffered.Load()
		}
	}
	t.Logf("%d keys acknowledged, %d writes refused by the parent for their range, %d acknowledged by the child, %d re-offered",
		len(acked), refused, moved, reoffered)

	if err := p.Split(context.Background(), fsm.FullRange, childPart, voters(g)); err != nil {
		t.Fatalf("the same split again: %v, want nil (applied already)", err)
	}
	if err := p.Split(context.Background(), upperHalf, childPart+1, voters(g)); !errors.Is(err, fsm.ErrSplitMismatch) {
		t.Fatalf("a split of a range the partition does not own: %v", err)
	}
	if cl.Store().HashRange() != upperHalf {
		t.Fatalf("the child owns %v", cl.Store().HashRange())
	}
	for key, st := range acked {
		owner := g
		if upperHalf.Contains(ring.Hash([]byte(key))) {
			owner = c
		}
		it, _, err := owner.get(t, []byte(key), Quorum)
		if err != nil || it.Stamp.Compare(st) < 0 {
			t.Fatalf("%s: read %v, %v; acknowledged %v (%s)", key, it.Stamp, err, st, ackedBy[key])
		}
		other := map[*group]*group{g: c, c: g}[owner]
		var re *fsm.RangeError
		if _, _, err := other.get(t, []byte(key), Local); !errors.As(err, &re) {
			t.Fatalf("%s read from the partition that does not own it: %v", key, err)
		}
	}
	g.converged()
	c.converged()
}

// onPrimaryOnce sends one write of key to g's primary: the error is the
// write's own (NotPrimary, NoQuorum, RangeError) or errNoPrimary.
func onPrimaryOnce(g *group, key []byte, mode WriteMode) (fsm.Stamp, error) {
	r := g.primary()
	if r == nil {
		return fsm.Stamp{}, errNoPrimary
	}
	return r.Put(context.Background(), key, []byte("during"), mode)
}

// A replica of the child whose node caught up with the parent by snapshot,
// past the split, has no genesis: it starts empty and gets the child's
// state from the child's leader, as a snapshot, since no log holds the
// child's first entry.
func TestChildReplicaWithoutGenesisCatchesUpBySnapshot(t *testing.T) {
	g := newGroup(t, func(c *Config) {
		c.SnapshotPolicy = raftgroup.SnapshotPolicy{Threshold: 64, TrailingLogs: 32, Interval: 50 * time.Millisecond}
	})
	for i := range 300 {
		if _, err := g.put(t, keyIn(ring.HashRange{Last: ^uint64(0)}, i), []byte("v"), Strong); err != nil {
			t.Fatal(err)
		}
	}
	l := g.leader()
	downID := g.followers(l)[0].cfg.NodeID
	g.stop(downID)
	c := childGroup(g)
	if err := g.leader().Split(context.Background(), fsm.FullRange, childPart, voters(g)); err != nil {
		t.Fatal(err)
	}
	for _, id := range g.ids {
		if id != downID {
			r := g.reps[id]
			eventually(t, string(id)+" to apply the split", func() bool { return r.Store().HashRange() == lowerHalf })
			c.start(id)
		}
	}
	for i := range 300 {
		if _, err := g.put(t, keyIn(lowerHalf, 1000+i), []byte("after"), Strong); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range g.ids {
		if id == downID {
			continue
		}
		r := g.reps[id]
		eventually(t, string(id)+" to compact the parent's log past the split", func() bool {
			return g.wals[id].FirstIndex(StreamOf(7)) > r.Store().RangeSince()
		})
	}
	// The in-memory transport of a stopped replica keeps the RPCs sent to
	// it, which would hand the split entry to its next start: a network
	// delivers no such old message here.
	_, g.trans[downID] = raft.NewInmemTransport(raft.ServerAddress(downID))
	g.connectAll()
	g.start(downID)
	g.converged()
	if n := g.reps[downID].Stats().SnapshotsInstalled.Load(); n == 0 {
		t.Fatal("the parent's replica caught up without a snapshot: the test no longer covers a node that never applied the split")
	}
	c.start(downID)
	c.converged()
	if n := c.reps[downID].Stats().SnapshotsInstalled.Load(); n == 0 {
		t.Fatal("the child's empty replica caught up without a snapshot")
	}
	if got, want := c.reps[downID].Store().Len(), c.leader().Store().Len(); got != want || got == 0 {
		t.Fatalf("the child's late replica holds %d keys, its leader %d", got, want)
	}
}

// The replica that led the parent stands for election in the child at
// once (Campaign) and wins it, where raft's own first election waits a
// heartbeat timeout or two.
func TestCampaignWinsTheChildsFirstElection(t *testing.T) {
	g := newGroup(t, nil)
	p := g.leader()
	if err := p.Split(context.Background(), fsm.FullRange, childPart, voters(g)); err != nil {
		t.Fatal(err)
	}
	c := childGroup(g)
	for _, id := range g.ids {
		r := g.reps[id]
		eventually(t, string(id)+" to apply the split", func() bool { return r.Store().HashRange() == lowerHalf })
	}
	for _, id := range g.ids {
		c.start(id)
	}
	if err := c.reps[p.cfg.NodeID].Campaign(); err != nil {
		t.Fatal(err)
	}
	if l := c.leader(); l.cfg.NodeID != p.cfg.NodeID {
		t.Fatalf("the child's first leader is %s, not %s, which campaigned", l.cfg.NodeID, p.cfg.NodeID)
	}
}
