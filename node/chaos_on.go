//go:build chaos

package node

import (
	"context"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/ringkv/ringkv/proto/ringkvpb"
)

// The fault layer of test binaries (go build -tags chaos): an interceptor on
// the Raft transport's peer connections fails every call and stream message
// to a blocked peer, as a cut network would, and the Chaos gRPC service sets
// the blocked peers. The process-wide set is fine: one process is one node.
var blocked struct {
	sync.RWMutex
	addrs map[string]bool
}

func isBlocked(target string) bool {
	blocked.RLock()
	defer blocked.RUnlock()
	return blocked.addrs[target]
}

func errCut(target string) error {
	return status.Errorf(codes.Unavailable, "chaos: network to %s is cut", target)
}

func chaosDialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			if isBlocked(cc.Target()) {
				return errCut(cc.Target())
			}
			return invoker(ctx, method, req, reply, cc, opts...)
		}),
		grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			if isBlocked(cc.Target()) {
				return nil, errCut(cc.Target())
			}
			s, err := streamer(ctx, desc, cc, method, opts...)
			if err != nil {
				return nil, err
			}
			return &cutStream{ClientStream: s, target: cc.Target()}, nil
		}),
	}
}

// cutStream breaks an open stream once its peer is blocked.
type cutStream struct {
	grpc.ClientStream
	target string
}

func (s *cutStream) SendMsg(m any) error {
	if isBlocked(s.target) {
		return errCut(s.target)
	}
	return s.ClientStream.SendMsg(m)
}

func (s *cutStream) RecvMsg(m any) error {
	if err := s.ClientStream.RecvMsg(m); err != nil {
		return err
	}
	if isBlocked(s.target) {
		return errCut(s.target)
	}
	return nil
}

type chaosServer struct {
	pb.UnimplementedChaosServer
}

func (chaosServer) Partition(_ context.Context, req *pb.PartitionRequest) (*pb.PartitionResponse, error) {
	addrs := map[string]bool{}
	for _, a := range req.GetBlockedAddrs() {
		addrs[a] = true
	}
	blocked.Lock()
	blocked.addrs = addrs
	blocked.Unlock()
	return &pb.PartitionResponse{}, nil
}

func registerChaos(s grpc.ServiceRegistrar) { pb.RegisterChaosServer(s, chaosServer{}) }
