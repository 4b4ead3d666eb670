package node

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ringkv/ringkv/cluster"
	pb "github.com/ringkv/ringkv/proto/ringkvpb"
)

// A cluster's identity is fixed at creation: a hash of its initial members,
// partition count and cluster token, which every initial node computes
// alike from the same --peers and --cluster-token (as etcd derives its
// cluster id from --initial-cluster and --initial-cluster-token); a joining
// node is handed it by Adopt. Every Raft RPC carries the
// sender's cluster id and node id, and a node refuses RPCs from another
// cluster, from a node removed from this one, and any while it belongs to no
// cluster yet, so a node pointed at another cluster's members — or a stale
// node that was replaced — cannot join its groups or disturb them.
const (
	clusterIDHeader = "ringkv-cluster-id"
	nodeIDHeader    = "ringkv-node-id"
)

func clusterID(peers []Peer, partitions int, token string) string {
	members := make([]string, len(peers))
	for i, p := range peers {
		members[i] = p.ID + "=" + p.Addr
	}
	sort.Strings(members)
	h := xxhash.New()
	h.WriteString(strings.Join(members, ","))
	h.Write(binary.BigEndian.AppendUint32(nil, uint32(partitions)))
	h.WriteString(token)
	return fmt.Sprintf("%016x", h.Sum64())
}

// identityDialOptions stamp outgoing Raft RPCs with the cluster id and the
// node id.
func (n *Node) identityDialOptions() []grpc.DialOption {
	stamp := func(ctx context.Context) context.Context {
		return metadata.AppendToOutgoingContext(ctx, clusterIDHeader, n.clusterID(), nodeIDHeader, n.cfg.ID)
	}
	return []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			return invoker(stamp(ctx), method, req, reply, cc, opts...)
		}),
		grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			return streamer(stamp(ctx), desc, cc, method, opts...)
		}),
	}
}

// identityServerOptions refuse Raft RPCs stamped with another cluster's id
// or a removed node's id.
func (n *Node) identityServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			if err := n.checkIdentity(ctx, info.FullMethod); err != nil {
				return nil, err
			}
			return handler(ctx, req)
		}),
		grpc.ChainStreamInterceptor(n.checkStreamIdentity),
	}
}

// raftPrefix starts the full method name of every Raft RPC.
var raftPrefix = "/" + pb.Raft_ServiceDesc.ServiceName + "/"

func (n *Node) checkIdentity(ctx context.Context, method string) error {
	if !strings.HasPrefix(method, raftPrefix) {
		return nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	return n.admit(md.Get(clusterIDHeader), md.Get(nodeIDHeader))
}

// admit refuses a sender that stamped another cluster's id, or the id of a
// node removed from this one.
func (n *Node) admit(clusterIDs, from []string) error {
	view := n.view.Load()
	if view == nil {
		return status.Errorf(codes.FailedPrecondition, "node %s belongs to no cluster yet: it waits to be added with kvctl join", n.cfg.ID)
	}
	if len(clusterIDs) != 1 || clusterIDs[0] != view.ClusterID {
		return status.Errorf(codes.PermissionDenied, "cluster id mismatch: this node belongs to cluster %s, the request to cluster %q", view.ClusterID, strings.Join(clusterIDs, ","))
	}
	if len(from) == 1 && view.IsRemoved(from[0]) {
		return status.Errorf(codes.PermissionDenied, "node %s was removed from cluster %s; it cannot take part again", from[0], view.ClusterID)
	}
	return nil
}

// checkStreamIdentity checks a Raft stream when it opens and again on every
// message, against the view of the moment: heartbeat and pipeline streams
// live as long as their peer does, so a node removed after it opened one
// would otherwise go on being heard — a removed metadata leader kept its
// followers from electing a new one that way. The sender's headers are
// read once, at open.
func (n *Node) checkStreamIdentity(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if !strings.HasPrefix(info.FullMethod, raftPrefix) {
		return handler(srv, ss)
	}
	md, _ := metadata.FromIncomingContext(ss.Context())
	clusterIDs, from := md.Get(clusterIDHeader), md.Get(nodeIDHeader)
	if err := n.admit(clusterIDs, from); err != nil {
		return err
	}
	return handler(srv, &checkedStream{ServerStream: ss, check: func() error { return n.admit(clusterIDs, from) }})
}

type checkedStream struct {
	grpc.ServerStream
	check func() error
}

func (s *checkedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return s.check()
}

// checkPeers refuses to create a cluster whose members already belong to
// another: every peer that answers must report no cluster or this one.
// Peers that do not answer within a second are starting too, or down; the
// RPC check covers them later.
func checkPeers(self string, s *cluster.State) error {
	var wg sync.WaitGroup
	errs := make([]error, len(s.Members))
	for i, p := range s.Members {
		if p.ID == self {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := grpc.NewClient(p.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				errs[i] = fmt.Errorf("--peers: %s: %w", p.ID, err)
				return
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			st, err := pb.NewAdminClient(conn).Status(ctx, &pb.StatusRequest{})
			if err == nil && st.GetClusterId() != "" && st.GetClusterId() != s.ClusterID {
				errs[i] = fmt.Errorf("peer %s at %s belongs to cluster %s (as node %s), not to the cluster %s these --peers describe; refusing to start",
					p.ID, p.Addr, st.GetClusterId(), st.GetNodeId(), s.ClusterID)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// clusterID is the node's cluster, "" while it belongs to none.
func (n *Node) clusterID() string {
	if v := n.view.Load(); v != nil {
		return v.ClusterID
	}
	return ""
}
