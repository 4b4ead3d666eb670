package client

import (
	"context"
	"io"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ringkv/ringkv/internal/testing/wait"
	pb "github.com/ringkv/ringkv/proto/ringkvpb"
)

// scriptedConn opens, as its one Batch stream, a stream whose sends and
// receives the test drives; it serves no unary call.
type scriptedConn struct{ s *scriptedStream }

func (scriptedConn) Invoke(context.Context, string, any, any, ...grpc.CallOption) error {
	return status.Error(codes.Internal, "scriptedConn: no unary calls")
}

func (c scriptedConn) NewStream(ctx context.Context, _ *grpc.StreamDesc, _ string, _ ...grpc.CallOption) (grpc.ClientStream, error) {
	c.s.ctx = ctx
	return c.s, nil
}

// scriptedStream is a Batch stream that answers nothing: each SendMsg
// reports on sending, waits for hold (if not nil) to close and returns
// sendErr; RecvMsg returns the first error sent on recvErr, which breaks
// the stream.
type scriptedStream struct {
	ctx     context.Context
	sending chan struct{} // buffered: one per SendMsg begun
	hold    chan struct{}
	sendErr error
	recvErr chan error
}

func newScriptedStream() *scriptedStream {
	return &scriptedStream{sending: make(chan struct{}, 16), recvErr: make(chan error, 1)}
}

func (s *scriptedStream) SendMsg(any) error {
	s.sending <- struct{}{}
	if s.hold != nil {
		<-s.hold
	}
	return s.sendErr
}

func (s *scriptedStream) RecvMsg(any) error {
	select {
	case err := <-s.recvErr:
		return err
	case <-s.ctx.Done():
		return s.ctx.Err()
	}
}

func (s *scriptedStream) Header() (metadata.MD, error) { return nil, nil }
func (s *scriptedStream) Trailer() metadata.MD         { return nil }
func (s *scriptedStream) CloseSend() error             { return nil }
func (s *scriptedStream) Context() context.Context     { return s.ctx }

func putRequest(key string) *pb.Request {
	return &pb.Request{Op: &pb.Request_Put{Put: &pb.PutRequest{Key: []byte(key), Value: []byte("v")}}}
}

// TestUnsentBatchRequestsMayBeRetried: a batched request that never left
// the client (refused with its message by gRPC, still queued when the
// stream broke, or queued on a stream that broke after the request was
// registered) fails as not sent, so that even a write is sent again; a
// request handed to gRPC before the stream broke has an unknown outcome
// and does not.
func TestUnsentBatchRequestsMayBeRetried(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	gone := status.Error(codes.Unavailable, "node going away")

	t.Run("in a message gRPC refused", func(t *testing.T) {
		s := newScriptedStream()
		s.sendErr = io.EOF
		b := newBatcher(scriptedConn{s}, func(string) {})
		_, err := b.call(ctx, putRequest("k"))
		if !notSent(err) || status.Code(err) != codes.Unavailable {
			t.Fatalf("call whose message gRPC refused: %v, want Unavailable, not sent", err)
		}
		s.recvErr <- gone
	})

	t.Run("queued when the stream broke", func(t *testing.T) {
		s := newScriptedStream()
		s.hold = make(chan struct{})
		b := newBatcher(scriptedConn{s}, func(string) {})
		sent, queued := make(chan error, 1), make(chan error, 1)
		go func() {
			_, err := b.call(ctx, putRequest("sent"))
			sent <- err
		}()
		wait.Until(t, 10*time.Second, "the first message's send", func() bool { return len(s.sending) > 0 })
		go func() {
			_, err := b.call(ctx, putRequest("queued"))
			queued <- err
		}()
		// Once its call is registered, the second request is queued behind
		// the held send, or about to be: either way it was never sent.
		wait.Until(t, 10*time.Second, "the second call's registration", func() bool {
			st := b.cur.Load()
			st.mu.Lock()
			defer st.mu.Unlock()
			return len(st.calls) == 2
		})
		s.recvErr <- gone
		// The held send ends only once the stream is known broken, so the
		// queued request is not sent after it.
		wait.Until(t, 10*time.Second, "the stream to break", func() bool { return b.cur.Load().broken() })
		close(s.hold)
		// Each call is bounded by ctx.
		if err := <-queued; !notSent(err) || status.Code(err) != codes.Unavailable {
			t.Errorf("call queued when the stream broke: %v, want Unavailable, not sent", err)
		}
		if err := <-sent; notSent(err) || status.Code(err) != codes.Unavailable {
			t.Errorf("call sent before the stream broke: %v, want Unavailable with an unknown outcome", err)
		}
	})

	// The stream breaks after send registered the call but before it
	// queued the request: fail stops the queue in that window, and the
	// request, which the queue refuses, was never sent.
	t.Run("registered when the stream broke", func(t *testing.T) {
		s := newScriptedStream()
		b := newBatcher(scriptedConn{s}, func(string) {})
		st, err := b.stream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		st.out.Stop(gone)
		_, _, err = st.send(putRequest("k"))
		if !notSent(err) || status.Code(err) != codes.Unavailable {
			t.Errorf("request the stopped queue refused: %v, want Unavailable, not sent", err)
		}
		st.mu.Lock()
		left := len(st.calls)
		st.mu.Unlock()
		if left != 0 {
			t.Errorf("%d calls still registered, want the refused one forgotten", left)
		}
		s.recvErr <- gone
	})
}
