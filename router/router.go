// Package router is the coordinator: it serves the KV gRPC service on every
// node and sends each request to its partition's primary.
//
// Path of a request: Client → Coordinator (any node) → Primary → Replicas.
// A coordinator that hosts the primary serves the request itself; otherwise
// it forwards it once, with hops+1, to the primary its local replica knows of
// or, for a partition it does not host, to the partition's replicas in
// placement order. A node receiving a forwarded request (hops > 0) that is not
// the primary answers NotPrimary instead of forwarding again, so a stale view
// can never make a request loop.
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
	"google.golang.org/grpc/status"

	"github.com/ringkv/ringkv/fsm"
	pb "github.com/ringkv/ringkv/proto/ringkvpb"
	"github.com/ringkv/ringkv/ring"
	"github.com/ringkv/ringkv/shard"
)

// Directory tells the router where partitions live.
type Directory interface {
	// Lookup maps a key to its partition.
	Lookup(key []byte) ring.PartitionID
	// Replica is this node's replica of p, or nil.
	Replica(p ring.PartitionID) *shard.Replica
	// Addrs lists the addresses of p's replicas, preferred primary first.
	Addrs(p ring.PartitionID) []string
}

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
	rt.batch = NewBatchServer(rt, opts.Interceptor)
	return rt
}

var _ pb.KVServer = (*Router)(nil)

func (rt *Router) Put(ctx context.Context, req *pb.PutRequest) (*pb.PutResponse, error) {
	mode, err := WriteMode(req.GetConsistency())
	if err != nil {
		return nil, err
	}
	if err := rt.limits.ValidateKey(req.GetKey()); err != nil {
		return nil, Status(err)
	}
	if err := rt.limits.ValidateValue(req.GetValue()); err != nil {
		return nil, Status(err)
	}
	return route(ctx, rt, req.GetKey(), req.GetHops(),
		func(r *shard.Replica) (*pb.PutResponse, error) {
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

func (rt *Router) Delete(ctx context.Context, req *pb.DeleteRequest) (*pb.DeleteResponse, error) {
	mode, err := WriteMode(req.GetConsistency())
	if err != nil {
		return nil, err
	}
	if err := rt.limits.ValidateKey(req.GetKey()); err != nil {
		return nil, Status(err)
	}
	return route(ctx, rt, req.GetKey(), req.GetHops(),
		func(r *shard.Replica) (*pb.DeleteResponse, error) {
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

func (rt *Router) Get(ctx context.Context, req *pb.GetRequest) (*pb.GetResponse, error) {
	mode, err := ReadMode(req.GetConsistency())
	if err != nil {
		return nil, err
	}
	if err := rt.limits.ValidateKey(req.GetKey()); err != nil {
		return nil, Status(err)
	}
	return route(ctx, rt, req.GetKey(), req.GetHops(),
		func(r *shard.Replica) (*pb.GetResponse, error) {
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

// ReadMode maps a request's read consistency to the replica's read mode
// (UNSPECIFIED is LOCAL); an unknown value is InvalidArgument.
func ReadMode(c pb.ReadConsistency) (shard.ReadMode, error) {
	switch c {
	case pb.ReadConsistency_READ_CONSISTENCY_UNSPECIFIED, pb.ReadConsistency_READ_CONSISTENCY_LOCAL:
		return shard.Local, nil
	case pb.ReadConsistency_READ_CONSISTENCY_QUORUM:
		return shard.Quorum, nil
	}
	return 0, status.Errorf(codes.InvalidArgument, "consistency: unknown read consistency %d (want LOCAL or QUORUM)", c)
}

// WriteMode maps a request's write consistency to the replica's write mode
// (UNSPECIFIED is STRONG); an unknown value is InvalidArgument.
func WriteMode(c pb.WriteConsistency) (shard.WriteMode, error) {
	switch c {
	case pb.WriteConsistency_WRITE_CONSISTENCY_UNSPECIFIED, pb.WriteConsistency_WRITE_CONSISTENCY_STRONG:
		return shard.Strong, nil
	case pb.WriteConsistency_WRITE_CONSISTENCY_FAST:
		return shard.Fast, nil
	}
	return 0, status.Errorf(codes.InvalidArgument, "consistency: unknown write consistency %d (want STRONG or FAST)", c)
}

// route serves a request locally when this node hosts the primary and
// forwards it once otherwise.
func route[T any](ctx context.Context, rt *Router, key []byte, hops uint32,
	local func(*shard.Replica) (T, error), remote func(context.Context, pb.KVClient) (T, error)) (T, error) {
	var zero T
	p := rt.dir.Lookup(key)
	var targets []string
	if r := rt.dir.Replica(p); r != nil {
		resp, err := local(r)
		var np *shard.NotPrimaryError
		if !errors.As(err, &np) || hops > 0 || np.LeaderAddr == "" {
			return resp, Status(err)
		}
		targets = []string{np.LeaderAddr}
	} else if hops > 0 {
		return zero, Status(&shard.NotPrimaryError{Partition: uint32(p)})
	} else {
		targets = rt.dir.Addrs(p)
	}
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
		if err == nil && hops == 0 {
			// The client's map is out of date: tell it where the primary
			// is, so its next request goes straight there.
			tellPrimary(ctx, uint32(p), addr)
		}
		// Only a NotPrimary answer is safe to pass on: after Unavailable a
		// write's outcome is unknown, and retrying it elsewhere could apply
		// it twice.
		if status.Code(err) != codes.FailedPrecondition {
			return resp, err
		}
		last = err
		if np := pb.NotPrimaryOf(err); np != nil && np.GetPrimaryAddr() != "" {
			targets = append(targets, np.GetPrimaryAddr())
		}
	}
	if last == nil {
		last = Status(&shard.NotPrimaryError{Partition: uint32(p)})
	}
	return zero, last
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
	switch {
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
	case errors.Is(err, shard.ErrNoQuorum), errors.Is(err, shard.ErrClosed):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	}
	return status.Error(codes.Internal, fmt.Sprint(err))
}
