package node

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/stats"

	"github.com/ringkv/ringkv/metrics"
	pb "github.com/ringkv/ringkv/proto/ringkvpb"
)

// tracing holds the otelgrpc options of a node; with no tracer provider it
// adds no stats handler at all, so untraced nodes pay nothing.
type tracing struct{ opts []otelgrpc.Option }

func newTracing(tp trace.TracerProvider, traceRaft bool) tracing {
	if tp == nil {
		return tracing{}
	}
	traced := []string{"/" + pb.KV_ServiceDesc.ServiceName + "/", "/" + pb.Admin_ServiceDesc.ServiceName + "/"}
	if traceRaft {
		traced = append(traced, "/"+pb.Raft_ServiceDesc.ServiceName+"/")
	}
	return tracing{opts: []otelgrpc.Option{
		otelgrpc.WithTracerProvider(tp),
		otelgrpc.WithPropagators(propagation.TraceContext{}),
		// Metrics are Prometheus's job here.
		otelgrpc.WithMeterProvider(metricnoop.NewMeterProvider()),
		// A Batch stream lives as long as its client and carries thousands
		// of unrelated requests: one span for it all would say nothing.
		// Clients send the requests they trace as unary calls.
		otelgrpc.WithFilter(func(info *stats.RPCTagInfo) bool {
			if info.FullMethodName == pb.KV_Batch_FullMethodName {
				return false
			}
			for _, prefix := range traced {
				if strings.HasPrefix(info.FullMethodName, prefix) {
					return true
				}
			}
			return false
		}),
	}}
}

func (t tracing) serverOptions() []grpc.ServerOption {
	if t.opts == nil {
		return nil
	}
	return []grpc.ServerOption{grpc.StatsHandler(otelgrpc.NewServerHandler(t.opts...))}
}

func (t tracing) dialOptions() []grpc.DialOption {
	if t.opts == nil {
		return nil
	}
	return []grpc.DialOption{grpc.WithStatsHandler(otelgrpc.NewClientHandler(t.opts...))}
}

// metricReplicas lists the hosted replicas for a scrape.
func (n *Node) metricReplicas() []metrics.Replica {
	reps := *n.replicas.Load()
	out := make([]metrics.Replica, 0, len(reps))
	for _, p := range n.Partitions() {
		if r := reps[p]; r != nil {
			out = append(out, r)
		}
	}
	return out
}

// Ready reports nil when every hosted replica knows its group's leader and
// has applied all but at most Config.ReadyMaxLag of the entries it knows to
// be committed; otherwise an ErrNotReady naming the first partition that is
// not and why.
func (n *Node) Ready() error {
	if n.view.Load() == nil {
		return fmt.Errorf("%w: the node belongs to no cluster yet", ErrNotReady)
	}
	reps := *n.replicas.Load()
	for _, p := range n.Partitions() {
		r := reps[p]
		if r == nil {
			continue
		}
		// Atomic reads only, not Status: watchReady calls this for every
		// partition four times a second, and Status's configuration read
		// is a round trip through raft's main loop.
		if id, _ := r.Leader(); id == "" {
			return fmt.Errorf("%w: partition %d: no leader known", ErrNotReady, p)
		}
		if commit, applied := r.Raft().CommitIndex(), r.AppliedIndex(); applied+n.cfg.ReadyMaxLag < commit {
			return fmt.Errorf("%w: partition %d: applied index %d trails commit index %d by more than %d entries",
				ErrNotReady, p, applied, commit, n.cfg.ReadyMaxLag)
		}
	}
	return nil
}

// watchReady keeps the gRPC health status in step with Ready and logs each
// change.
func (n *Node) watchReady() {
	defer n.watch.Done()
	tick := time.NewTicker(ReadyPoll)
	defer tick.Stop()
	var last string
	for first := true; ; first = false {
		err := n.Ready()
		reason := ""
		st := healthpb.HealthCheckResponse_SERVING
		if err != nil {
			reason, st = err.Error(), healthpb.HealthCheckResponse_NOT_SERVING
		}
		if first || reason != last {
			n.health.SetServingStatus("", st)
			if err != nil {
				n.log.Info("not ready", "reason", reason)
			} else {
				n.log.Info("ready")
			}
			last = reason
		}
		select {
		case <-n.stop:
			return
		case <-tick.C:
		}
	}
}

// serveHTTP serves /metrics, /healthz and /readyz if configured.
func (n *Node) serveHTTP() error {
	if n.httpLis == nil && n.cfg.MetricsAddr == "" {
		return nil
	}
	if n.httpLis == nil {
		lis, err := net.Listen("tcp", n.cfg.MetricsAddr)
		if err != nil {
			return fmt.Errorf("node: metrics address: %w", err)
		}
		n.httpLis = lis
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", n.metrics.Handler())
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := n.Ready(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ready\n")
	})
	if n.cfg.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	n.http = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	lis := n.httpLis
	go func() {
		if err := n.http.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("metrics server stopped", "error", err)
		}
	}()
	return nil
}

// MetricsAddr is the address /metrics is served at, or "" if none.
func (n *Node) MetricsAddr() string {
	if n.httpLis == nil {
		return ""
	}
	return n.httpLis.Addr().String()
}

// Metrics is the node's metrics (for embedding its registry elsewhere).
func (n *Node) Metrics() *metrics.Metrics { return n.metrics }
