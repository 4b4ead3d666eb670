package node

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/ringkv/ringkv/proto/ringkvpb"
	"github.com/ringkv/ringkv/ring"
	"github.com/ringkv/ringkv/router"
)

// admin implements pb.AdminServer.
type admin struct {
	pb.UnimplementedAdminServer
	n *Node
}

func (a *admin) Status(context.Context, *pb.StatusRequest) (*pb.StatusResponse, error) {
	n := a.n
	resp := &pb.StatusResponse{NodeId: n.cfg.ID, Address: n.state.addrOf(n.cfg.ID), MetricsAddress: n.MetricsAddr(), ClusterId: n.state.ClusterID}
	for _, p := range n.Partitions() {
		st := n.replicas[p].Status()
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

func (a *admin) ClusterMap(context.Context, *pb.ClusterMapRequest) (*pb.ClusterMapResponse, error) {
	n := a.n
	asg := n.state.assignment
	resp := &pb.ClusterMapResponse{Partitions: uint32(asg.Partitions()), Epoch: asg.Epoch()}
	for _, peer := range n.state.Nodes {
		resp.Nodes = append(resp.Nodes, &pb.NodeInfo{Id: peer.ID, Address: peer.Addr})
	}
	for p := range ring.PartitionID(asg.Partitions()) {
		pm := &pb.PartitionMap{Partition: uint32(p), PrimaryId: string(asg.Primary(p))}
		for _, id := range asg.Replicas(p) {
			pm.Replicas = append(pm.Replicas, string(id))
		}
		if r := n.replicas[p]; r != nil {
			if id, _ := r.Leader(); id != "" {
				pm.PrimaryId = string(id)
			}
		}
		pm.PrimaryAddr = n.state.addrOf(pm.PrimaryId)
		resp.PartitionMap = append(resp.PartitionMap, pm)
	}
	return resp, nil
}

func (a *admin) Reoffer(ctx context.Context, req *pb.ReofferRequest) (*pb.ReofferResponse, error) {
	r := a.n.replicas[ring.PartitionID(req.GetPartition())]
	if r == nil {
		return nil, status.Errorf(codes.NotFound, "partition %d: not hosted on node %s", req.GetPartition(), a.n.cfg.ID)
	}
	if err := r.Reoffer(ctx, req.GetEntry()); err != nil {
		return nil, router.Status(err)
	}
	return &pb.ReofferResponse{}, nil
}
