package control

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/ringkv/ringkv/cluster"
	"github.com/ringkv/ringkv/internal/testing/wait"
	"github.com/ringkv/ringkv/ring"
)

// TestBalanceBacksOffAFailedTransfer: the balance loop hands a partition
// this node leads to its preferred primary, and after a failed transfer
// leaves the partition alone for ten intervals, so that a sick preferred
// primary does not make leadership flap.
func TestBalanceBacksOffAFailedTransfer(t *testing.T) {
	view := testView(t)
	asg := view.Placement()
	// a hosts and leads one partition that prefers another primary.
	p, found := ring.PartitionID(0), false
	for q := range ring.PartitionID(8) {
		if view.Hosts("a", q) && asg.Primary(q) != "a" {
			p, found = q, true
			break
		}
	}
	if !found {
		t.Fatal("the placement gives a no partition with another preferred primary")
	}
	const every = 20 * time.Millisecond
	var (
		mu    sync.Mutex
		calls []time.Time
	)
	h := &fakeHost{hosted: []ring.PartitionID{p}, leads: map[ring.PartitionID]bool{p: true},
		transfer: func(q ring.PartitionID, to raft.ServerID) error {
			mu.Lock()
			defer mu.Unlock()
			if q != p || to != raft.ServerID(asg.Primary(p)) {
				t.Errorf("transfer of %d to %s, want %d to %s", q, to, p, asg.Primary(p))
			}
			calls = append(calls, time.Now())
			return errors.New("the preferred primary lags")
		}}
	c := &Controller{cfg: Config{ID: "a", BalanceInterval: every, View: func() *cluster.State { return view }},
		host: h, log: hclog.NewNullLogger(), stop: make(chan struct{})}
	c.wg.Add(1)
	go c.balancePrimaries()
	wait.Until(t, 30*time.Second, "a second transfer attempt", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(calls) >= 2
	})
	c.Stop()
	mu.Lock()
	defer mu.Unlock()
	for i := 1; i < len(calls); i++ {
		if gap := calls[i].Sub(calls[i-1]); gap < 10*every {
			t.Fatalf("transfer retried %v after it failed, want at least %v", gap, 10*every)
		}
	}
}
