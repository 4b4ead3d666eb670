// Package admin is a node's Admin gRPC service: status and the cluster map
// for clients and kvctl, membership (Join, Leave, and Adopt on the node
// that joins), heartbeats for failure detection, and the per-partition
// operations the control loop drives on primaries (Reconfigure) and
// replicas hand each other (Reoffer).
//
// Invariants:
//   - Membership changes are decided by the metadata leader: any node
//     forwards Join and Leave to it, once; a node that is not the leader
//     answers a heartbeat Unavailable.
//   - Every error leaves through Status, which maps the conditions of
//     errors.go to gRPC codes in one table; the message names the field or
//     the node and says what to do. A refused request changes nothing.
//   - Any member refuses a removed node's heartbeat with PermissionDenied,
//     which stops that node (control's heartbeat loop).
//
// Goroutines and locks: none of its own; handlers run on gRPC's goroutines
// and read the node through Node, which is safe for concurrent use.
package admin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ringkv/ringkv/cluster"
	pb "github.com/ringkv/ringkv/proto/ringkvpb"
	"github.com/ringkv/ringkv/ring"
	"github.com/ringkv/ringkv/shard"
)

// Node is the node the service answers for.
type Node interface {
	ID() string
	// Advertise is the address the node's peers reach it at.
	Advertise() string
	// MetricsAddr is where /metrics is served, "" if nowhere.
	MetricsAddr() string
	// EngineDiskBytes is what the node's storage engine takes on disk.
	EngineDiskBytes() uint64
	// View is the node's latest view of the cluster, nil while it belongs
	// to none.
	View() *cluster.State
	// Meta is the node's member of the metadata group, nil while it
	// belongs to no cluster.
	Meta() *cluster.Meta
	// Replica is the node's replica of p, nil if it hosts none.
	Replica(p ring.PartitionID) *shard.Replica
	// Partitions lists the hosted partitions, in order.
	Partitions() []ring.PartitionID
	// Adopt makes the node a member of view's cluster.
	Adopt(view *cluster.State) error
	// Heard records a member's heartbeat; false if the node runs no
	// control loop yet.
	Heard(id string) bool
	// Dial returns a shared connection to another node.
	Dial(addr string) (grpc.ClientConnInterface, error)
}

// Server implements pb.AdminServer.
type Server struct {
	pb.UnimplementedAdminServer
	n   Node
	log hclog.Logger
}

var _ pb.AdminServer = (*Server)(nil)

// New returns the service of n.
func New(n Node, log hclog.Logger) *Server {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	return &Server{n: n, log: log}
}

// reconfigureTimeout bounds one configuration change of a partition.
const reconfigureTimeout = 10 * time.Second

func (s *Server) Status(context.Context, *pb.StatusRequest) (*pb.StatusResponse, error) {
	n := s.n
	resp := &pb.StatusResponse{NodeId: n.ID(), Address: n.Advertise(), MetricsAddress: n.MetricsAddr(), EngineDiskBytes: n.EngineDiskBytes()}
	if v := n.View(); v != nil {
		resp.Epoch, resp.ClusterId = v.Epoch, v.ClusterID
	}
	if meta := n.Meta(); meta != nil {
		id, _ := meta.Leader()
		resp.MetadataLeader = string(id)
	}
	for _, p := range n.Partitions() {
		r := n.Replica(p)
		if r == nil {
			continue
		}
		st := r.Status()
		resp.Partitions = append(resp.Partitions, &pb.PartitionStatus{
			Partition:    uint32(p),
			State:        pb.RaftState(st.State + 1),
			LeaderId:     string(st.LeaderID),
			LeaderAddr:   string(st.LeaderAddr),
			Term:         st.Term,
			LastLogIndex: st.LastIndex,
			CommitIndex:  st.CommitIndex,
			AppliedIndex: st.AppliedIndex,
			// Asked here, not in Status: the metrics read Status every
			// scrape and have no use for it.
			DiskBytes: r.Store().DiskBytes(),
		})
	}
	return resp, nil
}

func (s *Server) ClusterMap(context.Context, *pb.ClusterMapRequest) (*pb.ClusterMapResponse, error) {
	view := s.n.View()
	if view == nil {
		return nil, Status(fmt.Errorf("node %s %w", s.n.ID(), ErrNoCluster))
	}
	asg := view.Placement()
	r, err := view.Ring()
	if err != nil {
		return nil, Status(err)
	}
	resp := &pb.ClusterMapResponse{Partitions: uint32(view.Partitions), InitialPartitions: uint32(r.Initial()), Epoch: view.Epoch}
	for _, m := range view.Members {
		resp.Nodes = append(resp.Nodes, &pb.NodeInfo{Id: m.ID, Address: m.Addr, State: string(m.State), SinceUnixNano: m.Since})
	}
	for p := range ring.PartitionID(view.Partitions) {
		pm := &pb.PartitionMap{Partition: uint32(p), PrimaryId: string(asg.Primary(p)), Moving: view.Moving(p)}
		for _, sv := range view.Config[p] {
			if sv.Voter {
				pm.Replicas = append(pm.Replicas, sv.ID)
			} else {
				pm.Learners = append(pm.Learners, sv.ID)
			}
		}
		for _, id := range asg.Replicas(p) {
			pm.Target = append(pm.Target, string(id))
		}
		known := false
		if r := s.n.Replica(p); r != nil {
			if id, _ := r.Leader(); id != "" {
				pm.PrimaryId, known = string(id), true
			}
		}
		if m := view.Member(pm.PrimaryId); !known && (m == nil || m.State == cluster.Down || !slices.Contains(pm.Replicas, pm.PrimaryId)) {
			// Not known to lead, and not routable: name a live voter,
			// which forwards to the primary.
			pm.PrimaryId = ""
			for _, id := range pm.Replicas {
				if m := view.Member(id); m != nil && m.State != cluster.Down {
					pm.PrimaryId = id
					break
				}
			}
		}
		pm.PrimaryAddr = view.Addr(pm.PrimaryId)
		resp.PartitionMap = append(resp.PartitionMap, pm)
	}
	return resp, nil
}

// replica is the node's replica of partition p of a request.
func (s *Server) replica(p uint32) (*shard.Replica, error) {
	r := s.n.Replica(ring.PartitionID(p))
	if r == nil {
		return nil, fmt.Errorf("partition: %d is %w on node %s", p, ErrNotHosted, s.n.ID())
	}
	return r, nil
}

func (s *Server) Reoffer(ctx context.Context, req *pb.ReofferRequest) (*pb.ReofferResponse, error) {
	r, err := s.replica(req.GetPartition())
	if err != nil {
		return nil, Status(err)
	}
	if err := r.Reoffer(ctx, req.GetEntry()); err != nil {
		return nil, Status(err)
	}
	return &pb.ReofferResponse{}, nil
}

// split has r, which leads its partition, split it: the child's voters
// are the partition's, which must be exactly three voters (no move under
// way).
func split(ctx context.Context, r *shard.Replica, req *pb.ReconfigureRequest) error {
	cf := r.Raft().GetConfiguration()
	if err := cf.Error(); err != nil {
		return fmt.Errorf("%w: partition %d: configuration: %v", ErrUnreachable, req.GetPartition(), err)
	}
	servers := cf.Configuration().Servers
	if len(servers) != ring.ReplicationFactor || slices.ContainsFunc(servers, func(sv raft.Server) bool { return sv.Suffrage != raft.Voter }) {
		return fmt.Errorf("%w: partition %d is moving a replica (%d servers); it splits once the move is done", ErrConflict, req.GetPartition(), len(servers))
	}
	rng := ring.HashRange{First: req.GetRangeFirst(), Last: req.GetRangeLast()}
	if err := r.Split(ctx, rng, req.GetChild(), servers); err != nil {
		return fmt.Errorf("partition %d: split: %w", req.GetPartition(), err)
	}
	return nil
}

// forwardedKey marks, in its metadata, a Join or Leave that a member
// forwarded to the node it took for the metadata leader.
const forwardedKey = "ringkv-admin-forwarded"

// onMetaLeader runs local on this node if it leads the metadata group, or
// sends the request to the leader with remote, once: a forwarded request
// that finds leadership moved is answered ErrNoMetaLeader rather than sent
// on, so that two members with stale ideas of the leader cannot pass it
// back and forth until the caller's deadline.
func onMetaLeader[T any](ctx context.Context, s *Server, local func(*cluster.Meta, *cluster.State) (T, error), remote func(context.Context, pb.AdminClient) (T, error)) (T, error) {
	var zero T
	meta := s.n.Meta()
	if meta == nil {
		return zero, Status(fmt.Errorf("node %s %w", s.n.ID(), ErrNoCluster))
	}
	if meta.IsLeader() {
		view := meta.State()
		if view == nil {
			return zero, Status(fmt.Errorf("%w: the metadata leader has not caught up yet; retry", ErrNoMetaLeader))
		}
		resp, err := local(meta, view)
		return resp, Status(err)
	}
	if md, _ := metadata.FromIncomingContext(ctx); len(md.Get(forwardedKey)) > 0 {
		return zero, Status(fmt.Errorf("%w: node %s was sent this request as the metadata leader, but leadership has moved; retry", ErrNoMetaLeader, s.n.ID()))
	}
	id, addr := meta.Leader()
	if id == "" {
		return zero, Status(fmt.Errorf("%w: the metadata group has no leader; retry", ErrNoMetaLeader))
	}
	conn, err := s.n.Dial(string(addr))
	if err != nil {
		return zero, Status(fmt.Errorf("%w: metadata leader %s: %v", ErrUnreachable, id, err))
	}
	return remote(metadata.AppendToOutgoingContext(ctx, forwardedKey, s.n.ID()), pb.NewAdminClient(conn))
}

// proposed gives a metadata proposal's error its condition: refused, not
// the leader, or (a commit that timed out, say) unreachable.
func proposed(err error) error {
	if err == nil || errors.Is(err, cluster.ErrRefused) || errors.Is(err, cluster.ErrNotLeader) {
		return err
	}
	return fmt.Errorf("%w: %v", ErrUnreachable, err)
}

func checkMemberArgs(id, addr string, needAddr bool) error {
	if id == "" {
		return fmt.Errorf("%w: id: a node id is required", ErrInvalidArgument)
	}
	if len(id) > 64 {
		return fmt.Errorf("%w: id: %d bytes, at most 64", ErrInvalidArgument, len(id))
	}
	if needAddr {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return fmt.Errorf("%w: address: %q is not host:port: %v", ErrInvalidArgument, addr, err)
		}
	}
	return nil
}

func (s *Server) Join(ctx context.Context, req *pb.JoinRequest) (*pb.JoinResponse, error) {
	if err := checkMemberArgs(req.GetId(), req.GetAddress(), true); err != nil {
		return nil, Status(err)
	}
	return onMetaLeader(ctx, s, func(meta *cluster.Meta, view *cluster.State) (*pb.JoinResponse, error) {
		if m := view.Member(req.GetId()); m != nil && m.Addr == req.GetAddress() {
			return &pb.JoinResponse{Epoch: view.Epoch}, nil
		}
		if view.IsRemoved(req.GetId()) {
			return nil, fmt.Errorf("%w: node %s was removed from cluster %s; a removed id cannot join again: start the node with a new --id and an empty --data-dir", ErrConflict, req.GetId(), view.ClusterID)
		}
		if err := s.adopt(ctx, req.GetId(), req.GetAddress(), view); err != nil {
			return nil, err
		}
		next, err := meta.Propose(ctx, cluster.Command{Op: cluster.OpJoin, ID: req.GetId(), Addr: req.GetAddress(), At: time.Now().UnixNano()})
		if err != nil {
			return nil, proposed(err)
		}
		s.log.Info("node joined", "member", req.GetId(), "addr", req.GetAddress(), "epoch", next.Epoch)
		return &pb.JoinResponse{Epoch: next.Epoch}, nil
	}, func(ctx context.Context, c pb.AdminClient) (*pb.JoinResponse, error) { return c.Join(ctx, req) })
}

// adopt hands the joining node at addr the cluster's identity and metadata.
func (s *Server) adopt(ctx context.Context, id, addr string, view *cluster.State) error {
	enc, err := view.Encode()
	if err != nil {
		return err
	}
	conn, err := s.n.Dial(addr)
	if err != nil {
		return fmt.Errorf("%w: node %s at %s: %v", ErrUnreachable, id, addr, err)
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err = pb.NewAdminClient(conn).Adopt(cctx, &pb.AdoptRequest{ClusterId: view.ClusterID, NodeId: id, Address: addr, State: enc})
	if err != nil {
		st := status.Convert(err)
		cond := ErrConflict
		if st.Code() == codes.Unavailable || st.Code() == codes.DeadlineExceeded {
			cond = ErrUnreachable
		}
		return fmt.Errorf("%w: node %s at %s did not accept to join: %s", cond, id, addr, st.Message())
	}
	return nil
}

func (s *Server) Leave(ctx context.Context, req *pb.LeaveRequest) (*pb.LeaveResponse, error) {
	if err := checkMemberArgs(req.GetId(), "", false); err != nil {
		return nil, Status(err)
	}
	return onMetaLeader(ctx, s, func(meta *cluster.Meta, view *cluster.State) (*pb.LeaveResponse, error) {
		if view.Member(req.GetId()) == nil {
			if view.IsRemoved(req.GetId()) {
				return &pb.LeaveResponse{Epoch: view.Epoch}, nil
			}
			return nil, fmt.Errorf("id: node %s is %w of cluster %s", req.GetId(), ErrNotMember, view.ClusterID)
		}
		next, err := meta.Propose(ctx, cluster.Command{Op: cluster.OpSetState, ID: req.GetId(), State: cluster.Leaving, At: time.Now().UnixNano()})
		if err != nil {
			return nil, proposed(err)
		}
		s.log.Info("node leaving", "member", req.GetId(), "epoch", next.Epoch)
		return &pb.LeaveResponse{Epoch: next.Epoch}, nil
	}, func(ctx context.Context, c pb.AdminClient) (*pb.LeaveResponse, error) { return c.Leave(ctx, req) })
}

// Split records the partition count the cluster splits towards; the
// metadata leader's manager then splits one partition at a time.
func (s *Server) Split(ctx context.Context, req *pb.SplitRequest) (*pb.SplitResponse, error) {
	if n := req.GetPartitions(); n == 0 || n > ring.MaxPartitions {
		return nil, Status(fmt.Errorf("%w: partitions: %d, want 1 to %d", ErrInvalidArgument, n, ring.MaxPartitions))
	}
	return onMetaLeader(ctx, s, func(meta *cluster.Meta, view *cluster.State) (*pb.SplitResponse, error) {
		if int(req.GetPartitions()) < view.Partitions {
			return nil, fmt.Errorf("%w: partitions: %d, the cluster has %d, and partitions never merge", ErrInvalidArgument, req.GetPartitions(), view.Partitions)
		}
		next, err := meta.Propose(ctx, cluster.Command{Op: cluster.OpSplitTarget, Count: int(req.GetPartitions())})
		if err != nil {
			return nil, proposed(err)
		}
		s.log.Info("split target", "partitions", next.Partitions, "target", next.SplitTarget)
		return &pb.SplitResponse{Partitions: uint32(next.Partitions), Target: uint32(next.SplitTarget)}, nil
	}, func(ctx context.Context, c pb.AdminClient) (*pb.SplitResponse, error) { return c.Split(ctx, req) })
}

func (s *Server) Heartbeat(_ context.Context, req *pb.HeartbeatRequest) (*pb.HeartbeatResponse, error) {
	resp, err := s.heartbeat(req)
	return resp, Status(err)
}

func (s *Server) heartbeat(req *pb.HeartbeatRequest) (*pb.HeartbeatResponse, error) {
	// Any member refuses a removed node: one removed from the metadata
	// group no longer learns who leads it.
	if v := s.n.View(); v != nil && v.IsRemoved(req.GetNodeId()) {
		return nil, removed(req.GetNodeId(), v.ClusterID)
	}
	meta := s.n.Meta()
	if meta == nil || !meta.IsLeader() {
		return nil, fmt.Errorf("%w: this node does not lead the metadata group", ErrNoMetaLeader)
	}
	view := meta.State()
	switch {
	case view == nil:
		return nil, fmt.Errorf("%w: metadata not initialized yet", ErrNoMetaLeader)
	case req.GetClusterId() != view.ClusterID:
		return nil, fmt.Errorf("%w: cluster id mismatch: this is cluster %s, the heartbeat is from cluster %q", ErrRefused, view.ClusterID, req.GetClusterId())
	case view.IsRemoved(req.GetNodeId()):
		return nil, removed(req.GetNodeId(), view.ClusterID)
	case view.Member(req.GetNodeId()) == nil:
		return nil, fmt.Errorf("node_id: %s is %w of cluster %s", req.GetNodeId(), ErrNotMember, view.ClusterID)
	}
	if !s.n.Heard(req.GetNodeId()) {
		return nil, fmt.Errorf("%w: the control loop is starting", ErrNoMetaLeader)
	}
	return &pb.HeartbeatResponse{Epoch: view.Epoch}, nil
}

func removed(id, clusterID string) error {
	return fmt.Errorf("%w: node %s was removed from cluster %s (it left, or its replicas were re-created elsewhere); to use this machine again, wipe its data dir and join it with a new id", ErrRefused, id, clusterID)
}

func (s *Server) Adopt(_ context.Context, req *pb.AdoptRequest) (*pb.AdoptResponse, error) {
	resp, err := s.adopted(req)
	return resp, Status(err)
}

func (s *Server) adopted(req *pb.AdoptRequest) (*pb.AdoptResponse, error) {
	n := s.n
	if req.GetNodeId() != n.ID() {
		return nil, fmt.Errorf("%w: node_id: this node was started as %q, not %q", ErrInvalidArgument, n.ID(), req.GetNodeId())
	}
	if req.GetAddress() != "" && req.GetAddress() != n.Advertise() {
		return nil, fmt.Errorf("%w: address: this node advertises %s to its peers, not %s: join it with that address, or restart it with --advertise-addr %s", ErrConflict, n.Advertise(), req.GetAddress(), req.GetAddress())
	}
	if v := n.View(); v != nil {
		if v.ClusterID == req.GetClusterId() {
			return &pb.AdoptResponse{}, nil
		}
		return nil, fmt.Errorf("%w: node %s already belongs to cluster %s, not %s", ErrConflict, n.ID(), v.ClusterID, req.GetClusterId())
	}
	view, err := cluster.Decode(req.GetState())
	if err != nil {
		return nil, fmt.Errorf("%w: state: %v", ErrInvalidArgument, err)
	}
	if view.ClusterID != req.GetClusterId() {
		return nil, fmt.Errorf("%w: state: belongs to cluster %s, the request names %s", ErrInvalidArgument, view.ClusterID, req.GetClusterId())
	}
	if err := n.Adopt(view); err != nil {
		return nil, fmt.Errorf("joining cluster %s: %w", view.ClusterID, err)
	}
	s.log.Info("adopted into a cluster", "cluster", view.ClusterID, "epoch", view.Epoch)
	return &pb.AdoptResponse{}, nil
}

func (s *Server) Reconfigure(ctx context.Context, req *pb.ReconfigureRequest) (*pb.ReconfigureResponse, error) {
	resp, err := s.reconfigure(ctx, req)
	return resp, Status(err)
}

func (s *Server) reconfigure(ctx context.Context, req *pb.ReconfigureRequest) (*pb.ReconfigureResponse, error) {
	r, err := s.replica(req.GetPartition())
	if err != nil {
		return nil, err
	}
	if !r.IsPrimary() {
		id, addr := r.Leader()
		return nil, &shard.NotPrimaryError{Partition: req.GetPartition(), LeaderID: string(id), LeaderAddr: string(addr)}
	}
	if op := req.GetOp(); op != pb.ReconfigureRequest_OP_NONE && op != pb.ReconfigureRequest_OP_SPLIT && req.GetId() == "" {
		return nil, fmt.Errorf("%w: id: the replica to change is required", ErrInvalidArgument)
	}
	rf := r.Raft()
	id, addr := raft.ServerID(req.GetId()), raft.ServerAddress(req.GetAddress())
	var f raft.Future
	switch req.GetOp() {
	case pb.ReconfigureRequest_OP_NONE:
	case pb.ReconfigureRequest_OP_ADD_LEARNER:
		f = rf.AddNonvoter(id, addr, req.GetConfigIndex(), reconfigureTimeout)
	case pb.ReconfigureRequest_OP_PROMOTE:
		f = rf.AddVoter(id, addr, req.GetConfigIndex(), reconfigureTimeout)
	case pb.ReconfigureRequest_OP_REMOVE:
		f = rf.RemoveServer(id, req.GetConfigIndex(), reconfigureTimeout)
	case pb.ReconfigureRequest_OP_TRANSFER_LEADERSHIP:
		f = rf.LeadershipTransferToServer(id, addr)
	case pb.ReconfigureRequest_OP_SPLIT:
		if err := split(ctx, r, req); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("%w: op: unknown operation %d", ErrInvalidArgument, req.GetOp())
	}
	if f != nil {
		if err := f.Error(); err != nil {
			return nil, fmt.Errorf("%w: partition %d: %s %s: %v", ErrReconfigure, req.GetPartition(), req.GetOp(), req.GetId(), err)
		}
	}
	cf := rf.GetConfiguration()
	if err := cf.Error(); err != nil {
		return nil, fmt.Errorf("%w: partition %d: configuration: %v", ErrUnreachable, req.GetPartition(), err)
	}
	resp := &pb.ReconfigureResponse{ConfigIndex: cf.Index(), CommitIndex: rf.CommitIndex()}
	for _, sv := range cf.Configuration().Servers {
		resp.Servers = append(resp.Servers, &pb.GroupMember{Id: string(sv.ID), Address: string(sv.Address), Voter: sv.Suffrage == raft.Voter})
	}
	return resp, nil
}
