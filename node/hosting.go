package node

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ringkv/ringkv/cluster"
	pb "github.com/ringkv/ringkv/proto/ringkvpb"
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

// hostReplicas keeps the node's replicas in line with its view: it opens
// those the view places here and drops the others.
func (n *Node) hostReplicas() {
	n.repeat(time.Second, n.viewCh, func() bool {
		view := n.view.Load()
		for p := range ring.PartitionID(view.Partitions) {
			hosted := n.Replica(p) != nil
			switch want := view.Hosts(n.cfg.ID, p); {
			case want && !hosted:
				if _, err := n.openReplica(p); err != nil {
					n.log.Error("opening a replica placed on this node", "partition", p, "error", err)
				} else {
					n.log.Info("opened a replica placed on this node", "partition", p, "epoch", view.Epoch)
				}
			case !want && hosted:
				if err := n.dropReplica(p); err != nil {
					n.log.Error("dropping a replica moved off this node", "partition", p, "error", err)
				} else {
					n.log.Info("dropped a replica moved off this node", "partition", p, "epoch", view.Epoch)
				}
			}
		}
		return true
	})
}

// repeat calls fn every interval, and whenever wake fires, until the node
// closes or fn returns false. It runs as one of the node's loops.
func (n *Node) repeat(every time.Duration, wake <-chan struct{}, fn func() bool) {
	defer n.watch.Done()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-wake:
		case <-tick.C:
		}
		if !fn() {
			return
		}
	}
}

// heartbeat reports this node to the metadata leader, which marks silent
// members suspect and then down. An answer that this node was removed
// stops it: its replicas were re-created elsewhere, and it must not serve
// or vote with stale data.
func (n *Node) heartbeat() {
	every := min(max(n.cfg.Timeouts.SuspectAfter/5, 100*time.Millisecond), time.Second)
	round := 0
	n.repeat(every, nil, func() bool {
		round++
		id, addr := n.metaMember().Leader()
		if string(id) == n.cfg.ID {
			n.mgr.heard(n.cfg.ID)
			return true
		}
		view := n.view.Load()
		if id == "" {
			// No leader known — maybe this node was removed from the
			// metadata group: ask the members in turn, any of which
			// refuses a removed node.
			others := slices.DeleteFunc(slices.Clone(view.Members), func(m cluster.Member) bool { return m.ID == n.cfg.ID })
			if len(others) == 0 {
				return true
			}
			m := others[round%len(others)]
			id, addr = raft.ServerID(m.ID), raft.ServerAddress(m.Addr)
		}
		conn, err := n.pool.Dial(string(addr))
		if err != nil {
			return true
		}
		ctx, cancel := context.WithTimeout(context.Background(), every)
		defer cancel()
		_, err = pb.NewAdminClient(conn).Heartbeat(ctx, &pb.HeartbeatRequest{NodeId: n.cfg.ID, Address: n.advertise, ClusterId: view.ClusterID})
		if status.Code(err) == codes.PermissionDenied {
			n.fail(fmt.Errorf("the metadata leader %s refused this node: %s", id, status.Convert(err).Message()))
			return false
		}
		return true
	})
}

func (n *Node) fail(err error) {
	n.fatalOnce.Do(func() {
		n.log.Error("node must stop", "error", err)
		n.fatal <- err
	})
}
