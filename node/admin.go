package node

import (
	"context"
	"errors"
	"net"
	"slices"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ringkv/ringkv/cluster"
	pb "github.com/ringkv/ringkv/proto/ringkvpb"
	"github.com/ringkv/ringkv/ring"
	"github.com/ringkv/ringkv/router"
	"github.com/ringkv/ringkv/shard"
)

// admin implements pb.AdminServer.
type admin struct {
	pb.UnimplementedAdminServer
	n *Node
}

func (a *admin) Status(context.Context, *pb.StatusRequest) (*pb.StatusResponse, error) {
	n := a.n
	resp := &pb.StatusResponse{NodeId: n.cfg.ID, Address: n.advertise, MetricsAddress: n.MetricsAddr(), ClusterId: n.clusterID()}
	if v := n.view.Load(); v != nil {
		resp.Epoch = v.Epoch
	}
	if meta := n.metaMember(); meta != nil {
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
		})
	}
	return resp, nil
}

// clusterID is the node's cluster, "" while it belongs to none.
func (n *Node) clusterID() string {
	if v := n.view.Load(); v != nil {
		return v.ClusterID
	}
	return ""
}

func (a *admin) ClusterMap(context.Context, *pb.ClusterMapRequest) (*pb.ClusterMapResponse, error) {
	n := a.n
	view := n.view.Load()
	if view == nil {
		return nil, status.Errorf(codes.FailedPrecondition, "node %s belongs to no cluster yet", n.cfg.ID)
	}
	asg := view.Placement()
	resp := &pb.ClusterMapResponse{Partitions: uint32(view.Partitions), Epoch: view.Epoch}
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
		if r := n.Replica(p); r != nil {
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

func (a *admin) Reoffer(ctx context.Context, req *pb.ReofferRequest) (*pb.ReofferResponse, error) {
	r := a.n.Replica(ring.PartitionID(req.GetPartition()))
	if r == nil {
		return nil, status.Errorf(codes.NotFound, "partition %d: not hosted on node %s", req.GetPartition(), a.n.cfg.ID)
	}
	if err := r.Reoffer(ctx, req.GetEntry()); err != nil {
		return nil, router.Status(err)
	}
	return &pb.ReofferResponse{}, nil
}

// onMetaLeader runs local on this node if it leads the metadata group, or
// sends the request to the leader with remote.
func onMetaLeader[T any](ctx context.Context, n *Node, local func() (T, error), remote func(pb.AdminClient) (T, error)) (T, error) {
	var zero T
	if n.metaMember() == nil {
		return zero, status.Errorf(codes.FailedPrecondition, "node %s belongs to no cluster yet", n.cfg.ID)
	}
	if n.metaMember().IsLeader() {
		return local()
	}
	id, addr := n.metaMember().Leader()
	if id == "" {
		return zero, status.Error(codes.Unavailable, "the metadata group has no leader; retry")
	}
	conn, err := n.pool.Dial(string(addr))
	if err != nil {
		return zero, err
	}
	return remote(pb.NewAdminClient(conn))
}

// errMetaBehind: a new metadata leader has not applied the metadata yet.
var errMetaBehind = status.Error(codes.Unavailable, "the metadata leader has not caught up yet; retry")

// proposeStatus maps a metadata proposal's error to a gRPC status.
func proposeStatus(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, cluster.ErrRefused):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, cluster.ErrNotLeader):
		return status.Error(codes.Unavailable, err.Error())
	}
	return status.Error(codes.Unavailable, err.Error())
}

func checkMemberArgs(id, addr string, needAddr bool) error {
	if id == "" {
		return status.Error(codes.InvalidArgument, "id: a node id is required")
	}
	if len(id) > 64 {
		return status.Errorf(codes.InvalidArgument, "id: %d bytes, at most 64", len(id))
	}
	if needAddr {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return status.Errorf(codes.InvalidArgument, "address: %q is not host:port: %v", addr, err)
		}
	}
	return nil
}

func (a *admin) Join(ctx context.Context, req *pb.JoinRequest) (*pb.JoinResponse, error) {
	if err := checkMemberArgs(req.GetId(), req.GetAddress(), true); err != nil {
		return nil, err
	}
	n := a.n
	return onMetaLeader(ctx, n, func() (*pb.JoinResponse, error) {
		view := n.metaMember().State()
		if view == nil {
			return nil, errMetaBehind
		}
		if m := view.Member(req.GetId()); m != nil && m.Addr == req.GetAddress() {
			return &pb.JoinResponse{Epoch: view.Epoch}, nil
		}
		if view.IsRemoved(req.GetId()) {
			return nil, status.Errorf(codes.FailedPrecondition, "node %s was removed from cluster %s; a removed id cannot join again: start the node with a new --id and an empty --data-dir", req.GetId(), view.ClusterID)
		}
		if err := n.adopt(ctx, req.GetId(), req.GetAddress(), view); err != nil {
			return nil, err
		}
		next, err := n.metaMember().Propose(ctx, cluster.Command{Op: cluster.OpJoin, ID: req.GetId(), Addr: req.GetAddress(), At: time.Now().UnixNano()})
		if err != nil {
			return nil, proposeStatus(err)
		}
		n.log.Info("node joined", "member", req.GetId(), "addr", req.GetAddress(), "epoch", next.Epoch)
		return &pb.JoinResponse{Epoch: next.Epoch}, nil
	}, func(c pb.AdminClient) (*pb.JoinResponse, error) { return c.Join(ctx, req) })
}

// adopt hands the joining node at addr the cluster's identity and metadata.
func (n *Node) adopt(ctx context.Context, id, addr string, view *cluster.State) error {
	enc, err := view.Encode()
	if err != nil {
		return err
	}
	conn, err := n.pool.Dial(addr)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err = pb.NewAdminClient(conn).Adopt(cctx, &pb.AdoptRequest{ClusterId: view.ClusterID, NodeId: id, Address: addr, State: enc})
	if err != nil {
		st := status.Convert(err)
		code := st.Code()
		if code != codes.Unavailable && code != codes.DeadlineExceeded {
			code = codes.FailedPrecondition
		}
		return status.Errorf(code, "node %s at %s did not accept to join: %s", id, addr, st.Message())
	}
	return nil
}

func (a *admin) Leave(ctx context.Context, req *pb.LeaveRequest) (*pb.LeaveResponse, error) {
	if err := checkMemberArgs(req.GetId(), "", false); err != nil {
		return nil, err
	}
	n := a.n
	return onMetaLeader(ctx, n, func() (*pb.LeaveResponse, error) {
		view := n.metaMember().State()
		if view == nil {
			return nil, errMetaBehind
		}
		if view.Member(req.GetId()) == nil {
			if view.IsRemoved(req.GetId()) {
				return &pb.LeaveResponse{Epoch: view.Epoch}, nil
			}
			return nil, status.Errorf(codes.NotFound, "id: node %s is not a member of cluster %s", req.GetId(), view.ClusterID)
		}
		next, err := n.metaMember().Propose(ctx, cluster.Command{Op: cluster.OpSetState, ID: req.GetId(), State: cluster.Leaving, At: time.Now().UnixNano()})
		if err != nil {
			return nil, proposeStatus(err)
		}
		n.log.Info("node leaving", "member", req.GetId(), "epoch", next.Epoch)
		return &pb.LeaveResponse{Epoch: next.Epoch}, nil
	}, func(c pb.AdminClient) (*pb.LeaveResponse, error) { return c.Leave(ctx, req) })
}

func (a *admin) Heartbeat(_ context.Context, req *pb.HeartbeatRequest) (*pb.HeartbeatResponse, error) {
	n := a.n
	// Any member refuses a removed node: one removed from the metadata
	// group no longer learns who leads it.
	if v := n.view.Load(); v != nil && v.IsRemoved(req.GetNodeId()) {
		return nil, removedStatus(req.GetNodeId(), v.ClusterID)
	}
	if n.metaMember() == nil || !n.metaMember().IsLeader() {
		return nil, status.Error(codes.Unavailable, "not the metadata leader")
	}
	view := n.metaMember().State()
	switch {
	case view == nil:
		return nil, status.Error(codes.Unavailable, "metadata not initialized yet")
	case req.GetClusterId() != view.ClusterID:
		return nil, status.Errorf(codes.PermissionDenied, "cluster id mismatch: this is cluster %s, the heartbeat is from cluster %q", view.ClusterID, req.GetClusterId())
	case view.IsRemoved(req.GetNodeId()):
		return nil, removedStatus(req.GetNodeId(), view.ClusterID)
	case view.Member(req.GetNodeId()) == nil:
		return nil, status.Errorf(codes.NotFound, "node_id: %s is not a member of cluster %s", req.GetNodeId(), view.ClusterID)
	}
	n.mgr.heard(req.GetNodeId())
	return &pb.HeartbeatResponse{Epoch: view.Epoch}, nil
}

func removedStatus(id, clusterID string) error {
	return status.Errorf(codes.PermissionDenied, "node %s was removed from cluster %s (it left, or its replicas were re-created elsewhere); to use this machine again, wipe its data dir and join it with a new id", id, clusterID)
}

func (a *admin) Adopt(_ context.Context, req *pb.AdoptRequest) (*pb.AdoptResponse, error) {
	n := a.n
	if req.GetNodeId() != n.cfg.ID {
		return nil, status.Errorf(codes.InvalidArgument, "node_id: this node was started as %q, not %q", n.cfg.ID, req.GetNodeId())
	}
	if req.GetAddress() != "" && req.GetAddress() != n.advertise {
		return nil, status.Errorf(codes.FailedPrecondition, "address: this node advertises %s to its peers, not %s: join it with that address, or restart it with --advertise-addr %s", n.advertise, req.GetAddress(), req.GetAddress())
	}
	if cur := n.clusterID(); cur != "" {
		if cur == req.GetClusterId() {
			return &pb.AdoptResponse{}, nil
		}
		return nil, status.Errorf(codes.FailedPrecondition, "node %s already belongs to cluster %s, not %s", n.cfg.ID, cur, req.GetClusterId())
	}
	view, err := cluster.Decode(req.GetState())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "state: %v", err)
	}
	if view.ClusterID != req.GetClusterId() {
		return nil, status.Errorf(codes.InvalidArgument, "state: belongs to cluster %s, the request names %s", view.ClusterID, req.GetClusterId())
	}
	if err := n.startCluster(view, false); err != nil {
		return nil, status.Errorf(codes.Internal, "joining cluster %s: %v", view.ClusterID, err)
	}
	n.log.Info("adopted into a cluster", "cluster", view.ClusterID, "epoch", view.Epoch)
	return &pb.AdoptResponse{}, nil
}

func (a *admin) Reconfigure(_ context.Context, req *pb.ReconfigureRequest) (*pb.ReconfigureResponse, error) {
	p := ring.PartitionID(req.GetPartition())
	r := a.n.Replica(p)
	if r == nil {
		return nil, status.Errorf(codes.NotFound, "partition: %d is not hosted on node %s", req.GetPartition(), a.n.cfg.ID)
	}
	rf := r.Raft()
	if !r.IsPrimary() {
		id, addr := r.Leader()
		return nil, router.Status(&shard.NotPrimaryError{Partition: uint32(p), LeaderID: string(id), LeaderAddr: string(addr)})
	}
	if req.GetOp() != pb.ReconfigureRequest_OP_NONE && req.GetId() == "" {
		return nil, status.Error(codes.InvalidArgument, "id: the replica to change is required")
	}
	id, addr := raft.ServerID(req.GetId()), raft.ServerAddress(req.GetAddress())
	const timeout = 10 * time.Second
	var f raft.Future
	switch req.GetOp() {
	case pb.ReconfigureRequest_OP_NONE:
	case pb.ReconfigureRequest_OP_ADD_LEARNER:
		f = rf.AddNonvoter(id, addr, req.GetConfigIndex(), timeout)
	case pb.ReconfigureRequest_OP_PROMOTE:
		f = rf.AddVoter(id, addr, req.GetConfigIndex(), timeout)
	case pb.ReconfigureRequest_OP_REMOVE:
		f = rf.RemoveServer(id, req.GetConfigIndex(), timeout)
	case pb.ReconfigureRequest_OP_TRANSFER_LEADERSHIP:
		f = rf.LeadershipTransferToServer(id, addr)
	default:
		return nil, status.Errorf(codes.InvalidArgument, "op: unknown operation %d", req.GetOp())
	}
	if f != nil {
		if err := f.Error(); err != nil {
			return nil, status.Errorf(codes.Aborted, "partition %d: %s %s: %v", p, req.GetOp(), req.GetId(), err)
		}
	}
	cf := rf.GetConfiguration()
	if err := cf.Error(); err != nil {
		return nil, status.Errorf(codes.Unavailable, "partition %d: configuration: %v", p, err)
	}
	resp := &pb.ReconfigureResponse{ConfigIndex: cf.Index(), CommitIndex: rf.CommitIndex()}
	for _, s := range cf.Configuration().Servers {
		resp.Servers = append(resp.Servers, &pb.GroupMember{Id: string(s.ID), Address: string(s.Address), Voter: s.Suffrage == raft.Voter})
	}
	return resp, nil
}
