package control

import (
	"context"
	"fmt"

	"github.com/ringkv/ringkv/cluster"
	pb "github.com/ringkv/ringkv/proto/ringkvpb"
	"github.com/ringkv/ringkv/ring"
)

// advanceSplit takes the split the cluster wants one step further (see
// cluster/split.go): it records the next split as begun, asks the
// parent's primary for it, and records it as done with the configuration
// the child got, the parent's. A step that fails is taken again next
// round; the primary answers a split already applied at once.
func (c *Controller) advanceSplit(ctx context.Context, view *cluster.State) error {
	if view.Splitting == nil {
		parent, ok := view.WantsSplit()
		if !ok || view.Moving(parent) {
			return nil
		}
		var err error
		if view, err = c.cfg.Meta.Propose(ctx, cluster.Command{Op: cluster.OpBeginSplit, Partition: uint32(parent)}); err != nil {
			return err
		}
		if view.Splitting == nil {
			return nil
		}
	}
	sp := *view.Splitting
	r, err := view.Ring()
	if err != nil {
		return err
	}
	parent := ring.PartitionID(sp.Parent)
	rng := r.Range(parent)
	primary, _, err := c.findPrimary(ctx, view, parent)
	if err != nil {
		return err
	}
	c.log.Info("splitting a partition", "partition", parent, "child", sp.Child, "primary", primary.id)
	resp, err := primary.admin.Reconfigure(ctx, &pb.ReconfigureRequest{
		Partition: sp.Parent, Op: pb.ReconfigureRequest_OP_SPLIT,
		Child: sp.Child, RangeFirst: rng.First, RangeLast: rng.Last,
	})
	if err != nil {
		return fmt.Errorf("partition %d: split: %w", parent, err)
	}
	next, err := c.cfg.Meta.Propose(ctx, cluster.Command{Op: cluster.OpEndSplit, Partition: sp.Parent, Config: serversOf(resp)})
	if err != nil {
		return err
	}
	c.log.Info("partition split", "partition", parent, "child", sp.Child, "partitions", next.Partitions)
	return nil
}
