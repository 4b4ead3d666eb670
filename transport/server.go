package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/ringkv/ringkv/proto/ringkvpb"
)

// server receives the Raft service's RPCs and hands each to the Group of the
// partition it names.
type server struct {
	pb.UnimplementedRaftServer
	node *Node
}

type partitioned interface {
	GetPartition() uint32
}

// serveUnary converts req, dispatches it to its partition's group and
// converts raft's answer back.
func serveUnary[PReq partitioned, Cmd, Resp, PResp any](ctx context.Context, n *Node, req PReq,
	fromProto func(PReq) *Cmd, toProto func(*Resp) PResp) (PResp, error) {
	var zero PResp
	g, err := n.lookup(req.GetPartition())
	if err != nil {
		return zero, err
	}
	resp, err := dispatch[Resp](ctx, g, fromProto(req), nil)
	if err != nil {
		return zero, err
	}
	return toProto(resp), nil
}

func (s *server) AppendEntries(ctx context.Context, req *pb.AppendEntriesRequest) (*pb.AppendEntriesResponse, error) {
	return serveUnary(ctx, s.node, req, appendEntriesRequestFromProto, appendEntriesResponseToProto)
}

func (s *server) RequestVote(ctx context.Context, req *pb.RequestVoteRequest) (*pb.RequestVoteResponse, error) {
	return serveUnary(ctx, s.node, req, requestVoteRequestFromProto, requestVoteResponseToProto)
}

func (s *server) RequestPreVote(ctx context.Context, req *pb.RequestPreVoteRequest) (*pb.RequestPreVoteResponse, error) {
	return serveUnary(ctx, s.node, req, requestPreVoteRequestFromProto, requestPreVoteResponseToProto)
}

func (s *server) TimeoutNow(ctx context.Context, req *pb.TimeoutNowRequest) (*pb.TimeoutNowResponse, error) {
	return serveUnary(ctx, s.node, req, timeoutNowRequestFromProto, timeoutNowResponseToProto)
}

// AppendEntriesPipeline answers one request at a time, which keeps the
// responses in request order. Every request of a stream must name the
// partition the first one named.
func (s *server) AppendEntriesPipeline(stream pb.Raft_AppendEntriesPipelineServer) error {
	ctx := stream.Context()
	var g *Group
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		switch {
		case g == nil:
			if g, err = s.node.lookup(req.GetPartition()); err != nil {
				return err
			}
		case req.GetPartition() != g.partition:
			return status.Errorf(codes.InvalidArgument,
				"transport: pipeline of partition %d received a request for partition %d", g.partition, req.GetPartition())
		}
		resp, err := dispatch[raft.AppendEntriesResponse](ctx, g, appendEntriesRequestFromProto(req), nil)
		if err != nil {
			return err
		}
		if err := stream.Send(appendEntriesResponseToProto(resp)); err != nil {
			return err
		}
	}
}

// Heartbeats answers each batch of heartbeats with one message, a result
// per heartbeat in batch order. A heartbeat goes through raft's heartbeat
// fast path, which never waits behind the group's log; anything else in a
// batch is refused, so one slow group cannot hold up the others. Once this
// node's transport is closed, the next batch ends the stream.
func (s *server) Heartbeats(stream pb.Raft_HeartbeatsServer) error {
	ctx := stream.Context()
	for {
		batch, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		// Ending the stream lets this node's gRPC server stop gracefully;
		// the peer's next batch finds no server.
		if s.node.ctx.Err() != nil {
			return s.node.closedError()
		}
		out := &pb.HeartbeatResults{Results: make([]*pb.HeartbeatResult, len(batch.GetHeartbeats()))}
		for i, req := range batch.GetHeartbeats() {
			out.Results[i] = s.heartbeat(ctx, req)
		}
		if err := stream.Send(out); err != nil {
			return err
		}
	}
}

func (s *server) heartbeat(ctx context.Context, req *pb.AppendEntriesRequest) *pb.HeartbeatResult {
	cmd := appendEntriesRequestFromProto(req)
	var err error
	if !isHeartbeat(cmd) {
		err = status.Errorf(codes.InvalidArgument, "transport: partition %d: a Heartbeats batch carried an AppendEntries that is not a heartbeat", req.GetPartition())
	} else if g, lerr := s.node.lookup(req.GetPartition()); lerr != nil {
		err = lerr
	} else {
		var resp *raft.AppendEntriesResponse
		if resp, err = dispatch[raft.AppendEntriesResponse](ctx, g, cmd, nil); err == nil {
			return &pb.HeartbeatResult{Response: appendEntriesResponseToProto(resp)}
		}
	}
	st := status.Convert(err)
	return &pb.HeartbeatResult{Code: uint32(st.Code()), Message: st.Message()}
}

func (s *server) InstallSnapshot(stream pb.Raft_InstallSnapshotServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	req := first.GetRequest()
	if req == nil {
		return status.Error(codes.InvalidArgument, "transport: InstallSnapshot stream must start with the request")
	}
	if req.GetSize() < 0 {
		return status.Errorf(codes.InvalidArgument, "transport: InstallSnapshot size %d is negative", req.GetSize())
	}
	g, err := s.node.lookup(req.GetPartition())
	if err != nil {
		return err
	}
	body := &snapshotReader{stream: stream, remaining: req.GetSize()}
	resp, err := dispatch[raft.InstallSnapshotResponse](stream.Context(), g, installSnapshotRequestFromProto(req), body)
	// raft may still hold body if dispatch gave up; the stream must not be
	// read once this handler returns.
	body.detach()
	if err != nil {
		return err
	}
	return stream.SendAndClose(installSnapshotResponseToProto(resp))
}

// errSnapshotDetached is what raft reads from a snapshot whose RPC already
// ended.
var errSnapshotDetached = errors.New("transport: InstallSnapshot RPC ended")

// snapshotReader gives raft the data chunks of an InstallSnapshot stream as
// one io.Reader of exactly the announced size.
type snapshotReader struct {
	mu        sync.Mutex
	stream    pb.Raft_InstallSnapshotServer
	pending   []byte
	remaining int64
	detached  bool
}

func (r *snapshotReader) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.detached {
		return 0, errSnapshotDetached
	}
	if r.remaining == 0 {
		return 0, io.EOF
	}
	for len(r.pending) == 0 {
		chunk, err := r.stream.Recv()
		if errors.Is(err, io.EOF) {
			return 0, fmt.Errorf("transport: snapshot stream ended %d bytes short: %w", r.remaining, io.ErrUnexpectedEOF)
		}
		if err != nil {
			return 0, err
		}
		if chunk.GetRequest() != nil {
			return 0, status.Error(codes.InvalidArgument, "transport: InstallSnapshot request repeated inside the data")
		}
		r.pending = chunk.GetData()
	}
	if int64(len(p)) > r.remaining {
		p = p[:r.remaining]
	}
	n := copy(p, r.pending)
	r.pending = r.pending[n:]
	r.remaining -= int64(n)
	return n, nil
}

// detach waits for a Read in progress, which ends with the next chunk or
// when the stream's context is done, and makes later Reads fail.
func (r *snapshotReader) detach() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.detached = true
}
