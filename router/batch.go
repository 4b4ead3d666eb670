package router

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ringkv/ringkv/internal/batchsend"
	pb "github.com/ringkv/ringkv/proto/ringkvpb"
)

// Bounds of one Batch stream on the server.
const (
	// maxBatchInFlight bounds the requests of one stream being served at
	// once; past it the stream is not read, so HTTP/2 flow control holds
	// the client back instead of the server's memory growing.
	maxBatchInFlight = 4096
	// maxBatchAnswers bounds the answers of one BatchResponse, so the
	// first answers of a burst are not held back by encoding the rest. Its
	// payload is bounded by batchsend.MaxBytes (an answer larger than that
	// is sent alone), well under a client's default 4 MiB receive limit.
	maxBatchAnswers = 256
	// maxIdleWorkers bounds the goroutines kept waiting for requests (see
	// workers): enough for the requests of a busy node's clients, whose
	// stacks (8–64 KiB each) stay small beside the engine's cache.
	maxIdleWorkers = 256
)

// workers runs the requests of every stream of a BatchServer. A request
// goes to a worker waiting for one if there is any, else to a new
// goroutine; a worker done with its request waits for the next unless
// maxIdleWorkers already wait, and ends when the server drains. A request
// on a fresh goroutine grows its stack from 8 KiB, copying it each time it
// doubles, as it descends into the engine: that cost a local get a tenth
// of its CPU, which a worker's stack, grown once, saves (the garbage
// collector shrinks an idle one only by half at a time).
type workers struct {
	work chan func() // unbuffered: a send succeeds only into a waiting worker
	idle atomic.Int32
	stop <-chan struct{}
}

func (w *workers) run(f func()) {
	select {
	case w.work <- f:
	default:
		go w.loop(f)
	}
}

func (w *workers) loop(f func()) {
	for {
		f()
		if w.idle.Add(1) > maxIdleWorkers {
			w.idle.Add(-1)
			return
		}
		select {
		case f = <-w.work:
			w.idle.Add(-1)
		case <-w.stop:
			w.idle.Add(-1)
			return
		}
	}
}

// UnaryKV is the unary part of the KV service, which a Batch stream's
// requests are served by.
type UnaryKV interface {
	Put(context.Context, *pb.PutRequest) (*pb.PutResponse, error)
	Get(context.Context, *pb.GetRequest) (*pb.GetResponse, error)
	Delete(context.Context, *pb.DeleteRequest) (*pb.DeleteResponse, error)
}

func (rt *Router) Batch(stream pb.KV_BatchServer) error { return rt.batch.Serve(stream) }

// Drain ends the node's Batch streams for its shutdown; see
// BatchServer.Drain.
func (rt *Router) Drain(ctx context.Context) error { return rt.batch.Drain(ctx) }

// BatchServer serves KV.Batch streams with a UnaryKV (the Router's, with
// its primary hints): each request runs in a goroutine of its own (a
// worker's, see workers), through the interceptor (if not nil) exactly as
// the unary call would, and the answers go back as they complete, as many
// to a message as are ready.
type BatchServer struct {
	kv          handlers
	intercept   grpc.UnaryServerInterceptor
	maxInFlight int // per stream; maxBatchInFlight but in tests
	workers     workers

	mu       sync.Mutex
	active   int
	draining chan struct{} // closed by Drain
	idle     chan struct{} // closed once draining and no stream is active
}

// handlers serve a Batch stream's requests, each as its unary call would,
// and return with each answer the primary hint for its Response.
type handlers struct {
	put    hintedHandler[*pb.PutRequest, *pb.PutResponse]
	get    hintedHandler[*pb.GetRequest, *pb.GetResponse]
	delete hintedHandler[*pb.DeleteRequest, *pb.DeleteResponse]
}

// NewBatchServer returns a BatchServer over kv, whose answers carry no
// primary hint.
func NewBatchServer(kv UnaryKV, intercept grpc.UnaryServerInterceptor) *BatchServer {
	return newBatchServer(handlers{put: noHint(kv.Put), get: noHint(kv.Get), delete: noHint(kv.Delete)}, intercept)
}

func newBatchServer(kv handlers, intercept grpc.UnaryServerInterceptor) *BatchServer {
	b := &BatchServer{kv: kv, intercept: intercept, maxInFlight: maxBatchInFlight,
		draining: make(chan struct{}), idle: make(chan struct{})}
	b.workers = workers{work: make(chan func()), stop: b.draining}
	return b
}

// noHint is a handler that never names a primary.
func noHint[Req, Resp any](h func(context.Context, Req) (Resp, error)) hintedHandler[Req, Resp] {
	return func(ctx context.Context, req Req) (Resp, string, error) {
		resp, err := h(ctx, req)
		return resp, "", err
	}
}

// Drain makes every Batch stream, open or opened later, stop taking
// requests: each ends, once the requests it took are answered, with
// Unavailable and the BatchDrainedTrailer, which tells its client that a
// request it did not answer it never served, so the client can send it
// elsewhere (a node that is shutting down would otherwise leave writes in
// an unknown state). Drain returns once no stream is active, or with
// ctx's error.
func (b *BatchServer) Drain(ctx context.Context) error {
	b.mu.Lock()
	select {
	case <-b.draining:
	default:
		close(b.draining)
		if b.active == 0 {
			close(b.idle)
		}
	}
	b.mu.Unlock()
	select {
	case <-b.idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// enter registers a stream, or reports that the server drains.
func (b *BatchServer) enter() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	select {
	case <-b.draining:
		return false
	default:
		b.active++
		return true
	}
}

func (b *BatchServer) leave() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.active--
	select {
	case <-b.draining:
		if b.active == 0 {
			close(b.idle)
		}
	default:
	}
}

// Serve serves one stream. It returns once every request it took has been
// answered: nil after the client closed its side, the drained status after
// Drain, else the error that ended the stream.
func (b *BatchServer) Serve(stream pb.KV_BatchServer) error {
	if !b.enter() {
		return drained(stream)
	}
	defer b.leave()
	ctx := stream.Context()
	// Recv cannot be selected on: a reader hands messages over, so that
	// Drain is noticed while the client is quiet.
	msgs, recvErr := make(chan *pb.BatchRequest), make(chan error, 1)
	go func() {
		for {
			msg, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case msgs <- msg:
			case <-ctx.Done():
				return
			}
		}
	}()
	// Answers leave as they complete: whoever completes one while no
	// answer is being sent sends all that are ready. After a failed send
	// the stream is broken and the remaining answers are dropped.
	out := batchsend.New(batchsend.Limits{Items: maxBatchAnswers, Bytes: batchsend.MaxBytes}, answerSize,
		func(batch []*pb.Response) error { return stream.Send(&pb.BatchResponse{Responses: batch}) })
	inflight := make(chan struct{}, b.maxInFlight)
	var wg sync.WaitGroup
	// Every request taken is answered before Serve returns, so a request
	// without an answer on a drained stream was never served.
	defer wg.Wait()
	drainedAnswered := func() error {
		wg.Wait() // the answers go out before the trailer is set
		return drained(stream)
	}
	for {
		var msg *pb.BatchRequest
		select {
		case msg = <-msgs:
			// A message that arrives with Drain is not taken: select
			// picks among ready cases at random.
			select {
			case <-b.draining:
				return drainedAnswered()
			default:
			}
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case <-b.draining:
			return drainedAnswered()
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
		for _, req := range msg.GetRequests() {
			select {
			case inflight <- struct{}{}:
			case <-b.draining:
				return drainedAnswered()
			case <-ctx.Done():
				return status.FromContextError(ctx.Err()).Err()
			}
			wg.Add(1)
			b.workers.run(func() {
				defer wg.Done()
				_ = out.Add(serveOne(ctx, b.kv, b.intercept, req))
				<-inflight
			})
		}
	}
}

// drained ends a stream for Drain.
func drained(stream pb.KV_BatchServer) error {
	stream.SetTrailer(metadata.Pairs(pb.BatchDrainedTrailer, "1"))
	return status.Error(codes.Unavailable, "node is shutting down: the requests of this stream that were not answered were not served")
}

// serveOne answers one batched request as its unary call would have.
func serveOne(ctx context.Context, kv handlers, intercept grpc.UnaryServerInterceptor, req *pb.Request) *pb.Response {
	resp := &pb.Response{Id: req.GetId()}
	if t := req.GetTimeoutMicros(); t > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(min(t, uint64(1<<62)/1000))*time.Microsecond)
		defer cancel()
	}
	var err error
	switch op := req.GetOp().(type) {
	case *pb.Request_Put:
		var r *pb.PutResponse
		if r, err = unary(ctx, intercept, pb.KV_Put_FullMethodName, op.Put, kv.put, &resp.Primary); err == nil {
			resp.Result = &pb.Response_Put{Put: r}
		}
	case *pb.Request_Get:
		var r *pb.GetResponse
		if r, err = unary(ctx, intercept, pb.KV_Get_FullMethodName, op.Get, kv.get, &resp.Primary); err == nil {
			resp.Result = &pb.Response_Get{Get: r}
		}
	case *pb.Request_Delete:
		var r *pb.DeleteResponse
		if r, err = unary(ctx, intercept, pb.KV_Delete_FullMethodName, op.Delete, kv.delete, &resp.Primary); err == nil {
			resp.Result = &pb.Response_Delete{Delete: r}
		}
	default:
		err = status.Errorf(codes.InvalidArgument, "requests[id=%d].op: want one of put, get or delete", req.GetId())
	}
	if err != nil {
		resp.Result = &pb.Response_Error{Error: pb.ErrorOf(err)}
	}
	return resp
}

// unary calls handler through intercept, as gRPC calls a unary method,
// and stores the handler's primary hint in *primary. The interceptor sees
// only what a unary call would: the hint goes around it.
//
// The hint is written through a pointer into the Response, which is on
// the heap anyway, rather than into a variable the closure captures: such
// a variable would be one more allocation per request.
func unary[Req, Resp any](ctx context.Context, intercept grpc.UnaryServerInterceptor, method string, req Req,
	handler hintedHandler[Req, Resp], primary *string) (Resp, error) {
	if intercept == nil {
		resp, hint, err := handler(ctx, req)
		*primary = hint
		return resp, err
	}
	// The interceptor returns only after the handler it called has
	// returned, so the hint is written before the Response is sent.
	out, err := intercept(ctx, req, &grpc.UnaryServerInfo{FullMethod: method}, func(ctx context.Context, req any) (any, error) {
		resp, hint, err := handler(ctx, req.(Req))
		*primary = hint
		return resp, err
	})
	resp, _ := out.(Resp)
	return resp, err
}

// answerSize estimates an answer's encoded size: its value dominates.
func answerSize(r *pb.Response) int {
	return 64 + len(r.GetGet().GetValue()) + len(r.GetError().GetMessage())
}
