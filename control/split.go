package control

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

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
		parent, ok := view.WantsSplit(cluster.FittedPartitions(view.Placeable(), c.cfg.PartitionsPerNode))
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

// load is what a partition's primary reported at one time.
type load struct {
	at     time.Time
	bytes  uint64
	commit uint64
}

// watchLoad runs on every node and acts while it leads the metadata group:
// every SplitCheckInterval it reads each member's Status and, if a
// partition's primary reports more than SplitSize bytes on disk or more
// than SplitWriteRate committed entries a second since the last sample,
// records a split target one above the count (unless a split is pending
// already). Linear hashing splits in a fixed order, not the busiest
// partition: hashing spreads keys evenly, so the partitions not yet split
// at the current level are the largest, and the next split is one of them;
// a single hot key, which no split relieves, is beyond this rule.
func (c *Controller) watchLoad() {
	prev := map[uint32]load{}
	c.repeat(c.cfg.SplitCheckInterval, nil, func() bool {
		view := c.cfg.Meta.State()
		if !c.cfg.Meta.IsLeader() || view == nil {
			clear(prev)
			return true
		}
		ctx, cancel := context.WithTimeout(context.Background(), c.cfg.SplitCheckInterval)
		defer cancel()
		cur := c.primaryLoads(ctx, view)
		why := overloaded(prev, cur, c.cfg.SplitSize, c.cfg.SplitWriteRate)
		prev = cur
		if why == "" || view.Splitting != nil || view.SplitTarget > view.Partitions || view.Partitions >= ring.MaxPartitions {
			return true
		}
		c.log.Info("a partition passed its split threshold; splitting one more", "why", why, "partitions", view.Partitions+1)
		if _, err := c.cfg.Meta.Propose(ctx, cluster.Command{Op: cluster.OpSplitTarget, Count: view.Partitions + 1}); err != nil {
			c.log.Debug("split target", "error", err)
		}
		return true
	})
}

// primaryLoads asks every member not down for its Status and keeps what
// each partition's primary reports.
func (c *Controller) primaryLoads(ctx context.Context, view *cluster.State) map[uint32]load {
	out := map[uint32]load{}
	for _, m := range view.Members {
		if m.State == cluster.Down {
			continue
		}
		conn, err := c.cfg.Dial(m.Addr)
		if err != nil {
			continue
		}
		st, err := pb.NewAdminClient(conn).Status(ctx, &pb.StatusRequest{})
		if err != nil {
			continue
		}
		now := time.Now()
		for _, ps := range st.GetPartitions() {
			if ps.GetState() == pb.RaftState_RAFT_STATE_LEADER {
				out[ps.GetPartition()] = load{at: now, bytes: ps.GetDiskBytes(), commit: ps.GetCommitIndex()}
			}
		}
	}
	return out
}

// overloaded names the first partition of cur over size bytes, or over
// rate entries a second since prev, and why; "" if none is.
func overloaded(prev, cur map[uint32]load, size uint64, rate float64) string {
	for _, p := range slices.Sorted(maps.Keys(cur)) {
		l := cur[p]
		if size > 0 && l.bytes > size {
			return fmt.Sprintf("partition %d holds %d bytes, over %d", p, l.bytes, size)
		}
		if was, ok := prev[p]; ok && rate > 0 && l.commit >= was.commit && l.at.After(was.at) {
			if r := float64(l.commit-was.commit) / l.at.Sub(was.at).Seconds(); r > rate {
				return fmt.Sprintf("partition %d commits %.0f entries/s, over %.0f", p, r, rate)
			}
		}
	}
	return ""
}
