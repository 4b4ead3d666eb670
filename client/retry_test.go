package client

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/ringkv/ringkv/proto/ringkvpb"
	"github.com/ringkv/ringkv/router"
)

// fakeNode is a scripted node: its KV calls answer the errors of script in
// turn (nil is a success; the last one repeats) and its ClusterMap names
// the address in primary as the primary of its single partition.
type fakeNode struct {
	pb.UnimplementedKVServer
	pb.UnimplementedAdminServer
	addr    string
	primary *atomic.Value // string, shared by the nodes of one test

	epoch   atomic.Uint64 // of its ClusterMap answers; 0 answers 1
	mapDown atomic.Bool   // ClusterMap fails with Unavailable

	// unaryOnly answers Batch with Unimplemented, as a node of a version
	// without it would; breakBatch ends each Batch stream after reading
	// one message, answering nothing; drainBatch does the same as a node
	// shutting down does, vouching that it served none of it.
	unaryOnly, breakBatch, drainBatch atomic.Bool

	mu      sync.Mutex
	script  []error
	calls   int
	maps    int
	streams int // Batch streams opened
}

func startFake(t *testing.T, primary *atomic.Value) *fakeNode {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeNode{addr: lis.Addr().String(), primary: primary}
	srv := grpc.NewServer()
	pb.RegisterKVServer(srv, f)
	pb.RegisterAdminServer(srv, f)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return f
}

func (f *fakeNode) answer() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if len(f.script) == 0 {
		return nil
	}
	err := f.script[0]
	if len(f.script) > 1 {
		f.script = f.script[1:]
	}
	return err
}

func (f *fakeNode) setScript(errs ...error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.script = errs
}

func (f *fakeNode) counts() (calls, maps int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls, f.maps
}

func (f *fakeNode) Put(context.Context, *pb.PutRequest) (*pb.PutResponse, error) {
	if err := f.answer(); err != nil {
		return nil, err
	}
	return &pb.PutResponse{Version: 7, Timestamp: &pb.Timestamp{WallTime: 5, Logical: 1}}, nil
}

func (f *fakeNode) Delete(context.Context, *pb.DeleteRequest) (*pb.DeleteResponse, error) {
	if err := f.answer(); err != nil {
		return nil, err
	}
	return &pb.DeleteResponse{Version: 8}, nil
}

func (f *fakeNode) Get(context.Context, *pb.GetRequest) (*pb.GetResponse, error) {
	if err := f.answer(); err != nil {
		return nil, err
	}
	return &pb.GetResponse{Value: []byte("v"), Version: 7}, nil
}

func (f *fakeNode) Batch(s pb.KV_BatchServer) error {
	// Read once: a test may flip drainBatch as soon as the stream counts.
	drain := f.drainBatch.Load()
	f.mu.Lock()
	f.streams++
	f.mu.Unlock()
	switch {
	case f.unaryOnly.Load():
		return status.Error(codes.Unimplemented, "unknown method Batch")
	case f.breakBatch.Load(), drain:
		if _, err := s.Recv(); err != nil {
			return err
		}
		if drain {
			s.SetTrailer(metadata.Pairs(pb.BatchDrainedTrailer, "1"))
		}
		return status.Error(codes.Unavailable, "node going away")
	}
	return router.NewBatchServer(f, nil).Serve(s)
}

func (f *fakeNode) ClusterMap(context.Context, *pb.ClusterMapRequest) (*pb.ClusterMapResponse, error) {
	f.mu.Lock()
	f.maps++
	f.mu.Unlock()
	if f.mapDown.Load() {
		return nil, status.Error(codes.Unavailable, "map unavailable")
	}
	addr := f.primary.Load().(string)
	return &pb.ClusterMapResponse{
		Partitions:   1,
		Epoch:        max(f.epoch.Load(), 1),
		Nodes:        []*pb.NodeInfo{{Id: "a", Address: addr}},
		PartitionMap: []*pb.PartitionMap{{Partition: 0, Replicas: []string{"a"}, PrimaryId: "a", PrimaryAddr: addr}},
	}, nil
}

func notPrimary(t *testing.T, addr string) error {
	t.Helper()
	st, err := status.New(codes.FailedPrecondition, "not primary").WithDetails(&pb.NotPrimary{PrimaryAddr: addr})
	if err != nil {
		t.Fatal(err)
	}
	return st.Err()
}

func TestRetries(t *testing.T) {
	unavailable := status.Error(codes.Unavailable, "no quorum")
	deadline := status.Error(codes.DeadlineExceeded, "op timeout")
	// What grpc-go reports when the connection to the node cannot be made.
	neverSent := status.Error(codes.Unavailable, `connection error: desc = "transport: Error while dialing: dial tcp 127.0.0.1:1: connect: connection refused"`)
	put := func(ctx context.Context, c *Client) error {
		_, err := c.Put(ctx, []byte("k"), []byte("v"))
		return err
	}
	del := func(ctx context.Context, c *Client) error {
		_, err := c.Delete(ctx, []byte("k"), Fast)
		return err
	}
	get := func(ctx context.Context, c *Client) error {
		_, err := c.Get(ctx, []byte("k"), Quorum)
		return err
	}
	tests := []struct {
		name string
		call func(context.Context, *Client) error
		// scriptA is what the cached primary a answers; b always succeeds.
		// Elements equal to errToB are replaced by a NotPrimary naming b.
		scriptA      []error
		wantCode     codes.Code
		wantA, wantB int
		// wantRefresh: the next call refreshes the map first.
		wantRefresh bool
	}{
		{"put follows NotPrimary", put, []error{errToB}, codes.OK, 1, 1, false},
		{"delete follows NotPrimary", del, []error{errToB}, codes.OK, 1, 1, false},
		{"get follows NotPrimary", get, []error{errToB}, codes.OK, 1, 1, false},
		{"put not retried after Unavailable", put, []error{unavailable, nil}, codes.Unavailable, 1, 0, true},
		{"delete not retried after DeadlineExceeded", del, []error{deadline, nil}, codes.DeadlineExceeded, 1, 0, true},
		{"put retried when never sent", put, []error{neverSent, nil}, codes.OK, 2, 0, false},
		{"get retried after Unavailable", get, []error{unavailable, deadline, nil}, codes.OK, 3, 0, false},
		{"get gives up after max attempts", get, []error{unavailable, unavailable, unavailable, unavailable, nil}, codes.Unavailable, 4, 0, false},
		{"NotPrimary naming nobody backs off and retries", put, []error{errNobody, nil}, codes.OK, 2, 0, false},
		{"InvalidArgument is not retried", put, []error{status.Error(codes.InvalidArgument, "key: too large"), nil}, codes.InvalidArgument, 1, 0, false},
	}
	modes := []struct {
		name string
		opts []Option
	}{
		{"batched", nil},
		{"unary", []Option{WithoutBatching()}},
	}
	for _, mode := range modes {
		for _, tc := range tests {
			t.Run(mode.name+"/"+tc.name, func(t *testing.T) {
				var primary atomic.Value
				a, b := startFake(t, &primary), startFake(t, &primary)
				primary.Store(a.addr)
				var script []error
				for _, e := range tc.scriptA {
					switch e {
					case errToB:
						e = notPrimary(t, b.addr)
					case errNobody:
						e = notPrimary(t, "")
					}
					script = append(script, e)
				}
				a.setScript(script...)
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				c, err := New(ctx, []string{a.addr}, append(mode.opts, WithMaxAttempts(4), WithBackoff(time.Millisecond, 5*time.Millisecond))...)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				err = tc.call(ctx, c)
				if status.Code(err) != tc.wantCode {
					t.Fatalf("got %v, want code %v", err, tc.wantCode)
				}
				callsA, mapsA := a.counts()
				callsB, _ := b.counts()
				if callsA != tc.wantA || callsB != tc.wantB {
					t.Fatalf("attempts: a %d, b %d; want a %d, b %d", callsA, callsB, tc.wantA, tc.wantB)
				}
				// The next call goes to whichever node the client now
				// believes primary, after a refresh if the last one failed
				// ambiguously, and the scripts now succeed.
				if err := tc.call(ctx, c); err != nil {
					t.Fatalf("second call: %v", err)
				}
				callsA2, mapsA2 := a.counts()
				callsB2, _ := b.counts()
				if tc.wantB > 0 && (callsA2 != callsA || callsB2 != callsB+1) {
					t.Fatalf("second call did not go straight to the primary named by NotPrimary: a %d→%d, b %d→%d",
						callsA, callsA2, callsB, callsB2)
				}
				if refreshed := mapsA2 > mapsA; refreshed != tc.wantRefresh {
					t.Fatalf("map refreshed before second call = %v, want %v", refreshed, tc.wantRefresh)
				}
			})
		}
	}
}

// singleFake starts a fake node, primary of the only partition, set up by
// setup, and a client of it with opts; both end with the test.
func singleFake(t *testing.T, setup func(*fakeNode), opts ...Option) (*fakeNode, *Client, context.Context) {
	t.Helper()
	var primary atomic.Value
	f := startFake(t, &primary)
	primary.Store(f.addr)
	setup(f)
	c, err := New(context.Background(), []string{f.addr}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return f, c, ctx
}

// TestDefaultRetryBudget: with the default options, the waits of a call
// that retries until its last attempt add up to at least 5 s however much
// jitter takes off (up to half of each, sleep), so a call outlasts an
// election at 1 s Raft timeouts; and no wait is longer than 250 ms, so a
// call finds a new primary soon after it is elected. The schedule is do's.
func TestDefaultRetryBudget(t *testing.T) {
	var least, most time.Duration
	backoff := DefaultMinBackoff
	for range DefaultMaxAttempts - 1 {
		if backoff > 250*time.Millisecond {
			t.Fatalf("a wait of %v, want at most 250ms", backoff)
		}
		least += backoff - backoff/2
		most += backoff
		backoff = min(2*backoff, DefaultMaxBackoff)
	}
	if least < 5*time.Second {
		t.Fatalf("the default retries wait %v to %v in all, want at least 5s", least, most)
	}
	t.Logf("the default retries wait %v to %v in all", least, most)
}

// TestBatchFallsBackToUnary: a node that does not serve Batch gets the
// call as a unary call, without the call losing an attempt, and every
// later call goes unary at once.
func TestBatchFallsBackToUnary(t *testing.T) {
	a, c, ctx := singleFake(t, func(f *fakeNode) { f.unaryOnly.Store(true) }, WithMaxAttempts(1))
	for range 3 {
		if _, err := c.Put(ctx, []byte("k"), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.calls != 3 || a.streams != 1 {
		t.Fatalf("%d unary calls and %d Batch streams, want 3 and 1", a.calls, a.streams)
	}
}

// TestDrainedBatchStream: a write on a stream that a node ending it for
// shutdown vouches it did not serve is sent again.
func TestDrainedBatchStream(t *testing.T) {
	a, c, ctx := singleFake(t, func(f *fakeNode) { f.drainBatch.Store(true) }, WithBackoff(time.Millisecond, time.Millisecond))
	go func() {
		// The node is back (or another took over) after the first stream.
		for {
			if a.mu.Lock(); a.streams > 0 {
				a.mu.Unlock()
				a.drainBatch.Store(false)
				return
			}
			a.mu.Unlock()
			time.Sleep(time.Millisecond)
		}
	}()
	if _, err := c.Put(ctx, []byte("k"), []byte("v")); err != nil {
		t.Fatalf("put on a drained stream: %v, want it sent again and served", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.streams < 2 || a.calls != 1 {
		t.Fatalf("%d Batch streams and %d served calls, want at least 2 and 1", a.streams, a.calls)
	}
}

// TestBrokenBatchStream: a write in flight on a stream that breaks has an
// unknown outcome, so it fails with the stream's Unavailable and is not
// retried; the next call opens a new stream.
func TestBrokenBatchStream(t *testing.T) {
	a, c, ctx := singleFake(t, func(f *fakeNode) { f.breakBatch.Store(true) }, WithBackoff(time.Millisecond, time.Millisecond))
	if _, err := c.Put(ctx, []byte("k"), []byte("v")); status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "node going away") {
		t.Fatalf("put on a breaking stream: %v, want the stream's Unavailable", err)
	}
	a.breakBatch.Store(false)
	if _, err := c.Put(ctx, []byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.streams != 2 || a.calls != 1 {
		t.Fatalf("%d Batch streams and %d served calls, want 2 and 1", a.streams, a.calls)
	}
}

// Markers in a script for errors that need the fakes' addresses.
var (
	errToB    = errors.New("NotPrimary naming b")
	errNobody = errors.New("NotPrimary naming nobody")
)

func TestContextBoundsRetries(t *testing.T) {
	var primary atomic.Value
	a := startFake(t, &primary)
	primary.Store(a.addr)
	a.setScript(notPrimary(t, ""))
	c, err := New(context.Background(), []string{a.addr}, WithMaxAttempts(1<<30), WithBackoff(10*time.Millisecond, 10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	deadline, _ := ctx.Deadline()
	_, err = c.Put(ctx, []byte("k"), []byte("v"))
	// The server enforces the propagated deadline too, and its
	// DeadlineExceeded can arrive a moment before the local context fires.
	if early := time.Until(deadline); err == nil || early > 50*time.Millisecond {
		t.Fatalf("Put returned %v %v before its context ended", err, early)
	}
	if calls, _ := a.counts(); calls < 2 {
		t.Fatalf("only %d attempts: a NotPrimary naming nobody was not retried", calls)
	}
}

func TestNotFound(t *testing.T) {
	var primary atomic.Value
	a := startFake(t, &primary)
	primary.Store(a.addr)
	a.setScript(status.Error(codes.NotFound, "key not found"))
	c, err := New(context.Background(), []string{a.addr})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Get(context.Background(), []byte("k")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("got %v, want ErrNotFound", err)
	}
	if calls, _ := a.counts(); calls != 1 {
		t.Fatalf("NotFound was retried: %d attempts", calls)
	}
}

func TestNewRejectsBadInput(t *testing.T) {
	var primary atomic.Value
	a := startFake(t, &primary)
	primary.Store(a.addr)
	tests := []struct {
		name  string
		addrs []string
		opts  []Option
		want  string
	}{
		{"no addresses", nil, nil, "addrs"},
		{"zero attempts", []string{a.addr}, []Option{WithMaxAttempts(0)}, "max attempts = 0"},
		{"zero backoff", []string{a.addr}, []Option{WithBackoff(0, time.Second)}, "backoff"},
		{"max below min", []string{a.addr}, []Option{WithBackoff(time.Second, time.Millisecond)}, "min <= max"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(context.Background(), tc.addrs, tc.opts...)
			if !errors.Is(err, ErrInvalidOption) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ErrInvalidOption mentioning %q", err, tc.want)
			}
		})
	}
	if calls, maps := a.counts(); calls+maps != 0 {
		t.Fatalf("rejected New contacted the node: %d calls, %d maps", calls, maps)
	}
}

func TestClosedClient(t *testing.T) {
	var primary atomic.Value
	a := startFake(t, &primary)
	primary.Store(a.addr)
	c, err := New(context.Background(), []string{a.addr})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(context.Background(), []byte("k"), nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Put after Close: %v, want ErrClosed", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestNewClusterMapRejectsBadMaps(t *testing.T) {
	node := []*pb.NodeInfo{{Id: "a", Address: "127.0.0.1:1"}}
	part := func(p uint32, primaryAddr string, replicas ...string) *pb.PartitionMap {
		return &pb.PartitionMap{Partition: p, PrimaryAddr: primaryAddr, Replicas: replicas}
	}
	tests := []struct {
		name string
		resp *pb.ClusterMapResponse
		want string // empty: valid
	}{
		{"valid", &pb.ClusterMapResponse{Partitions: 2, Nodes: node, PartitionMap: []*pb.PartitionMap{part(0, "x:1"), part(1, "", "a")}}, ""},
		{"not a power of two", &pb.ClusterMapResponse{Partitions: 3, Nodes: node}, "partitions = 3"},
		{"zero partitions", &pb.ClusterMapResponse{Nodes: node}, "partitions = 0"},
		{"missing entries", &pb.ClusterMapResponse{Partitions: 2, PartitionMap: []*pb.PartitionMap{part(0, "x:1")}}, "1 entries"},
		{"out of order", &pb.ClusterMapResponse{Partitions: 2, PartitionMap: []*pb.PartitionMap{part(1, "x:1"), part(0, "x:1")}}, "partition_map[0].partition = 1"},
		{"no address", &pb.ClusterMapResponse{Partitions: 1, PartitionMap: []*pb.PartitionMap{part(0, "", "ghost")}}, "partition 0: no address"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := newClusterMap(tc.resp)
			if tc.want == "" {
				if err != nil || m.primary[0] != "x:1" || m.primary[1] != "127.0.0.1:1" {
					t.Fatalf("got %+v, %v", m, err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidClusterMap) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ErrInvalidClusterMap mentioning %q", err, tc.want)
			}
		})
	}
}

// TestRefreshNeverTakesAnOlderEpoch: a node that lags the metadata answers
// with an older map; the client keeps the newer one it has.
func TestRefreshNeverTakesAnOlderEpoch(t *testing.T) {
	var primary atomic.Value
	fresh, old := startFake(t, &primary), startFake(t, &primary)
	primary.Store(fresh.addr)
	fresh.epoch.Store(2)
	c, err := New(context.Background(), []string{fresh.addr, old.addr})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	seen := c.m.Load()
	if got := seen.resp.GetEpoch(); got != 2 {
		t.Fatalf("first map has epoch %d, want 2", got)
	}
	fresh.mapDown.Store(true)
	m, err := c.refresh(context.Background(), seen)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.resp.GetEpoch(); got != 2 || c.m.Load().resp.GetEpoch() != 2 {
		t.Fatalf("after a refresh answered only by a lagging node: epoch %d, want 2", got)
	}
	if _, maps := old.counts(); maps == 0 {
		t.Fatal("the lagging node was never asked")
	}
}

// TestBatchMessagesFitTheServerLimit: concurrent calls with large values
// are split into messages a server with gRPC's default receive limit
// (4 MiB, as the fake's) takes, however many queue up during a send.
func TestBatchMessagesFitTheServerLimit(t *testing.T) {
	a, c, ctx := singleFake(t, func(*fakeNode) {})
	value := make([]byte, 1000<<10)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.Put(ctx, []byte("k"), value); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.streams != 1 || a.calls != 16 {
		t.Fatalf("%d Batch streams and %d served calls, want 1 and 16", a.streams, a.calls)
	}
}
