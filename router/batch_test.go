package router

import (
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/ringkv/ringkv/internal/testing/wait"
	pb "github.com/ringkv/ringkv/proto/ringkvpb"
)

// scriptedKV answers a Put by its key: "slow" waits for its context,
// "forward" reports a forward to the primary, anything else succeeds with
// the key's length as version.
type scriptedKV struct{ pb.UnimplementedKVServer }

func (kv scriptedKV) Put(ctx context.Context, req *pb.PutRequest) (*pb.PutResponse, error) {
	resp, _, err := kv.put(ctx, req)
	return resp, err
}

// put is Put with its primary hint, as the Router's handlers return it.
func (scriptedKV) put(ctx context.Context, req *pb.PutRequest) (*pb.PutResponse, string, error) {
	hint := ""
	switch string(req.GetKey()) {
	case "slow":
		<-ctx.Done()
		return nil, "", Status(ctx.Err())
	case "forward":
		hint = pb.FormatPrimary(3, "10.0.0.3:7000")
	}
	return &pb.PutResponse{Version: uint64(len(req.GetKey()))}, hint, nil
}

func (scriptedKV) Get(ctx context.Context, req *pb.GetRequest) (*pb.GetResponse, error) {
	// Near the 1 MiB value limit: a few answers together would pass a
	// client's default 4 MiB receive limit.
	return &pb.GetResponse{Value: make([]byte, 1000<<10), Version: 1}, nil
}

func (kv scriptedKV) Batch(s pb.KV_BatchServer) error {
	return newBatchServer(handlers{put: kv.put, get: noHint(kv.Get), delete: noHint(kv.Delete)}, nil).Serve(s)
}

// TestBatchAnswersFitTheClientLimit: answers are split into messages a
// client with gRPC's default receive limit (4 MiB) can take, however many
// large values complete together.
func TestBatchAnswersFitTheClientLimit(t *testing.T) {
	conn := serveKV(t, scriptedKV{})
	ctx := testContext(t)
	stream := openBatch(t, ctx, conn)
	const n = 16
	var reqs []*pb.Request
	for id := range uint64(n) {
		reqs = append(reqs, &pb.Request{Id: id + 1, Op: &pb.Request_Get{Get: &pb.GetRequest{Key: []byte("big")}}})
	}
	sendAll(t, stream, reqs...)
	answers, err := receiveAll(stream)
	if err != nil || len(answers) != n {
		t.Fatalf("%d answers, then %v; want %d answers and the end of the stream", len(answers), err, n)
	}
}

// sendAll sends reqs in one message and closes the client's side.
func sendAll(t *testing.T, stream pb.KV_BatchClient, reqs ...*pb.Request) {
	t.Helper()
	if err := stream.Send(&pb.BatchRequest{Requests: reqs}); err != nil {
		t.Fatal(err)
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
}

// receiveAll collects a stream's answers until it ends: with nil after a
// clean end, else with the status it ended with.
func receiveAll(stream pb.KV_BatchClient) ([]*pb.Response, error) {
	var answers []*pb.Response
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			return answers, nil
		}
		if err != nil {
			return answers, err
		}
		answers = append(answers, msg.GetResponses()...)
	}
}

// testContext bounds a test's calls.
func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// openBatch opens a Batch stream on conn.
func openBatch(t *testing.T, ctx context.Context, conn *grpc.ClientConn) pb.KV_BatchClient {
	t.Helper()
	stream, err := pb.NewKVClient(conn).Batch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return stream
}

// serveKV serves kv on a loopback port for the test and returns a client
// connection to it.
func serveKV(t *testing.T, kv pb.KVServer) *grpc.ClientConn {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	pb.RegisterKVServer(srv, kv)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func TestBatchServer(t *testing.T) {
	conn := serveKV(t, scriptedKV{})
	ctx := testContext(t)
	stream := openBatch(t, ctx, conn)
	put := func(id uint64, key string, timeout uint64) *pb.Request {
		return &pb.Request{Id: id, TimeoutMicros: timeout, Op: &pb.Request_Put{Put: &pb.PutRequest{Key: []byte(key)}}}
	}
	sendAll(t, stream, put(1, "slow", 50_000), put(2, "abc", 0), &pb.Request{Id: 3}, put(4, "forward", 0))
	answers, err := receiveAll(stream)
	if err != nil {
		t.Fatal(err)
	}
	got := map[uint64]*pb.Response{}
	for _, r := range answers {
		if got[r.GetId()] != nil {
			t.Fatalf("request %d answered twice", r.GetId())
		}
		got[r.GetId()] = r
	}
	tests := []struct {
		id       uint64
		code     codes.Code
		contains string
		version  uint64
		primary  string
	}{
		{1, codes.DeadlineExceeded, "", 0, ""},
		{2, codes.OK, "", 3, ""},
		{3, codes.InvalidArgument, "requests[id=3].op", 0, ""},
		{4, codes.OK, "", 7, pb.FormatPrimary(3, "10.0.0.3:7000")},
	}
	for _, tt := range tests {
		r := got[tt.id]
		if r == nil {
			t.Errorf("request %d: no answer", tt.id)
			continue
		}
		code, msg := codes.OK, ""
		if e := r.GetError(); e != nil {
			code, msg = codes.Code(e.GetCode()), e.GetMessage()
		}
		if code != tt.code || !strings.Contains(msg, tt.contains) || r.GetPut().GetVersion() != tt.version || r.GetPrimary() != tt.primary {
			t.Errorf("request %d: answer %v, want code %v (message with %q), version %d, primary %q", tt.id, r, tt.code, tt.contains, tt.version, tt.primary)
		}
	}
}

// blockingKV holds every Put until release is closed.
type blockingKV struct {
	pb.UnimplementedKVServer
	started chan struct{}
	release chan struct{}
}

func (kv *blockingKV) Put(ctx context.Context, req *pb.PutRequest) (*pb.PutResponse, error) {
	kv.started <- struct{}{}
	<-kv.release
	return &pb.PutResponse{Version: 1}, nil
}

// TestBatchServerDrain: Drain lets the request in flight finish and be
// answered, takes no new one, and ends the stream with Unavailable and the
// drained trailer; a stream opened later ends at once the same way.
func TestBatchServerDrain(t *testing.T) {
	kv := &blockingKV{started: make(chan struct{}, 8), release: make(chan struct{})}
	bs := NewBatchServer(kv, nil)
	conn := serveKV(t, &drainKV{blockingKV: kv, bs: bs})
	ctx := testContext(t)
	put := func(id uint64) *pb.BatchRequest {
		return &pb.BatchRequest{Requests: []*pb.Request{{Id: id, Op: &pb.Request_Put{Put: &pb.PutRequest{Key: []byte("k")}}}}}
	}
	stream := openBatch(t, ctx, conn)
	if err := stream.Send(put(1)); err != nil {
		t.Fatal(err)
	}
	<-kv.started
	drainDone := make(chan error, 1)
	go func() { drainDone <- bs.Drain(ctx) }()
	// Once the server drains, send one more request.
	select {
	case <-bs.draining:
	case <-ctx.Done():
		t.Fatal("Drain did not start draining")
	}
	stream.Send(put(2)) // may fail once the server has ended the stream
	select {
	case err := <-drainDone:
		t.Fatalf("Drain returned %v while a request was in flight", err)
	default:
	}
	close(kv.release)
	if err := <-drainDone; err != nil {
		t.Fatal(err)
	}
	answers, err := receiveAll(stream)
	if status.Code(err) != codes.Unavailable || len(stream.Trailer().Get(pb.BatchDrainedTrailer)) == 0 {
		t.Fatalf("stream ended with %v, trailer %v; want Unavailable and %s", err, stream.Trailer(), pb.BatchDrainedTrailer)
	}
	if len(answers) != 1 || answers[0].GetId() != 1 {
		t.Fatalf("answered %v, want only request 1", answers)
	}
	select {
	case <-kv.started:
		t.Fatal("request 2 was served after Drain")
	default:
	}
	later := openBatch(t, ctx, conn)
	if _, err := later.Recv(); status.Code(err) != codes.Unavailable || len(later.Trailer().Get(pb.BatchDrainedTrailer)) == 0 {
		t.Fatalf("a stream opened after Drain: %v, trailer %v; want it drained at once", err, later.Trailer())
	}
}

type drainKV struct {
	*blockingKV
	bs *BatchServer
}

func (kv *drainKV) Batch(s pb.KV_BatchServer) error { return kv.bs.Serve(s) }

// countingKV holds each Put until it is released, one release per Put,
// and records the most Puts it held at once.
type countingKV struct {
	pb.UnimplementedKVServer
	started, release chan struct{}
	bs               *BatchServer
	mu               sync.Mutex
	cur, most        int
}

func (kv *countingKV) Batch(s pb.KV_BatchServer) error { return kv.bs.Serve(s) }

func (kv *countingKV) Put(context.Context, *pb.PutRequest) (*pb.PutResponse, error) {
	kv.mu.Lock()
	kv.cur++
	kv.most = max(kv.most, kv.cur)
	kv.mu.Unlock()
	kv.started <- struct{}{}
	<-kv.release
	kv.mu.Lock()
	kv.cur--
	kv.mu.Unlock()
	return &pb.PutResponse{Version: 1}, nil
}

// TestBatchServerBoundsRequestsInFlight: a stream never has more requests
// being served than its bound; the rest wait unread and are served as
// earlier ones finish.
func TestBatchServerBoundsRequestsInFlight(t *testing.T) {
	const bound, n = 2, 6
	kv := &countingKV{started: make(chan struct{}, n), release: make(chan struct{})}
	kv.bs = NewBatchServer(kv, nil)
	kv.bs.maxInFlight = bound
	conn := serveKV(t, kv)
	ctx := testContext(t)
	stream := openBatch(t, ctx, conn)
	var reqs []*pb.Request
	for id := range uint64(n) {
		reqs = append(reqs, &pb.Request{Id: id + 1, Op: &pb.Request_Put{Put: &pb.PutRequest{Key: []byte("k")}}})
	}
	sendAll(t, stream, reqs...)
	for range bound {
		<-kv.started
	}
	// The scheduler runs a woken goroutine first, so requests past the
	// bound could start late even without it: give them time to show. A
	// server that keeps the bound passes whatever the time.
	select {
	case <-kv.started:
		t.Fatalf("request %d started while %d were held", bound+1, bound)
	case <-time.After(200 * time.Millisecond):
	}
	for i := range n {
		kv.release <- struct{}{}
		if i+bound < n {
			<-kv.started
		}
	}
	answers, err := receiveAll(stream)
	if err != nil || len(answers) != n {
		t.Fatalf("%d answers, then %v; want %d answers", len(answers), err, n)
	}
	if kv.most > bound {
		t.Fatalf("%d requests served at once, want at most %d", kv.most, bound)
	}
}

// TestWorkersAreReusedBoundedAndStopped: a request goes to a worker that
// waits for one rather than to a new goroutine, no more than
// maxIdleWorkers wait after a burst, and they all end when the server
// drains.
func TestWorkersAreReusedBoundedAndStopped(t *testing.T) {
	stop := make(chan struct{})
	w := &workers{work: make(chan func()), stop: stop}
	burst := func(n int) (release func()) {
		gate := make(chan struct{})
		var started sync.WaitGroup
		started.Add(n)
		for range n {
			w.run(func() {
				started.Done()
				<-gate
			})
		}
		started.Wait()
		return func() { close(gate) }
	}
	burst(2 * maxIdleWorkers)()
	wait.Until(t, 20*time.Second, "maxIdleWorkers workers waiting after a burst of twice as many", func() bool {
		if n := w.idle.Load(); n > maxIdleWorkers {
			t.Fatalf("%d workers wait, more than %d", n, maxIdleWorkers)
		}
		return w.idle.Load() == maxIdleWorkers
	})
	// Requests that all block take waiting workers: fewer wait.
	release := burst(maxIdleWorkers)
	wait.Until(t, 20*time.Second, "blocked requests running on waiting workers", func() bool {
		return w.idle.Load() < maxIdleWorkers
	})
	release()
	close(stop)
	wait.Until(t, 20*time.Second, "every worker ended after the drain", func() bool { return w.idle.Load() == 0 })
}
