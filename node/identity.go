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

	pb "github.com/ringkv/ringkv/proto/ringkvpb"
)

// A cluster's identity is fixed at creation: a hash of its initial members
// and partition count, which every initial node computes alike from the same
// --peers. Every Raft RPC carries the sender's cluster id, and a node
// refuses RPCs from another cluster, so a node pointed at another cluster's
// members cannot join its groups or disturb them.
const clusterIDHeader = "ringkv-cluster-id"

func clusterID(peers []Peer, partitions int) string {
	members := make([]string, len(peers))
	for i, p := range peers {
		members[i] = p.ID + "=" + p.Addr
	}
	sort.Strings(members)
	h := xxhash.New()
	h.WriteString(strings.Join(members, ","))
	h.Write(binary.BigEndian.AppendUint32(nil, uint32(partitions)))
	return fmt.Sprintf("%016x", h.Sum64())
}

// identityDialOptions stamp outgoing Raft RPCs with the cluster id.
func identityDialOptions(id string) []grpc.DialOption {
	stamp := func(ctx context.Context) context.Context {
		return metadata.AppendToOutgoingContext(ctx, clusterIDHeader, id)
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

// identityServerOptions refuse Raft RPCs stamped with another cluster's id.
func identityServerOptions(id string) []grpc.ServerOption {
	raftPrefix := "/" + pb.Raft_ServiceDesc.ServiceName + "/"
	check := func(ctx context.Context, method string) error {
		if !strings.HasPrefix(method, raftPrefix) {
			return nil
		}
		md, _ := metadata.FromIncomingContext(ctx)
		got := md.Get(clusterIDHeader)
		if len(got) != 1 || got[0] != id {
			return status.Errorf(codes.PermissionDenied, "cluster id mismatch: this node belongs to cluster %s, the request to cluster %q", id, strings.Join(got, ","))
		}
		return nil
	}
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			if err := check(ctx, info.FullMethod); err != nil {
				return nil, err
			}
			return handler(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			if err := check(ss.Context(), info.FullMethod); err != nil {
				return err
			}
			return handler(srv, ss)
		}),
	}
}

// checkPeers refuses to create a cluster whose members already belong to
// another: every peer that answers must report no cluster or this one.
// Peers that do not answer within a second are starting too, or down; the
// RPC check covers them later.
func checkPeers(s *clusterState) error {
	var wg sync.WaitGroup
	errs := make([]error, len(s.Nodes))
	for i, p := range s.Nodes {
		if p.ID == s.NodeID {
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
