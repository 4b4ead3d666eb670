package node

import (
	"context"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ringkv/ringkv/cluster"
	pb "github.com/ringkv/ringkv/proto/ringkvpb"
)

// fakeStream delivers messages forever from a peer stamped as node "n2".
type fakeStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (f fakeStream) Context() context.Context { return f.ctx }
func (f fakeStream) RecvMsg(any) error        { return nil }

// TestStreamRefusedOnceSenderRemoved: a stream opened while its sender
// was a member is cut at the first message after the sender is removed.
func TestStreamRefusedOnceSenderRemoved(t *testing.T) {
	n := &Node{cfg: Config{ID: "n1"}}
	n.view.Store(&cluster.State{ClusterID: "c1"})
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs(clusterIDHeader, "c1", nodeIDHeader, "n2"))
	info := &grpc.StreamServerInfo{FullMethod: "/" + pb.Raft_ServiceDesc.ServiceName + "/AppendEntriesPipeline"}
	received := 0
	err := n.checkStreamIdentity(nil, fakeStream{ctx: ctx}, info, func(_ any, ss grpc.ServerStream) error {
		for received < 100 {
			if err := ss.RecvMsg(nil); err != nil {
				return err
			}
			if received++; received == 3 {
				n.view.Store(&cluster.State{ClusterID: "c1", Removed: []string{"n2"}})
			}
		}
		return nil
	})
	if status.Code(err) != codes.PermissionDenied || received != 3 {
		t.Fatalf("after %d messages: %v, want PermissionDenied right after the removal", received, err)
	}
}

// TestClusterIDFromPeersPartitionsAndToken: every initial node computes the
// same id from the same --peers (in any order), and a change of member,
// address, partition count or token makes another cluster.
func TestClusterIDFromPeersPartitionsAndToken(t *testing.T) {
	peers := []Peer{{ID: "n1", Addr: "h1:7001"}, {ID: "n2", Addr: "h2:7001"}, {ID: "n3", Addr: "h3:7001"}}
	base := clusterID(peers, 16, "prod")
	if got := clusterID([]Peer{peers[2], peers[0], peers[1]}, 16, "prod"); got != base {
		t.Fatalf("peers in another order give %s, want %s", got, base)
	}
	others := map[string]string{
		"another token":       clusterID(peers, 16, "prod-2"),
		"no token":            clusterID(peers, 16, ""),
		"another partitions":  clusterID(peers, 32, "prod"),
		"another address":     clusterID([]Peer{peers[0], peers[1], {ID: "n3", Addr: "h4:7001"}}, 16, "prod"),
		"another member name": clusterID([]Peer{peers[0], peers[1], {ID: "n4", Addr: "h3:7001"}}, 16, "prod"),
	}
	for name, id := range others {
		if id == base {
			t.Errorf("%s: same cluster id %s", name, id)
		}
	}
}
