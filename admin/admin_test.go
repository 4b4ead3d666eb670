package admin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ringkv/ringkv/cluster"
	"github.com/ringkv/ringkv/internal/testing/wait"
	pb "github.com/ringkv/ringkv/proto/ringkvpb"
	"github.com/ringkv/ringkv/raftgroup"
	"github.com/ringkv/ringkv/ring"
	"github.com/ringkv/ringkv/shard"
	"github.com/ringkv/ringkv/wal"
)

// fakeNode belongs to no cluster and hosts nothing, as a node does before
// Join adopts it, unless a test gives it a metadata member and a network.
type fakeNode struct {
	adopted *cluster.State
	meta    *cluster.Meta
	dial    func(addr string) (grpc.ClientConnInterface, error)
	disk    uint64 // EngineDiskBytes
}

func (*fakeNode) ID() string                              { return "n9" }
func (*fakeNode) Advertise() string                       { return "127.0.0.1:7009" }
func (*fakeNode) MetricsAddr() string                     { return "" }
func (f *fakeNode) EngineDiskBytes() uint64               { return f.disk }
func (f *fakeNode) View() *cluster.State                  { return f.adopted }
func (f *fakeNode) Meta() *cluster.Meta                   { return f.meta }
func (*fakeNode) Replica(ring.PartitionID) *shard.Replica { return nil }
func (*fakeNode) Partitions() []ring.PartitionID          { return nil }
func (f *fakeNode) Adopt(v *cluster.State) error          { f.adopted = v; return nil }
func (*fakeNode) Heard(string) bool                       { return false }
func (f *fakeNode) Dial(addr string) (grpc.ClientConnInterface, error) {
	if f.dial == nil {
		return nil, errors.New("no network")
	}
	return f.dial(addr)
}

// TestStatusTable restates errors.go's table on purpose: the codes are the
// wire contract clients and kvctl retry on (Unavailable: retry; NotFound,
// FailedPrecondition: do not), so a change of the table must change this
// spec too, rather than pass because the test reads the table it checks.

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
		// The condition a handler names wins over another node's answer
		// it wraps.
		{fmt.Errorf("%w: %w", ErrUnreachable, status.Error(codes.Internal, "the peer's answer")), codes.Unavailable},
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
	resp, err := New(&fakeNode{disk: 12345}, nil).Status(context.Background(), &pb.StatusRequest{})
	if err != nil || resp.GetNodeId() != "n9" || resp.GetClusterId() != "" || resp.GetAddress() != "127.0.0.1:7009" ||
		resp.GetEngineDiskBytes() != 12345 {
		t.Fatalf("Status = %v, %v", resp, err)
	}
}

// recordingConn answers every call Unavailable and records the outgoing
// metadata of the last one.
type recordingConn struct {
	method string
	md     metadata.MD
}

func (c *recordingConn) Invoke(ctx context.Context, method string, _, _ any, _ ...grpc.CallOption) error {
	c.method = method
	c.md, _ = metadata.FromOutgoingContext(ctx)
	return status.Error(codes.Unavailable, "the leader is busy")
}

func (c *recordingConn) NewStream(context.Context, *grpc.StreamDesc, string, ...grpc.CallOption) (grpc.ClientStream, error) {
	return nil, errors.New("no streams")
}

// followerMeta is a metadata member (a non-voter, which never leads) of a
// group that b leads.
func followerMeta(t *testing.T) (*cluster.Meta, raft.ServerAddress) {
	t.Helper()
	timing, err := raftgroup.Timing{HeartbeatTimeout: 50 * time.Millisecond, ElectionTimeout: 50 * time.Millisecond,
		LeaderLeaseTimeout: 50 * time.Millisecond, CommitTimeout: 5 * time.Millisecond}.WithDefaults()
	if err != nil {
		t.Fatal(err)
	}
	addrA, transA := raft.NewInmemTransport("")
	addrB, transB := raft.NewInmemTransport("")
	transA.Connect(addrB, transB)
	transB.Connect(addrA, transA)
	w, err := wal.Open(t.TempDir(), wal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	meta, err := cluster.Open(cluster.Config{NodeID: "n9", Dir: t.TempDir(), WAL: w, Transport: transA, Raft: timing})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { meta.Close() })
	store := raft.NewInmemStore()
	b, err := raftgroup.Open(raftgroup.Config{ID: "b", Timing: timing, Snapshots: raftgroup.SnapshotPolicy{Threshold: 100, Interval: time.Second, TrailingLogs: 10}},
		raftgroup.Stores{FSM: nopFSM{}, Logs: store, Stable: store, Snapshots: raft.NewInmemSnapshotStore(), Transport: transB})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Shutdown().Error() })
	if err := b.Bootstrap([]raft.Server{{Suffrage: raft.Voter, ID: "b", Address: addrB}, {Suffrage: raft.Nonvoter, ID: "n9", Address: addrA}}); err != nil {
		t.Fatal(err)
	}
	wait.Until(t, 10*time.Second, "n9 to learn that b leads", func() bool { id, _ := meta.Leader(); return id == "b" })
	return meta, addrB
}

type nopFSM struct{}

func (nopFSM) Apply(*raft.Log) any                 { return nil }
func (nopFSM) Snapshot() (raft.FSMSnapshot, error) { return nil, errors.New("no snapshots") }
func (nopFSM) Restore(io.ReadCloser) error         { return nil }

// TestJoinForwardedOnce: a member that does not lead forwards Join and
// Leave to the leader it knows, marked as forwarded; a forwarded request
// that reaches a member that does not lead (leadership moved meanwhile) is
// answered Unavailable, not sent on again.
func TestJoinForwardedOnce(t *testing.T) {
	meta, leaderAddr := followerMeta(t)
	conn := &recordingConn{}
	var dialed []string
	s := New(&fakeNode{meta: meta, dial: func(addr string) (grpc.ClientConnInterface, error) {
		dialed = append(dialed, addr)
		return conn, nil
	}}, nil)
	ctx := context.Background()

	_, err := s.Join(ctx, &pb.JoinRequest{Id: "n4", Address: "h:1"})
	if st := status.Convert(err); st.Code() != codes.Unavailable || st.Message() != "the leader is busy" {
		t.Fatalf("forwarded Join: %v %q, want the leader's answer", st.Code(), st.Message())
	}
	if !slices.Equal(dialed, []string{string(leaderAddr)}) || conn.method != pb.Admin_Join_FullMethodName || len(conn.md.Get(forwardedKey)) == 0 {
		t.Fatalf("dialed %v, sent %s with metadata %v; want Join sent to the leader at %s, marked forwarded", dialed, conn.method, conn.md, leaderAddr)
	}

	dialed = nil
	fwd := metadata.NewIncomingContext(ctx, metadata.Pairs(forwardedKey, "n1"))
	for name, call := range map[string]func() error{
		"join":  func() error { _, err := s.Join(fwd, &pb.JoinRequest{Id: "n4", Address: "h:1"}); return err },
		"leave": func() error { _, err := s.Leave(fwd, &pb.LeaveRequest{Id: "n4"}); return err },
	} {
		if st := status.Convert(call()); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "leadership has moved; retry") {
			t.Errorf("%s forwarded to a non-leader: %v %q, want Unavailable, leadership moved", name, st.Code(), st.Message())
		}
	}
	if len(dialed) > 0 {
		t.Fatalf("a forwarded request was sent on to %v", dialed)
	}
}
