package transport

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	pb "github.com/ringkv/ringkv/proto/ringkvpb"
)

// pipeline is a raft.AppendPipeline over one gRPC bidirectional stream. raft
// sends from one goroutine; receive completes the futures in order.
type pipeline struct {
	g      *Group
	id     raft.ServerID
	target raft.ServerAddress
	stream pb.Raft_AppendEntriesPipelineClient
	ctx    context.Context
	cancel context.CancelCauseFunc
	// The sender (raft's goroutine) and receive each block on the stream.
	sendDog, recvDog *watchdog

	inflight chan *appendFuture
	done     chan raft.AppendFuture

	closeOnce sync.Once
	closed    chan struct{}
}

// AppendEntriesPipeline implements raft.Transport. It returns
// raft.ErrPipelineReplicationNotSupported when Options.MaxInFlight is 1.
func (g *Group) AppendEntriesPipeline(id raft.ServerID, target raft.ServerAddress) (raft.AppendPipeline, error) {
	const rpc = "AppendEntriesPipeline"
	maxInFlight := g.node.opts.MaxInFlight
	if maxInFlight < 2 {
		return nil, raft.ErrPipelineReplicationNotSupported
	}
	client, err := g.node.client(target)
	if err != nil {
		return nil, g.rpcError(rpc, target, err)
	}
	ctx, cancel := context.WithCancelCause(g.ctx)
	p := &pipeline{
		g:      g,
		id:     id,
		target: target,
		ctx:    ctx,
		cancel: cancel,
		// As in raft.NetworkTransport, one request is in flight on the
		// wire and one waits in receive beyond the buffer, so a buffer of
		// maxInFlight-2 allows maxInFlight outstanding requests. done holds
		// all of them: raft's decoder stops reading on a failed response
		// while its sender may still be inside AppendEntries, and receive
		// must not block then (see receive).
		inflight: make(chan *appendFuture, maxInFlight-2),
		done:     make(chan raft.AppendFuture, maxInFlight),
		closed:   make(chan struct{}),
	}
	timeout := g.node.opts.Timeout
	p.sendDog, p.recvDog = newWatchdog(ctx, cancel, timeout), newWatchdog(ctx, cancel, timeout)
	// Opening the stream waits for the connection, so it gets a deadline.
	err = p.sendDog.run(func() (err error) {
		p.stream, err = client.AppendEntriesPipeline(ctx)
		return err
	})
	if err != nil {
		cancel(nil)
		return nil, g.rpcError(rpc, target, err)
	}
	go p.receive()
	return p, nil
}

// watchdog bounds blocking operations on one stream, one at a time, and
// ends the whole stream if one takes longer than its timeout: a stream call
// takes no deadline of its own. It reuses one timer; a new timer per
// operation was a visible share of a busy pipeline's allocations.
type watchdog struct {
	ctx     context.Context
	timeout time.Duration
	t       *time.Timer
}

// newWatchdog returns a watchdog for the stream whose context is ctx and
// which cancel ends.
func newWatchdog(ctx context.Context, cancel context.CancelCauseFunc, timeout time.Duration) *watchdog {
	w := &watchdog{ctx: ctx, timeout: timeout}
	w.t = time.AfterFunc(timeout, func() {
		cancel(fmt.Errorf("transport: stream operation exceeded %v: %w", timeout, context.DeadlineExceeded))
	})
	w.t.Stop()
	return w
}

// run runs op; if op failed because the deadline passed, the error says so.
func (w *watchdog) run(op func() error) error {
	w.t.Reset(w.timeout)
	err := op()
	w.t.Stop()
	if err != nil && w.ctx.Err() != nil {
		if cause := context.Cause(w.ctx); !errors.Is(cause, context.Canceled) {
			return fmt.Errorf("%w (%w)", cause, err)
		}
	}
	return err
}

// AppendEntries implements raft.AppendPipeline. It blocks while MaxInFlight
// requests are outstanding.
func (p *pipeline) AppendEntries(args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) (raft.AppendFuture, error) {
	f := &appendFuture{start: time.Now(), req: args, resp: resp, done: make(chan struct{})}
	err := p.sendDog.run(func() error {
		return p.stream.Send(appendEntriesRequestToProto(p.g.partition, args))
	})
	if err != nil {
		return nil, p.g.rpcError("AppendEntriesPipeline", p.target, err)
	}
	select {
	case p.inflight <- f:
		return f, nil
	case <-p.closed:
		return nil, raft.ErrPipelineShutdown
	case <-p.ctx.Done():
		return nil, p.g.rpcError("AppendEntriesPipeline", p.target, context.Cause(p.ctx))
	}
}

// Consumer implements raft.AppendPipeline.
func (p *pipeline) Consumer() <-chan raft.AppendFuture { return p.done }

// Close implements raft.AppendPipeline; it cancels the stream and with it
// the requests in flight.
func (p *pipeline) Close() error {
	p.closeOnce.Do(func() {
		close(p.closed)
		p.cancel(raft.ErrPipelineShutdown)
	})
	return nil
}

// receive completes the futures in request order. It ends on Close, or once
// the stream's context is done and no request is waiting, since raft's Close
// may never come after its group closed.
func (p *pipeline) receive() {
	for {
		var f *appendFuture
		select {
		case f = <-p.inflight:
		case <-p.closed:
			return
		case <-p.ctx.Done():
			select {
			case f = <-p.inflight:
			default:
				return
			}
		}
		var out *pb.AppendEntriesResponse
		err := p.recvDog.run(func() (err error) {
			out, err = p.stream.Recv()
			return err
		})
		if err != nil {
			f.finish(p.g.rpcError("AppendEntriesPipeline", p.target, err))
		} else {
			*f.resp = appendEntriesResponseFromProto(out)
			p.g.observe(p.id, p.target, f.resp, time.Since(f.start))
			f.finish(nil)
		}
		select {
		case p.done <- f:
		case <-p.closed:
			return
		case <-time.After(p.g.node.opts.Timeout):
			// Nobody consumes responses any more (raft's decoder quit after
			// a failed response): end the stream so a sender blocked in
			// AppendEntries gets an error and raft closes the pipeline.
			p.cancel(errConsumerGone)
			return
		}
	}
}

var errConsumerGone = errors.New("transport: pipeline responses are no longer consumed")

// appendFuture is the raft.AppendFuture of one pipelined request.
type appendFuture struct {
	start time.Time
	req   *raft.AppendEntriesRequest
	resp  *raft.AppendEntriesResponse
	err   error
	done  chan struct{}
}

func (f *appendFuture) finish(err error) {
	f.err = err
	close(f.done)
}

// Error implements raft.Future; it blocks until the response arrived.
func (f *appendFuture) Error() error {
	<-f.done
	return f.err
}

// Start implements raft.AppendFuture.
func (f *appendFuture) Start() time.Time { return f.start }

// Request implements raft.AppendFuture.
func (f *appendFuture) Request() *raft.AppendEntriesRequest { return f.req }

// Response implements raft.AppendFuture.
func (f *appendFuture) Response() *raft.AppendEntriesResponse { return f.resp }
