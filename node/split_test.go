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
	pb "github.com/ringkv/ringkv/proto/ringkvpb"
)

// TestSplitUnderWrites grows a 3-node cluster from 4 partitions to 8 with
// Admin.Split while writers keep writing: every node ends with the map of
// 8 partitions, each placed on three nodes, no split left under way, and
// every acknowledged write reads back.
func TestSplitUnderWrites(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Partitions: 4, Tweak: fastMembership})
	cl, err := client.New(context.Background(), c.Addrs())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	w := ackcheck.Start(cl, 4)
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
	w.Finish(t)
}
