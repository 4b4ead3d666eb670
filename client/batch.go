package client

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ringkv/ringkv/internal/batchsend"
	pb "github.com/ringkv/ringkv/proto/ringkvpb"
)

// maxBatchRequests bounds the requests of one BatchRequest message; its
// payload is bounded by batchsend.MaxBytes (a single larger request is
// sent alone).
const maxBatchRequests = 256

// kvCaller is what a call needs of a node: the unary methods of
// pb.KVClient, which a batcher implements too.
type kvCaller interface {
	Put(context.Context, *pb.PutRequest, ...grpc.CallOption) (*pb.PutResponse, error)
	Get(context.Context, *pb.GetRequest, ...grpc.CallOption) (*pb.GetResponse, error)
	Delete(context.Context, *pb.DeleteRequest, ...grpc.CallOption) (*pb.DeleteResponse, error)
}

// notSentError marks a call that provably never reached the node's KV
// service, so that any call, a write included, may be retried.
type notSentError struct{ err error }

func (e *notSentError) Error() string              { return e.err.Error() }
func (e *notSentError) Unwrap() error              { return e.err }
func (e *notSentError) GRPCStatus() *status.Status { return status.Convert(e.err) }

// batcher sends the calls of every goroutine to one node over a single
// KV.Batch stream, opened on first use and again after one breaks, so that
// concurrent calls share messages and none pays for a gRPC call of its
// own. A node that does not serve Batch (an older version) is sent unary
// calls from then on.
type batcher struct {
	conn      grpc.ClientConnInterface
	onPrimary func(hint string)
	// unsupported is set once the node answered Batch with Unimplemented.
	unsupported atomic.Bool
	// opening admits one stream opener at a time; a waiter honours its ctx.
	opening chan struct{}
	cur     atomic.Pointer[batchStream]
}

func newBatcher(conn grpc.ClientConnInterface, onPrimary func(string)) *batcher {
	return &batcher{conn: conn, onPrimary: onPrimary, opening: make(chan struct{}, 1)}
}

// batchStream is one open Batch stream and the calls waiting on it.
type batchStream struct {
	b      *batcher
	stream pb.KV_BatchClient
	// out holds the requests not yet handed to gRPC and sends them, as
	// many to a message as are queued (see batchsend). Its lock nests
	// inside mu (fail stops it), never the other way round.
	out *batchsend.Queue[*pb.Request]

	mu    sync.Mutex
	calls map[uint64]chan answer // by request id, until answered
	next  uint64
	err   error // set once the stream broke
}

type answer struct {
	resp *pb.Response
	err  error
}

func (b *batcher) Put(ctx context.Context, req *pb.PutRequest, opts ...grpc.CallOption) (*pb.PutResponse, error) {
	r, err := b.call(ctx, &pb.Request{Op: &pb.Request_Put{Put: req}})
	if b.fallBack(err) {
		return pb.NewKVClient(b.conn).Put(ctx, req, opts...)
	}
	if err != nil {
		return nil, err
	}
	return answerOf(r, r.GetPut())
}

func (b *batcher) Get(ctx context.Context, req *pb.GetRequest, opts ...grpc.CallOption) (*pb.GetResponse, error) {
	r, err := b.call(ctx, &pb.Request{Op: &pb.Request_Get{Get: req}})
	if b.fallBack(err) {
		return pb.NewKVClient(b.conn).Get(ctx, req, opts...)
	}
	if err != nil {
		return nil, err
	}
	return answerOf(r, r.GetGet())
}

func (b *batcher) Delete(ctx context.Context, req *pb.DeleteRequest, opts ...grpc.CallOption) (*pb.DeleteResponse, error) {
	r, err := b.call(ctx, &pb.Request{Op: &pb.Request_Delete{Delete: req}})
	if b.fallBack(err) {
		return pb.NewKVClient(b.conn).Delete(ctx, req, opts...)
	}
	if err != nil {
		return nil, err
	}
	return answerOf(r, r.GetDelete())
}

// fallBack reports whether err says the node does not serve Batch, so
// the call, which it never served, goes as a unary call.
func (b *batcher) fallBack(err error) bool {
	return err != nil && b.unsupported.Load() && status.Code(err) == codes.Unimplemented
}

// answerOf is a Response's result of the expected kind, or its error.
func answerOf[T comparable](r *pb.Response, result T) (T, error) {
	var zero T
	if e := r.GetError(); e != nil {
		return zero, e.Err()
	}
	if result == zero {
		return zero, status.Errorf(codes.Internal, "batch: the answer to request %d holds no result of its kind", r.GetId())
	}
	return result, nil
}

// call sends req on the stream and waits for its answer or for ctx.
func (b *batcher) call(ctx context.Context, req *pb.Request) (*pb.Response, error) {
	s, err := b.stream(ctx)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		req.TimeoutMicros = uint64(max(time.Until(dl).Microseconds(), 1))
	}
	id, ch, err := s.send(req)
	if err != nil {
		return nil, err
	}
	select {
	case a := <-ch:
		return a.resp, a.err
	case <-ctx.Done():
		s.forget(id)
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

// stream returns the open stream, opening one if there is none.
func (b *batcher) stream(ctx context.Context) (*batchStream, error) {
	if s := b.cur.Load(); s != nil && !s.broken() {
		return s, nil
	}
	select {
	case b.opening <- struct{}{}:
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	defer func() { <-b.opening }()
	if s := b.cur.Load(); s != nil && !s.broken() {
		return s, nil
	}
	// The stream outlives this call, so it gets a context of its own; the
	// caller's bounds only the wait for the connection.
	sctx, cancel := context.WithCancel(context.Background())
	stop := context.AfterFunc(ctx, cancel)
	stream, err := pb.NewKVClient(b.conn).Batch(sctx)
	if !stop() || err != nil {
		cancel()
		if err == nil {
			err = status.FromContextError(ctx.Err()).Err()
		}
		return nil, &notSentError{err}
	}
	s := &batchStream{b: b, stream: stream, calls: map[uint64]chan answer{}}
	s.out = batchsend.New(batchsend.Limits{Items: maxBatchRequests, Bytes: batchsend.MaxBytes}, requestSize, s.sendMessage)
	b.cur.Store(s)
	go s.receive(cancel)
	return s, nil
}

func (s *batchStream) broken() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err != nil
}

// send registers req's call and queues req; unless another caller is
// sending, it then sends everything queued until the queue is empty, so
// that requests queued during a send leave together in the next message.
func (s *batchStream) send(req *pb.Request) (uint64, chan answer, error) {
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return 0, nil, &notSentError{s.err}
	}
	s.next++
	req.Id = s.next
	ch := make(chan answer, 1)
	s.calls[req.Id] = ch
	// Not under mu: sendMessage takes it.
	s.mu.Unlock()
	if err := s.out.Add(req); err != nil {
		// The stream broke before req was queued: it was never sent.
		s.forget(req.Id)
		return 0, nil, &notSentError{err}
	}
	return req.Id, ch, nil
}

// sendMessage sends one message of queued requests; it is s.out's send
// function, run by one caller at a time.
func (s *batchStream) sendMessage(batch []*pb.Request) error {
	err := s.stream.Send(&pb.BatchRequest{Requests: batch})
	if err != nil {
		// gRPC did not take the message: its requests were not sent.
		// The stream is done; receive learns and reports why.
		s.mu.Lock()
		for _, r := range batch {
			s.answer(r.GetId(), answer{err: &notSentError{status.Errorf(codes.Unavailable, "batch stream: %v", err)}})
		}
		s.err = err
		s.mu.Unlock()
	}
	return err
}

// requestSize estimates a request's encoded size: key and value dominate.
func requestSize(r *pb.Request) int {
	return 32 + len(r.GetPut().GetKey()) + len(r.GetPut().GetValue()) + len(r.GetGet().GetKey()) + len(r.GetDelete().GetKey())
}

// answer hands a to the call waiting for id, if it still waits; s.mu is
// held. Every call is answered at most once: by whoever removes it.
func (s *batchStream) answer(id uint64, a answer) {
	if ch, ok := s.calls[id]; ok {
		delete(s.calls, id)
		ch <- a
	}
}

// forget drops a call whose caller stopped waiting.
func (s *batchStream) forget(id uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.calls, id)
}

// receive hands each answer to its call until the stream ends, then fails
// the calls still waiting.
func (s *batchStream) receive(cancel context.CancelFunc) {
	defer cancel()
	for {
		msg, err := s.stream.Recv()
		if err != nil {
			s.fail(err)
			return
		}
		for _, r := range msg.GetResponses() {
			if r.GetPrimary() != "" {
				s.b.onPrimary(r.GetPrimary())
			}
			s.mu.Lock()
			s.answer(r.GetId(), answer{resp: r})
			s.mu.Unlock()
		}
	}
}

// fail ends the stream with err. Queued requests were never sent, nothing
// was served by a node that does not serve Batch, and a node that drained
// the stream vouches it served nothing it did not answer: those calls may
// be retried. The others were sent and their outcome is unknown, as after
// a unary call that failed the same way.
func (s *batchStream) fail(err error) {
	if status.Code(err) == codes.Unimplemented {
		s.b.unsupported.Store(true)
	}
	unserved := s.b.unsupported.Load() || len(s.stream.Trailer().Get(pb.BatchDrainedTrailer)) > 0
	err = status.Convert(err).Err()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		s.err = err
	}
	for _, r := range s.out.Stop(err) {
		s.answer(r.GetId(), answer{err: &notSentError{err}})
	}
	for id := range s.calls {
		a := answer{err: err}
		if unserved {
			a.err = &notSentError{err}
		}
		s.answer(id, a)
	}
}

var _ kvCaller = (*batcher)(nil)
