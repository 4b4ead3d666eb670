package node_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ringkv/ringkv/client"
	"github.com/ringkv/ringkv/internal/testing/ackcheck"
	"github.com/ringkv/ringkv/internal/testing/testcluster"
	"github.com/ringkv/ringkv/node"
	pb "github.com/ringkv/ringkv/proto/ringkvpb"
	"github.com/ringkv/ringkv/raftgroup"
)

// TestSplitUnderWrites grows a 3-node cluster from 4 partitions to 8 with
// Admin.Split while writers keep writing: every node ends with the map of
// 8 partitions, each placed on three nodes, no split left under way. Then
// a node joins and another leaves, and every acknowledged write reads back.
func TestSplitUnderWrites(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Partitions: 4, Tweak: fastMembership})
	cl, err := client.New(context.Background(), c.Addrs())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	w := ackcheck.Start(cl, 4)
	// Every partition, each child from its first configuration on, keeps
	// three voters, sampled throughout.
	least := make(chan int, 1)
	stopSampling := make(chan struct{})
	go func() {
		m := 99
		for {
			select {
			case <-stopSampling:
				least <- m
				return
			case <-time.After(20 * time.Millisecond):
				m = min(m, minVoters(c.Nodes[:3]))
			}
		}
	}()
	admin := pb.NewAdminClient(c.Conn(1))
	ctx := context.Background()
	var resp *pb.SplitResponse
	if err := retryUnavailable(t, func() (err error) {
		resp, err = admin.Split(ctx, &pb.SplitRequest{Partitions: 8})
		return err
	}); err != nil {
		t.Fatalf("split: %v", err)
	}
	if resp.GetTarget() != 8 {
		t.Fatalf("split answered %v", resp)
	}
	_, err = admin.Split(ctx, &pb.SplitRequest{Partitions: 2})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("a split to fewer partitions: %v, want InvalidArgument", err)
	}
	start := time.Now()
	waitFor(t, 120*time.Second, "8 partitions on every node, settled", func() (bool, string) {
		for _, n := range c.Nodes {
			v := n.View()
			if v.Partitions != 8 || v.Splitting != nil {
				return false, fmt.Sprintf("%s: %d partitions, splitting %v", n.ID(), v.Partitions, v.Splitting)
			}
			if ok, why := settled(n); !ok {
				return false, why
			}
		}
		return true, ""
	})
	t.Logf("split 4 -> 8 partitions in %v", time.Since(start).Round(time.Millisecond))
	hosted := 0
	for _, n := range c.Nodes {
		hosted += len(n.Partitions())
	}
	if hosted != 3*8 {
		t.Fatalf("the nodes host %d replicas, want %d", hosted, 3*8)
	}
	close(stopSampling)
	if m := <-least; m < 3 {
		t.Errorf("a partition had %d voters at a sampled instant", m)
	}

	// The split partitions move like any other: a node joins and takes
	// its share, one leaves and gives its replicas up, writers going on.
	i := c.AddNode()
	id := c.Nodes[i].ID()
	if err := retryUnavailable(t, func() error {
		_, err := admin.Join(ctx, &pb.JoinRequest{Id: id, Address: c.Nodes[i].Addr()})
		return err
	}); err != nil {
		t.Fatalf("join %s: %v", id, err)
	}
	waitFor(t, 120*time.Second, id+" holds replicas and moves finish", func() (bool, string) {
		if ok, why := settled(c.Nodes[0]); !ok {
			return false, why
		}
		return len(c.Nodes[i].Partitions()) >= 5, fmt.Sprintf("%s hosts %v", id, c.Nodes[i].Partitions())
	})
	if err := retryUnavailable(t, func() error {
		_, err := admin.Leave(ctx, &pb.LeaveRequest{Id: "n1"})
		return err
	}); err != nil {
		t.Fatalf("leave n1: %v", err)
	}
	waitFor(t, 120*time.Second, "n1 removed and moves finished", func() (bool, string) {
		v := c.Nodes[1].View()
		if v.Member("n1") != nil {
			return false, fmt.Sprintf("epoch %d: n1 still a member", v.Epoch)
		}
		return settled(c.Nodes[1])
	})
	w.Finish(t)
}

// TestClusterSplitsToFitItsSize: a cluster created with fewer partitions
// than its nodes want at PartitionsPerNode splits on its own, and one
// whose partitions grow past SplitSize splits once more.
func TestClusterSplitsToFitItsSize(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Partitions: 2, Tweak: func(cfg *node.Config) {
		fastMembership(cfg)
		cfg.PartitionsPerNode = 2
	}})
	waitFor(t, 60*time.Second, "the cluster to split to 8 partitions (3 nodes at 2 per node)", func() (bool, string) {
		v := c.Nodes[0].View()
		return v.Partitions == 8 && v.Splitting == nil, fmt.Sprintf("%d partitions, splitting %v", v.Partitions, v.Splitting)
	})

	// A threshold of one byte on disk: the first partition whose data
	// reaches an SSTable (snapshots flush the engine) makes it split.
	c2 := testcluster.Start(t, testcluster.Options{Partitions: 2, Tweak: func(cfg *node.Config) {
		fastMembership(cfg)
		cfg.PartitionsPerNode = -1
		cfg.SplitSize = 1
		cfg.SplitCheckInterval = 300 * time.Millisecond
		cfg.SnapshotPolicy = raftgroup.SnapshotPolicy{Threshold: 16, TrailingLogs: 1024, Interval: 100 * time.Millisecond}
	}})
	cl, err := client.New(context.Background(), c2.Addrs())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if v := c2.Nodes[0].View(); v.Partitions != 2 {
		t.Fatalf("an empty cluster split to %d partitions", v.Partitions)
	}
	for i := range 200 {
		if _, err := cl.Put(context.Background(), fmt.Appendf(nil, "k%d", i), []byte("v"), client.Strong); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 60*time.Second, "a split for the partitions' size", func() (bool, string) {
		v := c2.Nodes[0].View()
		return v.Partitions > 2, fmt.Sprintf("%d partitions", v.Partitions)
	})
}
