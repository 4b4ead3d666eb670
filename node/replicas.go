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
	tr, err := n.trans.Transport(uint32(p))
	if err != nil {
		return nil, err
	}
	r, err := shard.Open(n.replicaConfig(p, tr))
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
