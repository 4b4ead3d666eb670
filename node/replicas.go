package node

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ringkv/ringkv/cluster"
	"github.com/ringkv/ringkv/control"
	"github.com/ringkv/ringkv/ring"
	"github.com/ringkv/ringkv/shard"
)

// openReplica starts an empty or recovered replica of p; a new one waits
// for the partition's leader to add it.
func (n *Node) openReplica(p ring.PartitionID) (*shard.Replica, error) {
	n.repMu.Lock()
	defer n.repMu.Unlock()
	if r := n.Replica(p); r != nil {
		return r, nil
	}
	if err := n.awaitingSplit(p); err != nil {
		return nil, err
	}
	tr, err := n.trans.Transport(uint32(p))
	if err != nil {
		return nil, err
	}
	cfg := n.replicaConfig(p, tr)
	cfg.Limits.Range = n.createdRange(p)
	r, err := shard.Open(cfg)
	if err != nil {
		tr.Close()
		return nil, err
	}
	reps := maps.Clone(*n.replicas.Load())
	reps[p] = r
	n.replicas.Store(&reps)
	return r, nil
}

// dropReplica stops this node's replica of p and deletes its data: its log
// stream and its snapshots. The caller has seen a recorded configuration
// of p without this node, so the group no longer counts on this copy.
func (n *Node) dropReplica(p ring.PartitionID) error {
	n.repMu.Lock()
	defer n.repMu.Unlock()
	r := n.Replica(p)
	if r == nil {
		return nil
	}
	reps := maps.Clone(*n.replicas.Load())
	delete(reps, p)
	n.replicas.Store(&reps)
	err := r.Close()
	return errors.Join(err, n.deleteReplicaData(p))
}

func (n *Node) deleteReplicaData(p ring.PartitionID) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.wal.DeleteStream(ctx, shard.StreamOf(uint32(p))); err != nil {
		return fmt.Errorf("partition %d: delete log: %w", p, err)
	}
	// A replica removed from its group no longer re-offers what its
	// journal kept: the group went on without this copy.
	if err := n.wal.DeleteStream(ctx, shard.JournalStreamOf(uint32(p))); err != nil {
		return fmt.Errorf("partition %d: delete fast-write journal: %w", p, err)
	}
	if err := n.engine.Partition(uint32(p)).Drop(); err != nil {
		return err
	}
	return os.RemoveAll(n.partitionDir(p))
}

// dropStrays deletes, at start, the data of replicas the view no longer
// places here: the node stopped between the removal and the deletion.
func (n *Node) dropStrays(view *cluster.State) error {
	entries, err := os.ReadDir(filepath.Join(n.cfg.DataDir, "partitions"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil || p < 0 || e.Name() != partitionDirName(ring.PartitionID(p)) {
			// Not a replica's directory: leave what the node did not
			// write alone (and never mistake it for partition 0's).
			n.log.Warn("ignoring an unexpected entry in the partitions directory", "name", e.Name())
			continue
		}
		if splitting := view.Splitting != nil && uint32(p) == view.Splitting.Child; splitting {
			// The child of a split under way: this node may have derived
			// it, and the map records it once the split is done.
			continue
		}
		if p >= view.Partitions || !view.Hosts(n.cfg.ID, ring.PartitionID(p)) {
			n.log.Info("deleting the data of a replica no longer placed here", "partition", e.Name())
			if err := n.deleteReplicaData(ring.PartitionID(p)); err != nil {
				return err
			}
		}
	}
	return nil
}

// host is the node as its control loop drives it; Partitions is the node's
// own.
type host struct{ *Node }

var _ control.Host = host{}

func (h host) OpenReplica(p ring.PartitionID) error {
	_, err := h.openReplica(p)
	return err
}

func (h host) DropReplica(p ring.PartitionID) error { return h.dropReplica(p) }

func (h host) Leads(p ring.PartitionID) bool {
	r := h.Replica(p)
	return r != nil && r.IsPrimary()
}

func (h host) Transfer(p ring.PartitionID, id raft.ServerID, addr raft.ServerAddress) error {
	r := h.Replica(p)
	if r == nil {
		return fmt.Errorf("partition %d: not hosted", p)
	}
	return r.Raft().LeadershipTransferToServer(id, addr).Error()
}

// Purge needs no context of its own: the replica bounds a purge by the op
// timeout, and closing the replica (shutdown, a drop) ends it.
func (h host) Purge(p ring.PartitionID) (int, error) {
	r := h.Replica(p)
	if r == nil {
		return 0, fmt.Errorf("partition %d: not hosted", p)
	}
	return r.PurgeTombstones(context.Background())
}

// errAwaitingSplit defers opening the child of a split until this node's
// replica of the parent has applied it.
var errAwaitingSplit = fmt.Errorf("%w: the parent's replica here has not applied the split yet", control.ErrDeferred)

// awaitingSplit refuses to open p while this node's replica of p's parent
// still owns p's keys: the parent derives p's state in the engine when it
// applies the split, and a replica of p opened before that would start
// empty and take a snapshot into the span the split then writes.
func (n *Node) awaitingSplit(p ring.PartitionID) error {
	r := n.ringWith(p)
	if r == nil {
		return nil
	}
	parent, ok := r.Parent(p)
	if !ok {
		return nil
	}
	if pr := n.Replica(parent); pr != nil && pr.Store().HashRange().Contains(r.Range(p).First) {
		return fmt.Errorf("partition %d: %w", p, errAwaitingSplit)
	}
	return nil
}

// ringWith is the node's ring, grown by the split under way if p is its
// child, which the map records only once the split is done; nil if p is
// in neither.
func (n *Node) ringWith(p ring.PartitionID) *ring.Ring {
	r := n.ring.Load()
	if r == nil || int(p) < r.Partitions() {
		return r
	}
	if int(p) > r.Partitions() {
		return nil
	}
	grown, err := r.Split()
	if err != nil {
		return nil
	}
	return grown
}

// createdRange is the hash range p owned when it was created, which its
// store assumes until its engine span records another (fsm.Options.Range):
// its range in the initial ring, or, for a split's child, the one the map
// gives it (the split records it in the span, or a snapshot brings it).
func (n *Node) createdRange(p ring.PartitionID) ring.HashRange {
	r := n.ringWith(p)
	if r == nil {
		return ring.HashRange{}
	}
	if int(p) < r.Initial() {
		if initial, err := ring.New(r.Initial()); err == nil {
			return initial.Range(p)
		}
	}
	return r.Range(p)
}

// openSplitChild opens the replica of child, which a split this node's
// replica of its parent applied has just derived in the engine. If that
// replica led the parent (campaign), the child's stands for election at
// once, and again every campaignEvery while no leader is known (its
// peers open the child as they apply the split, a moment later), up to
// campaignFor: the child's keys are unavailable until it has a leader,
// and raft's own first election waits a heartbeat timeout or two.
func (n *Node) openSplitChild(child ring.PartitionID, campaign bool) {
	r, err := n.openReplica(child)
	if err != nil {
		n.log.Error("opening the replica of a split's child", "partition", child, "error", err)
		return
	}
	n.log.Info("opened the replica of a split's child", "partition", child, "campaign", campaign)
	if !campaign {
		return
	}
	tick := time.NewTicker(campaignEvery)
	defer tick.Stop()
	for deadline := time.Now().Add(campaignFor); time.Now().Before(deadline); {
		if id, _ := r.Leader(); id != "" {
			return
		}
		// A candidate already stands: another nudge would only restart
		// its election in a new term.
		if r.Raft().State() == raft.Follower {
			if err := r.Campaign(); err != nil {
				n.log.Debug("campaign for a split's child", "partition", child, "error", err)
			}
		}
		select {
		case <-n.stop:
			return
		case <-tick.C:
		}
	}
}

const (
	campaignEvery = 100 * time.Millisecond
	campaignFor   = 2 * time.Second
)
