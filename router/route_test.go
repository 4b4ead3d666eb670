package router

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ringkv/ringkv/fsm"
	pb "github.com/ringkv/ringkv/proto/ringkvpb"
	"github.com/ringkv/ringkv/ring"
	"github.com/ringkv/ringkv/shard"
)

// testPartition is the partition of every key in these tests.
const testPartition = 3

// Versions that tell who served a request.
const (
	servedLocally  = 1
	servedRemotely = 42
)

// fakeDir is a Directory of one partition.
type fakeDir struct {
	replica Replica // nil: this node does not host the partition
	addrs   []string
}

func (fakeDir) Lookup([]byte) ring.PartitionID        { return testPartition }
func (d fakeDir) Replica(ring.PartitionID) Replica    { return d.replica }
func (d fakeDir) Addrs(ring.PartitionID) []string     { return d.addrs }
func (fakeDir) Owner([]byte) (ring.PartitionID, bool) { return 0, false }

// fakeReplica answers every call with err, or serves it when err is nil.
type fakeReplica struct {
	err   error
	mu    sync.Mutex
	calls int
}

func (r *fakeReplica) answer() (fsm.Stamp, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if r.err != nil {
		return fsm.Stamp{}, r.err
	}
	return fsm.Stamp{Version: servedLocally}, nil
}

func (r *fakeReplica) Put(context.Context, []byte, []byte, shard.WriteMode) (fsm.Stamp, error) {
	return r.answer()
}

func (r *fakeReplica) Delete(context.Context, []byte, shard.WriteMode) (fsm.Stamp, error) {
	return r.answer()
}

func (r *fakeReplica) Get(context.Context, []byte, shard.ReadMode) (fsm.Item, error) {
	st, err := r.answer()
	return fsm.Item{Stamp: st}, err
}

func (r *fakeReplica) count() int {
	if r == nil {
		return 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls
}

// fakeNet is the other nodes as the router dials them: the node at an
// address answers every call with its scripted error, or serves it when
// it has none, and each call is recorded.
type fakeNet struct {
	answers map[string]error

	mu    sync.Mutex
	calls []forwarded
}

// forwarded is one call the router made to another node.
type forwarded struct {
	addr, method string
	hops         uint32
}

func (n *fakeNet) dial(addr string) (grpc.ClientConnInterface, error) {
	return fakeConn{n, addr}, nil
}

func (n *fakeNet) forwards() []forwarded {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.calls)
}

type fakeConn struct {
	net  *fakeNet
	addr string
}

func (c fakeConn) Invoke(_ context.Context, method string, args, reply any, _ ...grpc.CallOption) error {
	c.net.mu.Lock()
	c.net.calls = append(c.net.calls, forwarded{c.addr, method, args.(interface{ GetHops() uint32 }).GetHops()})
	c.net.mu.Unlock()
	if err := c.net.answers[c.addr]; err != nil {
		return err
	}
	switch r := reply.(type) {
	case *pb.PutResponse:
		r.Version = servedRemotely
	case *pb.DeleteResponse:
		r.Version = servedRemotely
	case *pb.GetResponse:
		r.Version = servedRemotely
	}
	return nil
}

func (fakeConn) NewStream(context.Context, *grpc.StreamDesc, string, ...grpc.CallOption) (grpc.ClientStream, error) {
	return nil, status.Error(codes.Unimplemented, "fakeConn streams nothing")
}

// notPrimaryAt is a node's NotPrimary answer naming the primary at addr
// ("" for none known), as it crosses the wire.
func notPrimaryAt(addr string) error {
	return Status(&shard.NotPrimaryError{Partition: testPartition, LeaderID: "n", LeaderAddr: addr})
}

// notPrimaryErr is the local replica's NotPrimary error naming addr.
func notPrimaryErr(addr string) error {
	np := &shard.NotPrimaryError{Partition: testPartition}
	if addr != "" {
		np.LeaderID, np.LeaderAddr = "n", addr
	}
	return np
}

// serveRequest serves req, a Put, Delete or Get request, with the
// router's hinted handler for it; version is that of the answer.
func serveRequest(ctx context.Context, rt *Router, req any) (version uint64, hint string, err error) {
	switch req := req.(type) {
	case *pb.PutRequest:
		r, hint, err := rt.put(ctx, req)
		return r.GetVersion(), hint, err
	case *pb.DeleteRequest:
		r, hint, err := rt.delete(ctx, req)
		return r.GetVersion(), hint, err
	case *pb.GetRequest:
		r, hint, err := rt.get(ctx, req)
		return r.GetVersion(), hint, err
	}
	panic(fmt.Sprintf("serveRequest: %T is no KV request", req))
}

// kvOps are the router's requests, each as a client would send it with the
// given hops, and the method a forward of it calls.
var kvOps = []struct {
	name, method string
	request      func(hops uint32) any
}{
	{"put", pb.KV_Put_FullMethodName, func(hops uint32) any {
		return &pb.PutRequest{Key: []byte("k"), Value: []byte("v"), Hops: hops}
	}},
	{"delete", pb.KV_Delete_FullMethodName, func(hops uint32) any { return &pb.DeleteRequest{Key: []byte("k"), Hops: hops} }},
	{"get", pb.KV_Get_FullMethodName, func(hops uint32) any { return &pb.GetRequest{Key: []byte("k"), Hops: hops} }},
}

// TestRoute pins the routing rule for each of Put, Delete and Get: who
// serves a request, which nodes it is forwarded to and in what order, what
// the client is answered, and when it is told where the primary is.
func TestRoute(t *testing.T) {
	unavailable := status.Error(codes.Unavailable, "no quorum")
	tests := []struct {
		name    string
		hops    uint32
		replica *fakeReplica // nil: the partition is not hosted here
		addrs   []string
		answers map[string]error // of the other nodes; nil serves

		code       codes.Code
		version    uint64 // of a successful answer
		npPrimary  string // the NotPrimary detail's primary, for FailedPrecondition
		forwards   []string
		localCalls int
		hint       string // the primary the client is told of, if any
	}{
		{
			name: "the primary serves a client's request", replica: &fakeReplica{}, addrs: []string{"b"},
			code: codes.OK, version: servedLocally, localCalls: 1,
		},
		{
			name: "the primary serves a forwarded request", hops: 1, replica: &fakeReplica{},
			code: codes.OK, version: servedLocally, localCalls: 1,
		},
		{
			name: "a forwarded request to a replica that is not the primary is not forwarded again", hops: 1,
			replica: &fakeReplica{err: notPrimaryErr("leader")}, addrs: []string{"b"},
			code: codes.FailedPrecondition, npPrimary: "leader", localCalls: 1,
		},
		{
			name: "a forwarded request to a node without the partition is not forwarded again", hops: 1,
			addrs: []string{"b"},
			code:  codes.FailedPrecondition,
		},
		{
			name:    "forwarded once to the primary the local replica knows",
			replica: &fakeReplica{err: notPrimaryErr("leader")}, addrs: []string{"b", "c"},
			code: codes.OK, version: servedRemotely, forwards: []string{"leader"}, localCalls: 1,
			hint: pb.FormatPrimary(testPartition, "leader"),
		},
		{
			name:    "a local replica that knows no primary answers NotPrimary",
			replica: &fakeReplica{err: notPrimaryErr("")}, addrs: []string{"b"},
			code: codes.FailedPrecondition, localCalls: 1,
		},
		{
			name:    "the local replica's other errors are answered, not forwarded",
			replica: &fakeReplica{err: shard.ErrNoQuorum}, addrs: []string{"b"},
			code: codes.Unavailable, localCalls: 1,
		},
		{
			name:  "an unhosted partition's replicas are tried in order until one serves",
			addrs: []string{"a", "b", "c"}, answers: map[string]error{"a": notPrimaryAt("")},
			code: codes.OK, version: servedRemotely, forwards: []string{"a", "b"},
			hint: pb.FormatPrimary(testPartition, "b"),
		},
		{
			name:  "the primary a NotPrimary answer names is tried after the others",
			addrs: []string{"a", "b"}, answers: map[string]error{"a": notPrimaryAt("p"), "b": notPrimaryAt("")},
			code: codes.OK, version: servedRemotely, forwards: []string{"a", "b", "p"},
			hint: pb.FormatPrimary(testPartition, "p"),
		},
		{
			name:    "the local replica's primary may redirect once more",
			replica: &fakeReplica{err: notPrimaryErr("leader")}, answers: map[string]error{"leader": notPrimaryAt("p")},
			code: codes.OK, version: servedRemotely, forwards: []string{"leader", "p"}, localCalls: 1,
			hint: pb.FormatPrimary(testPartition, "p"),
		},
		{
			name:  "each node is tried once, then the last NotPrimary is answered",
			addrs: []string{"a", "b"}, answers: map[string]error{"a": notPrimaryAt("b"), "b": notPrimaryAt("a")},
			code: codes.FailedPrecondition, npPrimary: "a", forwards: []string{"a", "b"},
		},
		{
			name:  "Unavailable is answered, not retried elsewhere",
			addrs: []string{"a", "b"}, answers: map[string]error{"a": unavailable},
			code: codes.Unavailable, forwards: []string{"a"},
		},
		{
			name: "no replica known answers NotPrimary",
			code: codes.FailedPrecondition,
		},
	}
	for _, op := range kvOps {
		for _, tt := range tests {
			t.Run(op.name+"/"+tt.name, func(t *testing.T) {
				// A fresh replica per op: the table's is the script.
				var replica *fakeReplica
				dir := fakeDir{addrs: tt.addrs}
				if tt.replica != nil {
					replica = &fakeReplica{err: tt.replica.err}
					dir.replica = replica
				}
				net := &fakeNet{answers: tt.answers}
				rt := New(dir, net.dial, Options{})
				version, hint, err := serveRequest(testContext(t), rt, op.request(tt.hops))

				if code := status.Code(err); code != tt.code {
					t.Fatalf("answered %v, want %v", err, tt.code)
				}
				if tt.code == codes.OK && version != tt.version {
					t.Errorf("answered version %d, want %d", version, tt.version)
				}
				if tt.code == codes.FailedPrecondition {
					np := pb.NotPrimaryOf(err)
					if np == nil || np.GetPartition() != testPartition || np.GetPrimaryAddr() != tt.npPrimary {
						t.Errorf("NotPrimary detail %v, want partition %d and primary %q", np, testPartition, tt.npPrimary)
					}
				}
				if hint != tt.hint {
					t.Errorf("primary hint %q, want %q", hint, tt.hint)
				}
				if got := replica.count(); got != tt.localCalls {
					t.Errorf("local replica called %d times, want %d", got, tt.localCalls)
				}
				var want []forwarded
				for _, addr := range tt.forwards {
					want = append(want, forwarded{addr, op.method, tt.hops + 1})
				}
				if got := net.forwards(); !slices.Equal(got, want) {
					t.Errorf("forwarded %v, want %v", got, want)
				}
			})
		}
	}
}

// TestRouteRefusesBadRequests: a request is checked before it is served or
// forwarded, its consistency first, then its key, then its value.
func TestRouteRefusesBadRequests(t *testing.T) {
	bigKey, bigValue := make([]byte, 9), make([]byte, 17)
	tests := []struct {
		name    string
		req     any
		mention string // which check refused it
	}{
		{"put consistency before key", &pb.PutRequest{Consistency: 99, Value: bigValue}, "consistency:"},
		{"put key before value", &pb.PutRequest{Key: bigKey, Value: bigValue}, "key is"},
		{"put empty key", &pb.PutRequest{Value: []byte("v")}, "key is"},
		{"put value", &pb.PutRequest{Key: []byte("k"), Value: bigValue}, "value is"},
		{"delete consistency before key", &pb.DeleteRequest{Consistency: 99}, "consistency:"},
		{"delete key", &pb.DeleteRequest{Key: bigKey}, "key is"},
		{"get consistency before key", &pb.GetRequest{Consistency: 99}, "consistency:"},
		{"get key", &pb.GetRequest{Key: bigKey}, "key is"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, dir := range []fakeDir{
				{replica: &fakeReplica{}},
				{addrs: []string{"a"}},
			} {
				net := &fakeNet{}
				rt := New(dir, net.dial, Options{Limits: fsm.Options{MaxKeySize: 8, MaxValueSize: 16}})
				_, _, err := serveRequest(testContext(t), rt, tt.req)
				if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), tt.mention) {
					t.Errorf("answered %v, want InvalidArgument saying %q", err, tt.mention)
				}
				if r, _ := dir.replica.(*fakeReplica); r.count() != 0 || len(net.forwards()) != 0 {
					t.Errorf("a bad request was served (%d local calls, forwards %v)", r.count(), net.forwards())
				}
			}
		})
	}
}

// TestPrimaryHint: a client whose request was forwarded is told where the
// primary is, in the PrimaryHeader of a unary call and in the Response of
// a batched one, with or without an interceptor around the batched
// request (a node always has one: metrics); a client that sent it to the
// primary is told nothing.
func TestPrimaryHint(t *testing.T) {
	tests := []struct {
		name string
		dir  fakeDir
		hint string
	}{
		{"served here", fakeDir{replica: &fakeReplica{}}, ""},
		{"forwarded", fakeDir{addrs: []string{"a"}}, pb.FormatPrimary(testPartition, "a")},
	}
	for _, tt := range tests {
		for _, intercepted := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/intercepted=%v", tt.name, intercepted), func(t *testing.T) {
				var mu sync.Mutex
				var seen []string // the methods the interceptor wrapped
				var opts Options
				if intercepted {
					opts.Interceptor = func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
						mu.Lock()
						seen = append(seen, info.FullMethod)
						mu.Unlock()
						return h(ctx, req)
					}
				}
				conn := serveKV(t, New(tt.dir, (&fakeNet{}).dial, opts))
				ctx := testContext(t)

				var header metadata.MD
				if _, err := pb.NewKVClient(conn).Put(ctx, &pb.PutRequest{Key: []byte("k")}, grpc.Header(&header)); err != nil {
					t.Fatal(err)
				}
				if got := strings.Join(header.Get(pb.PrimaryHeader), ","); got != tt.hint {
					t.Errorf("unary call: header %s %q, want %q", pb.PrimaryHeader, got, tt.hint)
				}

				stream := openBatch(t, ctx, conn)
				sendAll(t, stream, &pb.Request{Id: 1, Op: &pb.Request_Get{Get: &pb.GetRequest{Key: []byte("k")}}})
				answers, err := receiveAll(stream)
				if err != nil || len(answers) != 1 || answers[0].GetError() != nil {
					t.Fatalf("batch answered %v, then %v; want one answer", answers, err)
				}
				if got := answers[0].GetPrimary(); got != tt.hint {
					t.Errorf("batched call: Response.primary %q, want %q", got, tt.hint)
				}
				mu.Lock()
				defer mu.Unlock()
				if want := []string{pb.KV_Get_FullMethodName}; intercepted && !slices.Equal(seen, want) {
					t.Errorf("the interceptor wrapped %v, want %v", seen, want)
				}
			})
		}
	}
}

// splitDir is a node that applied a split of testPartition: its replica
// of the parent refuses the key, its replica of the child (owner) serves
// it.
type splitDir struct {
	parent, child *fakeReplica
}

const childPartition = 9

func (splitDir) Lookup([]byte) ring.PartitionID { return testPartition }
func (d splitDir) Replica(p ring.PartitionID) Replica {
	if p == childPartition {
		return d.child
	}
	return d.parent
}
func (splitDir) Addrs(ring.PartitionID) []string       { return nil }
func (splitDir) Owner([]byte) (ring.PartitionID, bool) { return childPartition, true }

// A key a split moved, refused by the parent's replica here, is served by
// the child's replica here before the map shows the child; without a
// hint, which would name a partition the client does not know.
func TestMovedKeyServedByTheChild(t *testing.T) {
	moved := &fsm.RangeError{Field: "key", Hash: 1 << 63, Range: ring.HashRange{Last: 1<<63 - 1}}
	d := splitDir{parent: &fakeReplica{err: moved}, child: &fakeReplica{}}
	rt := New(d, nil, Options{})
	resp, hint, err := rt.put(context.Background(), &pb.PutRequest{Key: []byte("k"), Value: []byte("v")})
	if err != nil || resp.GetVersion() != servedLocally || hint != "" {
		t.Fatalf("put = %v, hint %q, %v; want served by the child, no hint", resp, hint, err)
	}
	if d.parent.count() != 1 || d.child.count() != 1 {
		t.Fatalf("calls: parent %d, child %d", d.parent.count(), d.child.count())
	}
	// A node whose replicas own the key nowhere passes the refusal on,
	// as a NotPrimary naming no primary: the client refreshes its map.
	rt = New(fakeDir{replica: &fakeReplica{err: moved}}, nil, Options{})
	_, _, err = rt.put(context.Background(), &pb.PutRequest{Key: []byte("k"), Value: []byte("v")})
	if np := pb.NotPrimaryOf(err); np == nil || np.GetPrimaryAddr() != "" {
		t.Fatalf("a moved key with no owner here: %v, want a NotPrimary naming no primary", err)
	}
}
