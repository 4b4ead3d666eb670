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
