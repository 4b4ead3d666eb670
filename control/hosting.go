package control

import (
	"errors"
	"time"

	"github.com/ringkv/ringkv/cluster"
	"github.com/ringkv/ringkv/ring"
)

// hostReplicas keeps the node's replicas in line with its view: it opens
// those the view places here and drops the others.
func (c *Controller) hostReplicas() {
	c.repeat(time.Second, c.cfg.ViewChanged, func() bool {
		c.reconcile(c.cfg.View())
		return true
	})
}

// reconcile opens the replicas view places here and this node lacks, and
// drops those it hosts and view does not place here.
func (c *Controller) reconcile(view *cluster.State) {
	hosted := map[ring.PartitionID]bool{}
	for _, p := range c.host.Partitions() {
		hosted[p] = true
	}
	for p := range ring.PartitionID(view.Partitions) {
		switch want := view.Hosts(c.cfg.ID, p); {
		case want && !hosted[p]:
			if err := c.host.OpenReplica(p); errors.Is(err, ErrDeferred) {
				c.log.Debug("opening a replica placed on this node", "partition", p, "error", err)
			} else if err != nil {
				c.log.Error("opening a replica placed on this node", "partition", p, "error", err)
			} else {
				c.log.Info("opened a replica placed on this node", "partition", p, "epoch", view.Epoch)
			}
		case !want && hosted[p]:
			if err := c.host.DropReplica(p); err != nil {
				c.log.Error("dropping a replica moved off this node", "partition", p, "error", err)
			} else {
				c.log.Info("dropped a replica moved off this node", "partition", p, "epoch", view.Epoch)
			}
		}
	}
}
