// Package router is the coordinator: it serves the KV gRPC service on every
// node and sends each request to its partition's primary.
//
// Path of a request: Client → Coordinator (any node) → Primary → Replicas.
// A coordinator that hosts the primary serves the request itself; otherwise
// it forwards it once, with hops+1, to the primary its local replica knows of
// or, for a partition it does not host, to the partition's replicas in
// placement order. A node receiving a forwarded request (hops > 0) that is not
// the primary answers NotPrimary instead of forwarding again, so a stale view
// can never make a request loop. A client whose request was forwarded and
// served learns where the primary is, so that its next request goes
// straight there: from the PrimaryHeader of a unary call, from
// Response.primary of a batched one.
//
// The router sees its node only through Directory and Replica, so the
// rule can be tested with fakes; the router itself keeps no state but the
// Batch streams' (see BatchServer).
//
// Each forward is traced as a "router.forward" span (with the tracer provider
// of Options), whose context the outgoing call carries, so the primary's
// spans join the coordinator's trace.
//
// Errors leave as gRPC statuses a person can act on: InvalidArgument names
// the field and the limit, NotFound, Unavailable names the partition and the
// bound, and FailedPrecondition carries a NotPrimary detail with the primary.
package router

import (
	"context"
	"errors"
	"fmt"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ringkv/ringkv/fsm"
	"github.com/ringkv/ringkv/internal/consistency"
	pb "github.com/ringkv/ringkv/proto/ringkvpb"
	"github.com/ringkv/ringkv/ring"
	"github.com/ringkv/ringkv/shard"
)

// Directory tells the router where partitions live.
type Directory interface {
	// Lookup maps a key to its partition.
	Lookup(key []byte) ring.PartitionID
	// Replica is this node's replica of p, or nil when the node does not
	// host p. That nil must be the interface's own: a nil *shard.Replica
	// inside a non-nil Replica would be served from.
	Replica(p ring.PartitionID) Replica
	// Addrs lists the addresses of p's replicas, preferred primary first.
	Addrs(p ring.PartitionID) []string
	// Owner is the partition of this node's replica whose range holds
	// key, ok false if none does: after a split this node applied, the
	// child, which its map may not show yet.
	Owner(key []byte) (p ring.PartitionID, ok bool)
}

// Replica is what the router calls on this node's replica of a partition.
// A replica that is not the primary answers a *shard.NotPrimaryError,
// naming the primary when it knows it; the router forwards on that.
type Replica interface {
	Put(ctx context.Context, key, value []byte, mode shard.WriteMode) (fsm.Stamp, error)
	Delete(ctx context.Context, key []byte, mode shard.WriteMode) (fsm.Stamp, error)
	Get(ctx context.Context, key []byte, mode shard.ReadMode) (fsm.Item, error)
}

var _ Replica = (*shard.Replica)(nil)

// Dialer returns a shared client connection to a node.
type Dialer func(addr string) (grpc.ClientConnInterface, error)

// Router implements pb.KVServer.
type Router struct {
	pb.UnimplementedKVServer
	dir    Directory
	dial   Dialer
	limits fsm.Options
	tracer trace.Tracer
	batch  *BatchServer
}

// Options configure a Router.
type Options struct {
	// Limits must match the replicas'.
	Limits fsm.Options
	// TracerProvider traces forwards; nil means no tracing.
	TracerProvider trace.TracerProvider
	// Interceptor, if not nil, wraps each request of a Batch stream as the
	// server's unary interceptors wrap a unary call (metrics, say).
	Interceptor grpc.UnaryServerInterceptor
}

// New returns a router over dir.
func New(dir Directory, dial Dialer, opts Options) *Router {
	tp := opts.TracerProvider
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	rt := &Router{dir: dir, dial: dial, limits: opts.Limits, tracer: tp.Tracer("github.com/ringkv/ringkv/router")}
	rt.batch = newBatchServer(handlers{put: rt.put, get: rt.get, delete: rt.delete}, opts.Interceptor)
	return rt
}

var _ pb.KVServer = (*Router)(nil)

func (rt *Router) Put(ctx context.Context, req *pb.PutRequest) (*pb.PutResponse, error) {
	return unaryCall(ctx, req, rt.put)
}

func (rt *Router) Delete(ctx context.Context, req *pb.DeleteRequest) (*pb.DeleteResponse, error) {
	return unaryCall(ctx, req, rt.delete)
}

func (rt *Router) Get(ctx context.Context, req *pb.GetRequest) (*pb.GetResponse, error) {
	return unaryCall(ctx, req, rt.get)
}

// unaryCall serves a unary call with h and sends the primary hint h
// returns, if any, in the PrimaryHeader. (A Batch stream has sent its
// header long before; it puts the hint in the request's Response.)
func unaryCall[Req, Resp any](ctx context.Context, req Req, h hintedHandler[Req, Resp]) (Resp, error) {
	resp, primary, err := h(ctx, req)
	if primary != "" {
		// Failing to set it costs the client a detour, not its answer.
		_ = grpc.SetHeader(ctx, metadata.Pairs(pb.PrimaryHeader, primary))
	}
	return resp, err
}

// hintedHandler serves one KV request and returns with its answer the
// primary hint: pb.FormatPrimary of the primary the request was forwarded
// to and served by, or "" when the client sent it to the right node or no
// forward succeeded.
type hintedHandler[Req, Resp any] func(context.Context, Req) (Resp, string, error)

func (rt *Router) put(ctx context.Context, req *pb.PutRequest) (*pb.PutResponse, string, error) {
	mode, err := consistency.Write(req.GetConsistency())
	return serve(ctx, rt, request{modeErr: err, key: req.GetKey(), value: req.GetValue(), hops: req.GetHops()},
		func(ctx context.Context, r Replica) (*pb.PutResponse, error) {
			st, err := r.Put(ctx, req.GetKey(), req.GetValue(), mode)
			if err != nil {
				return nil, err
			}
			return &pb.PutResponse{Version: st.Version, Timestamp: Timestamp(st)}, nil
		},
		func(ctx context.Context, c pb.KVClient) (*pb.PutResponse, error) {
			return c.Put(ctx, &pb.PutRequest{Key: req.Key, Value: req.Value, Consistency: req.Consistency, Hops: req.Hops + 1})
		})
}

func (rt *Router) delete(ctx context.Context, req *pb.DeleteRequest) (*pb.DeleteResponse, string, error) {
	mode, err := consistency.Write(req.GetConsistency())
	return serve(ctx, rt, request{modeErr: err, key: req.GetKey(), hops: req.GetHops()},
		func(ctx context.Context, r Replica) (*pb.DeleteResponse, error) {
			st, err := r.Delete(ctx, req.GetKey(), mode)
			if err != nil {
				return nil, err
			}
			return &pb.DeleteResponse{Version: st.Version, Timestamp: Timestamp(st)}, nil
		},
		func(ctx context.Context, c pb.KVClient) (*pb.DeleteResponse, error) {
			return c.Delete(ctx, &pb.DeleteRequest{Key: req.Key, Consistency: req.Consistency, Hops: req.Hops + 1})
		})
}

func (rt *Router) get(ctx context.Context, req *pb.GetRequest) (*pb.GetResponse, string, error) {
	mode, err := consistency.Read(req.GetConsistency())
	return serve(ctx, rt, request{modeErr: err, key: req.GetKey(), hops: req.GetHops()},
		func(ctx context.Context, r Replica) (*pb.GetResponse, error) {
			it, err := r.Get(ctx, req.GetKey(), mode)
			if err != nil {
				return nil, err
			}
			return &pb.GetResponse{Value: it.Value, Version: it.Version, Timestamp: Timestamp(it.Stamp)}, nil
		},
		func(ctx context.Context, c pb.KVClient) (*pb.GetResponse, error) {
			return c.Get(ctx, &pb.GetRequest{Key: req.Key, Consistency: req.Consistency, Hops: req.Hops + 1})
		})
}

// request is one Put, Delete or Get as serve and route see it.
type request struct {
	modeErr error // from mapping the request's consistency
	key     []byte
	value   []byte // nil for Delete and Get, which the value limit passes
	hops    uint32
}

// serve is the one path of Put, Delete and Get: local serves the request
// on this node's replica, remote forwards it, with hops+1, to another
// node. It refuses a bad request before it goes anywhere, checking its
// consistency, then its key, then its value, so that a client learns of
// the first problem however the request would have been routed; then it
// routes the request.
//
// local and remote are parameters, not fields of request: escape
// analysis treats a struct as one value, and the key leaks (to
// Directory.Lookup), so closures beside it would be heap-allocated, two
// allocations per request.
func serve[T any](ctx context.Context, rt *Router, req request,
	local func(context.Context, Replica) (T, error), remote func(context.Context, pb.KVClient) (T, error)) (T, string, error) {
	var zero T
	if req.modeErr != nil {
		return zero, "", req.modeErr
	}
	if err := rt.limits.ValidateKey(req.key); err != nil {
		return zero, "", Status(err)
	}
	if err := rt.limits.ValidateValue(req.value); err != nil {
		return zero, "", Status(err)
	}
	return route(ctx, rt, req.key, req.hops, local, remote)
}

// route serves a request locally when this node hosts the primary and
// forwards it once otherwise. With the answer it returns the primary hint
// (see hintedHandler): set only when a forward from the client's own
// coordinator (hops 0) succeeded, since only then is the client's map
// known to be out of date.
//
// A key a split moved is answered by the partition that owns it now: the
// local replica of the parent refuses it (a *fsm.RangeError) once it
// applied the split, and this node, which hosts the parent's replica, then
// hosts the child's too (Directory.Owner), so the request goes there at
// once, before the map records the split; without a hint, since the
// client's map has no such partition yet.
func route[T any](ctx context.Context, rt *Router, key []byte, hops uint32,
	local func(context.Context, Replica) (T, error), remote func(context.Context, pb.KVClient) (T, error)) (T, string, error) {
	p := rt.dir.Lookup(key)
	resp, hint, err := routeTo(ctx, rt, p, hops, local, remote)
	if moved := (*fsm.RangeError)(nil); errors.As(err, &moved) {
		if owner, ok := rt.dir.Owner(key); ok && owner != p {
			resp, _, err = routeTo(ctx, rt, owner, hops, local, remote)
			return resp, "", Status(err)
		}
	}
	return resp, hint, Status(err)
}

// routeTo is route for partition p. Its error is the replica's own when
// served here, for route to inspect; route converts it (Status).
func routeTo[T any](ctx context.Context, rt *Router, p ring.PartitionID, hops uint32,
	local func(context.Context, Replica) (T, error), remote func(context.Context, pb.KVClient) (T, error)) (T, string, error) {
	var zero T
	var targets []string
	if r := rt.dir.Replica(p); r != nil {
		resp, err := local(ctx, r)
		var np *shard.NotPrimaryError
		if !errors.As(err, &np) || hops > 0 || np.LeaderAddr == "" {
			return resp, "", err
		}
		targets = []string{np.LeaderAddr}
	} else if hops > 0 {
		return zero, "", &shard.NotPrimaryError{Partition: uint32(p)}
	} else {
		targets = rt.dir.Addrs(p)
	}
	// Here hops is 0: a forwarded request is never forwarded again.
	// A replica that is not the primary may name it: try that next, once.
	var last error
	tried := map[string]bool{}
	for i := 0; i < len(targets) && ctx.Err() == nil; i++ {
		addr := targets[i]
		if tried[addr] {
			continue
		}
		tried[addr] = true
		resp, err := forward(ctx, rt, p, addr, hops, remote)
		if err == nil {
			return resp, pb.FormatPrimary(uint32(p), addr), nil
		}
		// Only a NotPrimary answer is safe to pass on: after Unavailable a
		// write's outcome is unknown, and retrying it elsewhere could apply
		// it twice.
		if status.Code(err) != codes.FailedPrecondition {
			return resp, "", err
		}
		last = err
		if np := pb.NotPrimaryOf(err); np != nil && np.GetPrimaryAddr() != "" {
			targets = append(targets, np.GetPrimaryAddr())
		}
	}
	if last == nil {
		last = &shard.NotPrimaryError{Partition: uint32(p)}
	}
	return zero, "", last
}

// forward sends one request to addr inside a "router.forward" span.
func forward[T any](ctx context.Context, rt *Router, p ring.PartitionID, addr string, hops uint32,
	remote func(context.Context, pb.KVClient) (T, error)) (resp T, err error) {
	ctx, span := rt.tracer.Start(ctx, "router.forward", trace.WithAttributes(
		attribute.Int64("ringkv.partition", int64(p)),
		attribute.String("ringkv.target", addr),
		attribute.Int64("ringkv.hops", int64(hops)+1),
	))
	defer func() {
		if err != nil {
			span.RecordError(err)
			span.SetStatus(otelcodes.Error, err.Error())
		}
		span.End()
	}()
	conn, err := rt.dial(addr)
	if err != nil {
		return resp, err
	}
	return remote(ctx, pb.NewKVClient(conn))
}

// Timestamp converts a stamp's timestamp to its wire form.
func Timestamp(st fsm.Stamp) *pb.Timestamp {
	return &pb.Timestamp{WallTime: st.Timestamp.WallTime, Logical: st.Timestamp.Logical}
}

// Status converts a replica's error into the gRPC status the client sees.
func Status(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	var np *shard.NotPrimaryError
	var lim *fsm.LimitError
	var moved *fsm.RangeError
	switch {
	case errors.As(err, &moved):
		// A split handed the key to another partition: nothing was
		// written, and the caller's map predates the split. A NotPrimary
		// naming no primary has a client refresh its map and retry; the
		// partition it names is not known here.
		st, derr := status.New(codes.FailedPrecondition, moved.Error()).WithDetails(&pb.NotPrimary{})
		if derr != nil {
			return status.Error(codes.FailedPrecondition, moved.Error())
		}
		return st.Err()
	case errors.As(err, &lim):
		return status.Error(codes.InvalidArgument, lim.Error())
	case errors.As(err, &np):
		st, derr := status.New(codes.FailedPrecondition, np.Error()).WithDetails(&pb.NotPrimary{
			Partition: np.Partition, PrimaryId: np.LeaderID, PrimaryAddr: np.LeaderAddr,
		})
		if derr != nil {
			return status.Error(codes.FailedPrecondition, np.Error())
		}
		return st.Err()
	case errors.Is(err, shard.ErrSuperseded):
		return status.Error(codes.Aborted, err.Error())
	case errors.Is(err, shard.ErrNotFound):
		return status.Error(codes.NotFound, "key not found")
	case errors.Is(err, shard.ErrNoQuorum), errors.Is(err, shard.ErrClosed), errors.Is(err, shard.ErrJournalFull):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	}
	return status.Error(codes.Internal, fmt.Sprint(err))
}
