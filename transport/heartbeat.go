package transport

import (
	"context"
	"errors"
	"io"
	"sync"

	"github.com/hashicorp/raft"

	pb "github.com/ringkv/ringkv/proto/ringkvpb"
)

// heartbeatStream carries one group's heartbeats to one peer over a
// long-lived AppendEntriesPipeline stream, which the peer already answers
// through raft's heartbeat fast path. raft sends a heartbeat every
// HeartbeatTimeout/10 per group and follower; as unary RPCs each cost a new
// HTTP/2 stream, headers, trailers and interceptors on both sides, and made
// up most of an idle node's CPU. Heartbeats keep a stream of their own,
// apart from the replication pipeline, so that they never wait behind
// appends held up by the follower's disk (hashicorp/raft issue 282).
type heartbeatStream struct {
	// mu holds one heartbeat at a time on the stream: raft has one
	// heartbeat goroutine per follower, but the one of an ended leadership
	// term may still be sending when the next term's starts.
	mu     sync.Mutex
	stream pb.Raft_AppendEntriesPipelineClient
	cancel context.CancelCauseFunc
	dog    *watchdog
}

// heartbeat sends one heartbeat to target over the group's stream to it,
// opening the stream first if there is none, and waits for the answer, all
// within Options.Timeout. After any failure the stream is dropped and the
// next heartbeat opens a new one.
func (g *Group) heartbeat(target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	s := g.heartbeatStream(target)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stream == nil {
		var ctx context.Context
		ctx, s.cancel = context.WithCancelCause(g.ctx)
		s.dog = newWatchdog(ctx, s.cancel, g.node.opts.Timeout)
	}
	req := appendEntriesRequestToProto(g.partition, args)
	var out *pb.AppendEntriesResponse
	err := s.dog.run(func() error {
		if s.stream == nil {
			client, err := g.node.client(target)
			if err != nil {
				return err
			}
			if s.stream, err = client.AppendEntriesPipeline(s.dog.ctx); err != nil {
				return err
			}
		}
		// Send answers io.EOF when the peer ended the stream; Recv then
		// returns the status it ended it with.
		if err := s.stream.Send(req); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		var err error
		out, err = s.stream.Recv()
		return err
	})
	if err != nil {
		s.cancel(nil)
		s.stream = nil
		return g.rpcError("AppendEntries", target, err)
	}
	*resp = appendEntriesResponseFromProto(out)
	return nil
}

func (g *Group) heartbeatStream(target raft.ServerAddress) *heartbeatStream {
	g.heartbeatsMu.Lock()
	defer g.heartbeatsMu.Unlock()
	s, ok := g.heartbeats[target]
	if !ok {
		if g.heartbeats == nil {
			g.heartbeats = make(map[raft.ServerAddress]*heartbeatStream)
		}
		s = new(heartbeatStream)
		g.heartbeats[target] = s
	}
	return s
}
