package control

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
func (c *Controller) balancePrimaries() {
	failed := map[ring.PartitionID]time.Time{}
	c.repeat(c.cfg.BalanceInterval, nil, func() bool {
		view := c.cfg.View()
		for _, p := range c.host.Partitions() {
			if int(p) >= view.Partitions {
				continue // a split's child, not in the map yet
			}
			pref := string(view.Placement().Primary(p))
			m := view.Member(pref)
			if pref == c.cfg.ID || m == nil || m.State != cluster.Up || view.Moving(p) || !c.host.Leads(p) || time.Since(failed[p]) < 10*c.cfg.BalanceInterval {
				continue
			}
			if err := c.host.Transfer(p, raft.ServerID(pref), raft.ServerAddress(m.Addr)); err != nil {
				failed[p] = time.Now()
				c.log.Debug("primary balance: transfer failed", "partition", p, "to", pref, "error", err)
				continue
			}
			c.log.Info("primary balance: handed leadership to the preferred primary", "partition", p, "to", pref)
			// A transfer takes up to an election timeout: Stop does not
			// wait for the rest of the round.
			select {
			case <-c.stop:
				return false
			default:
			}
		}
		return true
	})
}
