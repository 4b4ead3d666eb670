package node

import (
	"time"

	"github.com/hashicorp/raft"

	"github.com/ringkv/ringkv/cluster"
	"github.com/ringkv/ringkv/ring"
)

// balancePrimaries hands each partition this node leads to the partition's
// preferred primary of the placement, so that primaries — and with them the
// write load — stay spread evenly over nodes after elections moved them.
// Raft's leadership transfer first brings the target up to date, then asks
// it to campaign; writes in flight meanwhile get NotPrimary and are retried
// by clients. A partition whose transfer failed (the target is down or
// lagging) is left alone for a while, so a sick node does not make
// leadership flap.
func (n *Node) balancePrimaries() {
	defer n.watch.Done()
	tick := time.NewTicker(n.cfg.BalanceInterval)
	defer tick.Stop()
	failed := map[ring.PartitionID]time.Time{}
	for {
		select {
		case <-n.stop:
			return
		case <-tick.C:
		}
		view := n.view.Load()
		for _, p := range n.Partitions() {
			r := n.Replica(p)
			pref := string(view.Placement().Primary(p))
			m := view.Member(pref)
			if r == nil || pref == n.cfg.ID || m == nil || m.State != cluster.Up || view.Moving(p) || !r.IsPrimary() || time.Since(failed[p]) < 10*n.cfg.BalanceInterval {
				continue
			}
			err := r.Raft().LeadershipTransferToServer(raft.ServerID(pref), raft.ServerAddress(m.Addr)).Error()
			if err != nil {
				failed[p] = time.Now()
				n.log.Debug("primary balance: transfer failed", "partition", p, "to", pref, "error", err)
				continue
			}
			n.log.Info("primary balance: handed leadership to the preferred primary", "partition", p, "to", pref)
			select {
			case <-n.stop:
				return
			default:
			}
		}
	}
}
