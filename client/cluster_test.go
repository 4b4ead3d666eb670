package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/ringkv/ringkv/internal/testing/testcluster"
	pb "github.com/ringkv/ringkv/proto/ringkvpb"
	"github.com/ringkv/ringkv/ring"
)

// kvTargets records the node address of every KV call a client makes.
type kvTargets struct {
	mu      sync.Mutex
	calls   []string
	batched int // of calls, those sent on a Batch stream
}

func (k *kvTargets) option() Option {
	return WithDialOptions(
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUnaryInterceptor(func(ctx context.Context, method string, req, reply any,
			cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			if strings.HasPrefix(method, "/ringkv.v1.KV/") {
				k.mu.Lock()
				k.calls = append(k.calls, cc.Target())
				k.mu.Unlock()
			}
			return invoker(ctx, method, req, reply, cc, opts...)
		}),
		grpc.WithStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn,
			method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			s, err := streamer(ctx, desc, cc, method, opts...)
			if err != nil || method != pb.KV_Batch_FullMethodName {
				return s, err
			}
			return &batchTargets{ClientStream: s, k: k, target: cc.Target()}, nil
		}))
}

// batchTargets records each request sent on a Batch stream as a call.
type batchTargets struct {
	grpc.ClientStream
	k      *kvTargets
	target string
}

func (s *batchTargets) SendMsg(m any) error {
	s.k.mu.Lock()
	for range m.(*pb.BatchRequest).GetRequests() {
		s.k.calls = append(s.k.calls, s.target)
		s.k.batched++
	}
	s.k.mu.Unlock()
	return s.ClientStream.SendMsg(m)
}

func (k *kvTargets) take() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := k.calls
	k.calls = nil
	return out
}

// newTracedClient connects a client to c that records its KV calls in
// targets; both end with the test.
func newTracedClient(t *testing.T, c *testcluster.Cluster) (context.Context, *Client, *kvTargets) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	targets := &kvTargets{}
	cl, err := New(ctx, c.Addrs(), targets.option())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return ctx, cl, targets
}

// primaryAddr returns the address of the node whose replica of p is its
// Raft leader, and the leader's term, or "" if none is.
func primaryAddr(c *testcluster.Cluster, p ring.PartitionID) (string, uint64) {
	for _, n := range c.Nodes {
		if n != nil && n.Replica(p).IsPrimary() {
			return n.Addr(), n.Replica(p).Raft().CurrentTerm()
		}
	}
	return "", 0
}

func TestEveryModeRoundTripsBinary(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl, err := New(ctx, c.Addrs())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for _, w := range []WriteConsistency{Strong, Fast} {
		for _, r := range []ReadConsistency{Local, Quorum} {
			t.Run(w.String()+"/"+r.String(), func(t *testing.T) {
				for i := range 16 {
					key := fmt.Appendf([]byte{0, 0xff}, "%v/%v/%d\x00", w, r, i)
					val := append([]byte{0xfe, 0}, key...)
					put, err := cl.Put(ctx, key, val, w)
					if err != nil {
						t.Fatal(err)
					}
					if put.Version == 0 || put.Timestamp.IsZero() {
						t.Fatalf("put result %+v lacks version or timestamp", put)
					}
					var got Item
					// A quorum read need not see a fast write until it
					// commits, which it does within a heartbeat.
					for deadline := time.Now().Add(10 * time.Second); ; {
						got, err = cl.Get(ctx, key, r)
						if !(w == Fast && errors.Is(err, ErrNotFound)) || time.Now().After(deadline) {
							break
						}
						time.Sleep(10 * time.Millisecond)
					}
					if err != nil || !bytes.Equal(got.Value, val) || got.Version != put.Version || got.Timestamp != put.Timestamp {
						t.Fatalf("get %q: %+v %v, want value %q version %d at %v", key, got, err, val, put.Version, put.Timestamp)
					}
					del, err := cl.Delete(ctx, key, w)
					if err != nil || del.Version != put.Version+1 || !put.Timestamp.Less(del.Timestamp) {
						t.Fatalf("delete: %+v %v after put %+v", del, err, put)
					}
					// The primary applies even a fast delete before it
					// acknowledges it; a quorum read may lag until commit.
					if _, err := cl.Get(ctx, key, Local); !errors.Is(err, ErrNotFound) {
						t.Fatalf("get after delete: %v, want ErrNotFound", err)
					}
				}
			})
		}
	}
}

func TestRequestsGoStraightToPrimary(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	ctx, cl, targets := newTracedClient(t, c)
	m := cl.m.Load()
	checked := 0
	for p := range ring.PartitionID(m.ring.Partitions()) {
		want, term := primaryAddr(c, p)
		if got := m.primary[p]; got != want {
			// Only an election since the map was fetched excuses it.
			if _, t2 := primaryAddr(c, p); t2 == term {
				t.Errorf("partition %d: cached primary %s, but %s is the leader", p, got, want)
			}
		}
	}
	for i := 0; checked < 64; i++ {
		key := fmt.Appendf(nil, "direct-%d", i)
		p := m.ring.Lookup(key)
		want, term := primaryAddr(c, p)
		if _, err := cl.Put(ctx, key, key); err != nil {
			t.Fatal(err)
		}
		calls := targets.take()
		if now, t2 := primaryAddr(c, p); now != want || t2 != term {
			continue // leadership moved during the call: nothing to judge
		}
		if len(calls) != 1 || calls[0] != want {
			t.Fatalf("put %q to partition %d went to %v, want only primary %s", key, p, calls, want)
		}
		checked++
	}
}

func TestFailover(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	ctx, cl, targets := newTracedClient(t, c)
	key := []byte("failover\x00key")
	before, err := cl.Put(ctx, key, []byte("before"))
	if err != nil {
		t.Fatal(err)
	}
	p := cl.m.Load().ring.Lookup(key)
	old, _ := primaryAddr(c, p)
	for i, n := range c.Nodes {
		if n.Addr() == old {
			c.StopNode(i)
		}
	}
	targets.take()

	// A write to the stopped primary fails without a second attempt: its
	// outcome is unknown to the client, which must not apply it twice.
	_, err = cl.Put(ctx, key, []byte("lost?"))
	if calls := targets.take(); err != nil && (status.Code(err) != codes.Unavailable || len(calls) != 1) {
		t.Fatalf("write to a stopped primary: %v after %d attempts, want Unavailable after 1", err, len(calls))
	}

	var after Result
	for deadline := time.Now().Add(60 * time.Second); ; {
		after, err = cl.Put(ctx, key, []byte("after"), Strong)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no strong write after failover: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if after.Version <= before.Version {
		t.Fatalf("version went from %d to %d", before.Version, after.Version)
	}
	// Reads retry by themselves: one call suffices.
	got, err := cl.Get(ctx, key, Quorum)
	if err != nil || string(got.Value) != "after" || got.Version != after.Version {
		t.Fatalf("quorum read after failover: %+v %v", got, err)
	}
	if now := cl.m.Load().primary[p]; now == old {
		t.Fatalf("cache still names the stopped node %s as primary", old)
	}
}

// BenchmarkClient measures one client's sequential calls against a
// 3-node loopback cluster: each is one round trip to the primary.
func BenchmarkClient(b *testing.B) {
	c := testcluster.Start(b, testcluster.Options{})
	ctx := context.Background()
	cl, err := New(ctx, c.Addrs())
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	val := make([]byte, 100)
	for _, bc := range []struct {
		name string
		op   func(key []byte) error
	}{
		{"put/strong", func(k []byte) error { _, err := cl.Put(ctx, k, val, Strong); return err }},
		{"put/fast", func(k []byte) error { _, err := cl.Put(ctx, k, val, Fast); return err }},
		{"get/local", func(k []byte) error { _, err := cl.Get(ctx, k, Local); return err }},
		{"get/quorum", func(k []byte) error { _, err := cl.Get(ctx, k, Quorum); return err }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for i := 0; b.Loop(); i++ {
				if err := bc.op(fmt.Appendf(nil, "bench-%d", i%1024)); err != nil && !errors.Is(err, ErrNotFound) {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestForwardedRequestCorrectsTheMap: a client whose map names the wrong
// primary (an election moved it) has its request forwarded, learns the
// primary from the answer, and sends the next request straight there.
func TestForwardedRequestCorrectsTheMap(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	ctx, cl, targets := newTracedClient(t, c)
	for i := 0; ; i++ {
		key := fmt.Appendf(nil, "stale-%d", i)
		m := cl.m.Load()
		p := m.ring.Lookup(key)
		want, term := primaryAddr(c, p)
		wrong := c.Addrs()[0]
		if wrong == want {
			wrong = c.Addrs()[1]
		}
		cl.setPrimary(m, p, wrong)
		if _, err := cl.Put(ctx, key, key); err != nil {
			t.Fatal(err)
		}
		first := targets.take()
		if _, err := cl.Put(ctx, key, key); err != nil {
			t.Fatal(err)
		}
		second := targets.take()
		if now, t2 := primaryAddr(c, p); now != want || t2 != term {
			if i > 20 {
				t.Fatal("leadership kept moving")
			}
			continue // an election during the calls: nothing to judge
		}
		if len(first) != 1 || first[0] != wrong {
			t.Fatalf("first put went to %v, want only the stale primary %s", first, wrong)
		}
		if got := cl.m.Load().primary[p]; got != want {
			t.Fatalf("after a forwarded put the map names %s for partition %d, want %s", got, p, want)
		}
		if len(second) != 1 || second[0] != want {
			t.Fatalf("second put went to %v, want only the primary %s", second, want)
		}
		return
	}
}

// TestConcurrentCallsShareAStream: many goroutines' calls, of every kind,
// travel on one Batch stream per node and each gets its own answer (a
// fast write is read locally: quorum reads see it once it is committed).
func TestConcurrentCallsShareAStream(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	ctx, cl, targets := newTracedClient(t, c)
	var streams sync.Map
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for g := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				key := fmt.Appendf(nil, "share-%d-%d", g, i)
				val := fmt.Appendf(nil, "value-%d-%d", g, i)
				put, err := cl.Put(ctx, key, val, []WriteConsistency{Strong, Fast}[i%2])
				if err == nil {
					var got Item
					got, err = cl.Get(ctx, key, []ReadConsistency{Quorum, Local}[i%2])
					switch {
					case err != nil:
						err = fmt.Errorf("get %s (%v) after put (%v, version %d): %w", key, []ReadConsistency{Quorum, Local}[i%2], []WriteConsistency{Strong, Fast}[i%2], put.Version, err)
					case !bytes.Equal(got.Value, val) || got.Version != put.Version:
						err = fmt.Errorf("get %s = %q version %d, want %q version %d", key, got.Value, got.Version, val, put.Version)
					}
				}
				if err == nil && i%5 == 0 {
					if _, err = cl.Delete(ctx, key); err == nil {
						if _, err = cl.Get(ctx, key, Quorum); errors.Is(err, ErrNotFound) {
							err = nil
						} else {
							err = fmt.Errorf("get %s after delete: %v, want ErrNotFound", key, err)
						}
					}
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	cl.batchers.Range(func(addr, b any) bool {
		streams.Store(addr, b.(*batcher).cur.Load())
		return true
	})
	n := 0
	streams.Range(func(_, s any) bool {
		if s.(*batchStream) != nil {
			n++
		}
		return true
	})
	if n == 0 || n > len(c.Nodes) {
		t.Fatalf("%d Batch streams for %d nodes", n, len(c.Nodes))
	}
	if calls := len(targets.take()); calls < 32*20*2 {
		t.Fatalf("%d requests recorded, want at least %d", calls, 32*20*2)
	}
}

// TestTracedCallsGoUnary: a call whose context carries a sampled span is
// sent as a unary call, so that its trace crosses to the nodes; others go
// on the Batch stream.
func TestTracedCallsGoUnary(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	ctx, cl, targets := newTracedClient(t, c)
	traced := trace.ContextWithSpanContext(ctx, trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1}, SpanID: trace.SpanID{1}, TraceFlags: trace.FlagsSampled}))
	for _, tc := range []struct {
		name    string
		ctx     context.Context
		batched int
	}{{"untraced", ctx, 1}, {"traced", traced, 0}} {
		targets.mu.Lock()
		before := targets.batched
		targets.mu.Unlock()
		if _, err := cl.Put(tc.ctx, []byte("traced-"+tc.name), []byte("v")); err != nil {
			t.Fatal(err)
		}
		targets.mu.Lock()
		got := targets.batched - before
		targets.mu.Unlock()
		if got != tc.batched {
			t.Errorf("%s put: %d requests on a Batch stream, want %d", tc.name, got, tc.batched)
		}
	}
}
