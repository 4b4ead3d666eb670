package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/ringkv/ringkv/proto/ringkvpb"
)

// Group is the raft.Transport of one partition's Raft group on a Node.
type Group struct {
	node      *Node
	partition uint32
	consumer  chan raft.RPC

	// ctx is the parent of every outgoing RPC of the group; Close cancels
	// it, and its Done channel tells incoming RPCs the group is gone.
	ctx    context.Context
	cancel context.CancelFunc

	heartbeatMu sync.Mutex
	heartbeatFn func(raft.RPC)

	// expedited counts Expedite calls not yet done.
	expedited atomic.Int32
}

var (
	_ raft.Transport   = (*Group)(nil)
	_ raft.WithPreVote = (*Group)(nil)
	_ raft.WithClose   = (*Group)(nil)
)

func newGroup(n *Node, partition uint32) *Group {
	ctx, cancel := context.WithCancel(context.Background())
	return &Group{
		node:      n,
		partition: partition,
		consumer:  make(chan raft.RPC),
		ctx:       ctx,
		cancel:    cancel,
	}
}

// Consumer implements raft.Transport.
func (g *Group) Consumer() <-chan raft.RPC { return g.consumer }

// LocalAddr implements raft.Transport.
func (g *Group) LocalAddr() raft.ServerAddress { return g.node.local }

// EncodePeer implements raft.Transport.
func (g *Group) EncodePeer(_ raft.ServerID, addr raft.ServerAddress) []byte { return []byte(addr) }

// DecodePeer implements raft.Transport.
func (g *Group) DecodePeer(buf []byte) raft.ServerAddress { return raft.ServerAddress(buf) }

// SetHeartbeatHandler implements raft.Transport.
func (g *Group) SetHeartbeatHandler(fn func(raft.RPC)) {
	g.heartbeatMu.Lock()
	defer g.heartbeatMu.Unlock()
	g.heartbeatFn = fn
}

// Close unregisters the partition from the node and cancels the group's
// outgoing RPCs. It leaves the node, its connections and other groups alone.
func (g *Group) Close() error {
	g.cancel()
	g.node.unregister(g)
	return nil
}

// AppendEntries implements raft.Transport.
func (g *Group) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	start := time.Now()
	var err error
	if isHeartbeat(args) {
		err = g.heartbeat(target, args, resp)
	} else {
		err = call(g, "AppendEntries", target, appendEntriesRequestToProto(g.partition, args),
			pb.RaftClient.AppendEntries, appendEntriesResponseFromProto, resp)
	}
	if err == nil {
		g.observe(id, target, resp, time.Since(start))
	}
	return err
}

// RequestVote implements raft.Transport.
func (g *Group) RequestVote(_ raft.ServerID, target raft.ServerAddress, args *raft.RequestVoteRequest, resp *raft.RequestVoteResponse) error {
	return call(g, "RequestVote", target, requestVoteRequestToProto(g.partition, args),
		pb.RaftClient.RequestVote, requestVoteResponseFromProto, resp)
}

// RequestPreVote implements raft.WithPreVote.
func (g *Group) RequestPreVote(_ raft.ServerID, target raft.ServerAddress, args *raft.RequestPreVoteRequest, resp *raft.RequestPreVoteResponse) error {
	return call(g, "RequestPreVote", target, requestPreVoteRequestToProto(g.partition, args),
		pb.RaftClient.RequestPreVote, requestPreVoteResponseFromProto, resp)
}

// TimeoutNow implements raft.Transport.
func (g *Group) TimeoutNow(_ raft.ServerID, target raft.ServerAddress, args *raft.TimeoutNowRequest, resp *raft.TimeoutNowResponse) error {
	return call(g, "TimeoutNow", target, timeoutNowRequestToProto(g.partition, args),
		pb.RaftClient.TimeoutNow, timeoutNowResponseFromProto, resp)
}

// InstallSnapshot implements raft.Transport. It sends args, then data in
// chunks of Options.SnapshotChunkSize.
func (g *Group) InstallSnapshot(_ raft.ServerID, target raft.ServerAddress, args *raft.InstallSnapshotRequest, resp *raft.InstallSnapshotResponse, data io.Reader) error {
	const rpc = "InstallSnapshot"
	client, err := g.node.client(target)
	if err != nil {
		return g.rpcError(rpc, target, err)
	}
	timeout := g.node.opts.Timeout * time.Duration(max(1, args.Size/snapshotTimeoutScale))
	ctx, cancel := context.WithTimeout(g.ctx, timeout)
	defer cancel()

	stream, err := client.InstallSnapshot(ctx)
	if err != nil {
		return g.rpcError(rpc, target, err)
	}
	first := &pb.InstallSnapshotChunk{Chunk: &pb.InstallSnapshotChunk_Request{
		Request: installSnapshotRequestToProto(g.partition, args),
	}}
	if err := stream.Send(first); err != nil {
		return g.rpcError(rpc, target, streamError(stream, err))
	}
	buf := make([]byte, g.node.opts.SnapshotChunkSize)
	for {
		n, rerr := io.ReadFull(data, buf)
		if n > 0 {
			// Send has marshalled the message when it returns, so buf can
			// be refilled.
			chunk := &pb.InstallSnapshotChunk{Chunk: &pb.InstallSnapshotChunk_Data{Data: buf[:n]}}
			if err := stream.Send(chunk); err != nil {
				return g.rpcError(rpc, target, streamError(stream, err))
			}
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("transport: partition %d: %s to %s: reading snapshot: %w", g.partition, rpc, target, rerr)
		}
	}
	out, err := stream.CloseAndRecv()
	if err != nil {
		return g.rpcError(rpc, target, err)
	}
	*resp = installSnapshotResponseFromProto(out)
	return nil
}

// streamError turns the io.EOF that Send returns when the server ended the
// stream into the status the server ended it with.
func streamError(stream grpc.ClientStream, err error) error {
	if !errors.Is(err, io.EOF) {
		return err
	}
	if rerr := stream.RecvMsg(new(pb.InstallSnapshotResponse)); rerr != nil {
		return rerr
	}
	return err
}

// call runs one unary RPC to target within Options.Timeout and stores raft's
// form of the answer in resp.
func call[Req, PResp, Resp any](g *Group, rpc string, target raft.ServerAddress, req Req,
	method func(pb.RaftClient, context.Context, Req, ...grpc.CallOption) (PResp, error),
	fromProto func(PResp) Resp, resp *Resp) error {
	client, err := g.node.client(target)
	if err != nil {
		return g.rpcError(rpc, target, err)
	}
	ctx, cancel := context.WithTimeout(g.ctx, g.node.opts.Timeout)
	defer cancel()
	out, err := method(client, ctx, req)
	if err != nil {
		return g.rpcError(rpc, target, err)
	}
	*resp = fromProto(out)
	return nil
}

// rpcError names the partition, RPC and peer, and maps the conditions raft's
// callers branch on to sentinels: a closed group to raft.ErrTransportShutdown,
// a peer without the partition to ErrUnknownPartition.
func (g *Group) rpcError(rpc string, target raft.ServerAddress, err error) error {
	switch {
	case errors.Is(err, raft.ErrTransportShutdown):
	case g.ctx.Err() != nil:
		err = fmt.Errorf("%w: %w", raft.ErrTransportShutdown, err)
	case status.Code(err) == codes.NotFound:
		err = fmt.Errorf("%w: %w", ErrUnknownPartition, err)
	}
	return fmt.Errorf("transport: partition %d: %s to %s: %w", g.partition, rpc, target, err)
}

func (g *Group) observe(id raft.ServerID, target raft.ServerAddress, resp *raft.AppendEntriesResponse, rtt time.Duration) {
	if fn := g.node.opts.OnAppendResponse; fn != nil {
		fn(AppendResponse{
			Partition: g.partition,
			ID:        id,
			Addr:      target,
			LastLog:   resp.LastLog,
			Success:   resp.Success,
			RTT:       rtt,
		})
	}
}

// dispatch hands an incoming command to raft and waits for its answer, until
// the caller gives up (ctx) or the group closes; a raft that is shutting down
// drops heartbeats unanswered.
func dispatch[Resp any](ctx context.Context, g *Group, cmd any, body io.Reader) (*Resp, error) {
	respCh := make(chan raft.RPCResponse, 1)
	rpc := raft.RPC{Command: cmd, Reader: body, RespChan: respCh}

	if fn := g.heartbeatHandler(cmd); fn != nil {
		fn(rpc)
	} else {
		select {
		case g.consumer <- rpc:
		case <-g.ctx.Done():
			return nil, g.closedError()
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}

	select {
	case <-g.ctx.Done():
		return nil, g.closedError()
	case r := <-respCh:
		if r.Error != nil {
			return nil, r.Error
		}
		resp, ok := r.Response.(*Resp)
		if !ok {
			return nil, status.Errorf(codes.Internal, "transport: raft answered %T with %T", cmd, r.Response)
		}
		return resp, nil
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

func (g *Group) closedError() error {
	return status.Errorf(codes.Unavailable, "transport: partition %d on %s is closed", g.partition, g.node.local)
}

// heartbeatHandler returns raft's heartbeat fast path if cmd is a heartbeat
// and raft installed one.
func (g *Group) heartbeatHandler(cmd any) func(raft.RPC) {
	req, ok := cmd.(*raft.AppendEntriesRequest)
	if !ok || !isHeartbeat(req) {
		return nil
	}
	g.heartbeatMu.Lock()
	defer g.heartbeatMu.Unlock()
	return g.heartbeatFn
}

// isHeartbeat reports whether req is one of raft's heartbeats. The test is
// raft.NetworkTransport's.
func isHeartbeat(req *raft.AppendEntriesRequest) bool {
	leader := req.Addr
	if len(leader) == 0 {
		leader = req.Leader
	}
	return req.Term != 0 && len(leader) != 0 && req.PrevLogEntry == 0 && req.PrevLogTerm == 0 &&
		len(req.Entries) == 0 && req.LeaderCommitIndex == 0
}
