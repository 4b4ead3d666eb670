package transport

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/ringkv/ringkv/proto/ringkvpb"
)

// A heartbeater carries the heartbeats of every group of a node to one peer
// node, over one long-lived Heartbeats stream. raft sends a heartbeat every
// HeartbeatTimeout/10 per group and follower, each on its own timer; alone,
// each cost a message, a write and a few wake-ups on both nodes, which
// made up most of an idle node's CPU. A heartbeat waits up to
// Options.HeartbeatWindow for others to the same peer, and they travel as
// one message — unless its group is expedited (a leadership check that a
// read waits on), which sends everything pending at once.
type heartbeater struct {
	node   *Node
	target raft.ServerAddress
	kick   chan struct{} // capacity 1: send what is pending
	timer  *time.Timer   // kicks when the oldest pending heartbeat's window ends

	mu      sync.Mutex
	pending []*heartbeatCall

	// Only the run goroutine touches the stream.
	stream pb.Raft_HeartbeatsClient
	cancel context.CancelCauseFunc
	dog    *watchdog
}

type heartbeatCall struct {
	req  *pb.AppendEntriesRequest
	resp *pb.AppendEntriesResponse
	err  error
	done chan struct{}
}

func newHeartbeater(n *Node, target raft.ServerAddress) *heartbeater {
	h := &heartbeater{node: n, target: target, kick: make(chan struct{}, 1)}
	h.timer = time.AfterFunc(time.Hour, h.send)
	h.timer.Stop()
	go h.run()
	return h
}

// send asks the run goroutine to send what is pending.
func (h *heartbeater) send() {
	select {
	case h.kick <- struct{}{}:
	default:
	}
}

// add queues c, to go at once if now, or else within the window.
func (h *heartbeater) add(c *heartbeatCall, now bool) {
	h.mu.Lock()
	h.pending = append(h.pending, c)
	first := len(h.pending) == 1
	h.mu.Unlock()
	switch {
	case now || h.node.opts.HeartbeatWindow == 0:
		h.send()
	case first:
		h.timer.Reset(h.node.opts.HeartbeatWindow)
	}
}

// flush sends what is pending now.
func (h *heartbeater) flush() {
	h.mu.Lock()
	waiting := len(h.pending) > 0
	h.mu.Unlock()
	if waiting {
		h.send()
	}
}

func (h *heartbeater) run() {
	for {
		select {
		case <-h.node.ctx.Done():
			h.mu.Lock()
			batch := h.pending
			h.pending = nil
			h.mu.Unlock()
			h.finish(batch, nil, raft.ErrTransportShutdown)
			if h.stream != nil {
				h.cancel(nil)
			}
			return
		case <-h.kick:
		}
		h.timer.Stop()
		h.mu.Lock()
		batch := h.pending
		h.pending = nil
		h.mu.Unlock()
		if len(batch) > 0 {
			out, err := h.roundTrip(batch)
			h.finish(batch, out, err)
		}
	}
}

// roundTrip sends one batch and waits for its answer, within
// Options.Timeout, opening the stream first if there is none. After any
// failure the stream is dropped and the next batch opens a new one.
func (h *heartbeater) roundTrip(batch []*heartbeatCall) (*pb.HeartbeatResults, error) {
	if h.stream == nil {
		var ctx context.Context
		ctx, h.cancel = context.WithCancelCause(h.node.ctx)
		h.dog = newWatchdog(ctx, h.cancel, h.node.opts.Timeout)
	}
	msg := &pb.HeartbeatBatch{Heartbeats: make([]*pb.AppendEntriesRequest, len(batch))}
	for i, c := range batch {
		msg.Heartbeats[i] = c.req
	}
	var out *pb.HeartbeatResults
	err := h.dog.run(func() error {
		if h.stream == nil {
			client, err := h.node.client(h.target)
			if err != nil {
				return err
			}
			if h.stream, err = client.Heartbeats(h.dog.ctx); err != nil {
				return err
			}
		}
		// Send answers io.EOF when the peer ended the stream; Recv then
		// returns the status it ended it with.
		if err := h.stream.Send(msg); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		var err error
		out, err = h.stream.Recv()
		return err
	})
	if err == nil && len(out.GetResults()) != len(batch) {
		err = status.Errorf(codes.Internal, "transport: %d heartbeats answered with %d results", len(batch), len(out.GetResults()))
	}
	if err != nil {
		h.cancel(nil)
		h.stream = nil
		return nil, err
	}
	return out, nil
}

// finish hands each call its result, or err.
func (h *heartbeater) finish(batch []*heartbeatCall, out *pb.HeartbeatResults, err error) {
	for i, c := range batch {
		switch {
		case err != nil:
			c.err = err
		case out.Results[i].GetCode() != uint32(codes.OK):
			c.err = status.Error(codes.Code(out.Results[i].GetCode()), out.Results[i].GetMessage())
		default:
			c.resp = out.Results[i].GetResponse()
		}
		close(c.done)
	}
}

// heartbeat sends one heartbeat to target through the node's heartbeater
// for it and waits for the answer.
func (g *Group) heartbeat(target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	h, err := g.node.heartbeater(target)
	if err != nil {
		return g.rpcError("Heartbeats", target, err)
	}
	c := &heartbeatCall{req: appendEntriesRequestToProto(g.partition, args), done: make(chan struct{})}
	h.add(c, g.expedited.Load() > 0)
	select {
	case <-c.done:
	case <-g.ctx.Done():
		return g.rpcError("Heartbeats", target, g.ctx.Err())
	}
	if c.err != nil {
		return g.rpcError("Heartbeats", target, c.err)
	}
	*resp = appendEntriesResponseFromProto(c.resp)
	return nil
}

// Expedite sends the group's heartbeats without waiting for others until
// done is called, and sends every heartbeat already waiting now. A leader
// checking its leadership (raft's VerifyLeader, which a linearizable read
// waits on) sends heartbeats and needs their answers without delay.
func (g *Group) Expedite() (done func()) {
	g.expedited.Add(1)
	g.node.flushHeartbeats()
	var once sync.Once
	return func() { once.Do(func() { g.expedited.Add(-1) }) }
}

// heartbeater returns the heartbeater of target, starting it on first use.
func (n *Node) heartbeater(target raft.ServerAddress) (*heartbeater, error) {
	n.heartbeatersMu.Lock()
	defer n.heartbeatersMu.Unlock()
	if n.ctx.Err() != nil {
		return nil, raft.ErrTransportShutdown
	}
	h, ok := n.heartbeaters[target]
	if !ok {
		h = newHeartbeater(n, target)
		n.heartbeaters[target] = h
	}
	return h, nil
}

func (n *Node) flushHeartbeats() {
	n.heartbeatersMu.Lock()
	defer n.heartbeatersMu.Unlock()
	for _, h := range n.heartbeaters {
		h.flush()
	}
}
