package admin

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ringkv/ringkv/cluster"
	pb "github.com/ringkv/ringkv/proto/ringkvpb"
	"github.com/ringkv/ringkv/ring"
	"github.com/ringkv/ringkv/shard"
)

// fakeNode belongs to no cluster and hosts nothing, as a node does before
// Join adopts it.
type fakeNode struct{ adopted *cluster.State }

func (*fakeNode) ID() string                                    { return "n9" }
func (*fakeNode) Advertise() string                             { return "127.0.0.1:7009" }
func (*fakeNode) MetricsAddr() string                           { return "" }
func (f *fakeNode) View() *cluster.State                        { return f.adopted }
func (*fakeNode) Meta() *cluster.Meta                           { return nil }
func (*fakeNode) Replica(ring.PartitionID) *shard.Replica       { return nil }
func (*fakeNode) Partitions() []ring.PartitionID                { return nil }
func (f *fakeNode) Adopt(v *cluster.State) error                { f.adopted = v; return nil }
func (*fakeNode) Heard(string) bool                             { return false }
func (*fakeNode) Dial(string) (grpc.ClientConnInterface, error) { return nil, errors.New("no network") }

func TestStatusTable(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want codes.Code
	}{
		{ErrInvalidArgument, codes.InvalidArgument},
		{ErrNoCluster, codes.FailedPrecondition},
		{ErrNoMetaLeader, codes.Unavailable},
		{ErrNotHosted, codes.NotFound},
		{ErrNotMember, codes.NotFound},
		{ErrRefused, codes.PermissionDenied},
		{ErrConflict, codes.FailedPrecondition},
		{ErrUnreachable, codes.Unavailable},
		{ErrReconfigure, codes.Aborted},
		{cluster.ErrRefused, codes.FailedPrecondition},
		{cluster.ErrNotLeader, codes.Unavailable},
		{&shard.NotPrimaryError{Partition: 3, LeaderID: "n2", LeaderAddr: "127.0.0.1:7002"}, codes.FailedPrecondition},
		{context.DeadlineExceeded, codes.DeadlineExceeded},
		{errors.New("disk on fire"), codes.Internal},
	} {
		wrapped := fmt.Errorf("context: %w", tc.err)
		st := status.Convert(Status(wrapped))
		// NotPrimary reads as router.Status writes it, the same from KV and
		// Admin.
		whole := strings.Contains(st.Message(), "context: ") || errors.As(tc.err, new(*shard.NotPrimaryError))
		if st.Code() != tc.want || !whole {
			t.Errorf("%v: %v %q, want %v and the whole message", tc.err, st.Code(), st.Message(), tc.want)
		}
	}
	if np := pb.NotPrimaryOf(Status(&shard.NotPrimaryError{Partition: 3, LeaderID: "n2", LeaderAddr: "a:1"})); np.GetPrimaryAddr() != "a:1" {
		t.Errorf("NotPrimary lost its detail: %v", np)
	}
	passed := status.Error(codes.ResourceExhausted, "the leader's own answer")
	if got := Status(passed); got != passed {
		t.Errorf("a status was changed: %v", got)
	}
}

func TestRequestsRefused(t *testing.T) {
	ctx := context.Background()
	s := New(&fakeNode{}, nil)
	for _, tc := range []struct {
		name string
		call func() error
		code codes.Code
		want string
	}{
		{"cluster map without a cluster", func() error { _, err := s.ClusterMap(ctx, &pb.ClusterMapRequest{}); return err },
			codes.FailedPrecondition, "node n9 belongs to no cluster yet"},
		{"join without an id", func() error { _, err := s.Join(ctx, &pb.JoinRequest{Address: "h:1"}); return err },
			codes.InvalidArgument, "id: a node id is required"},
		{"join with a long id", func() error {
			_, err := s.Join(ctx, &pb.JoinRequest{Id: strings.Repeat("x", 65), Address: "h:1"})
			return err
		},
			codes.InvalidArgument, "id: 65 bytes, at most 64"},
		{"join without host:port", func() error { _, err := s.Join(ctx, &pb.JoinRequest{Id: "n4", Address: "h"}); return err },
			codes.InvalidArgument, `address: "h" is not host:port`},
		{"join without a cluster", func() error { _, err := s.Join(ctx, &pb.JoinRequest{Id: "n4", Address: "h:1"}); return err },
			codes.FailedPrecondition, "belongs to no cluster yet"},
		{"leave without a cluster", func() error { _, err := s.Leave(ctx, &pb.LeaveRequest{Id: "n4"}); return err },
			codes.FailedPrecondition, "belongs to no cluster yet"},
		{"heartbeat to a non-leader", func() error { _, err := s.Heartbeat(ctx, &pb.HeartbeatRequest{NodeId: "n1"}); return err },
			codes.Unavailable, "does not lead the metadata group"},
		{"reconfigure of a partition not hosted", func() error { _, err := s.Reconfigure(ctx, &pb.ReconfigureRequest{Partition: 5}); return err },
			codes.NotFound, "partition: 5 is not hosted on node n9"},
		{"reoffer to a partition not hosted", func() error { _, err := s.Reoffer(ctx, &pb.ReofferRequest{Partition: 5}); return err },
			codes.NotFound, "partition: 5 is not hosted on node n9"},
		{"adopt under another id", func() error { _, err := s.Adopt(ctx, &pb.AdoptRequest{NodeId: "n8"}); return err },
			codes.InvalidArgument, `node_id: this node was started as "n9", not "n8"`},
		{"adopt at another address", func() error {
			_, err := s.Adopt(ctx, &pb.AdoptRequest{NodeId: "n9", Address: "127.0.0.1:1"})
			return err
		}, codes.FailedPrecondition, "restart it with --advertise-addr 127.0.0.1:1"},
		{"adopt with corrupt state", func() error {
			_, err := s.Adopt(ctx, &pb.AdoptRequest{NodeId: "n9", ClusterId: "c", State: []byte("{")})
			return err
		}, codes.InvalidArgument, "state: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := status.Convert(tc.call())
			if st.Code() != tc.code || !strings.Contains(st.Message(), tc.want) {
				t.Fatalf("%v %q, want %v naming %q", st.Code(), st.Message(), tc.code, tc.want)
			}
		})
	}
	if got := s.n.View(); got != nil {
		t.Fatalf("a refused request adopted the node into %s", got.ClusterID)
	}
}

func TestStatusWithoutCluster(t *testing.T) {
	resp, err := New(&fakeNode{}, nil).Status(context.Background(), &pb.StatusRequest{})
	if err != nil || resp.GetNodeId() != "n9" || resp.GetClusterId() != "" || resp.GetAddress() != "127.0.0.1:7009" {
		t.Fatalf("Status = %v, %v", resp, err)
	}
}
