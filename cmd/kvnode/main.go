// Command kvnode runs one ringkv server.
//
//	kvnode --id n1 --listen 127.0.0.1:7001 --metrics-addr 127.0.0.1:9101 \
//	  --data-dir DIR --peers n1=127.0.0.1:7001,n2=127.0.0.1:7002,n3=127.0.0.1:7003
//
// --metrics-addr serves Prometheus metrics on /metrics, liveness on /healthz
// and readiness on /readyz. --otlp-endpoint (or OTEL_EXPORTER_OTLP_ENDPOINT)
// exports traces of KV and Admin calls over OTLP/gRPC, sampling
// --trace-sample-ratio of new traces; without either, tracing is off.
// Logs go to stderr as text or, with --log-format json, one JSON object per
// line; every line names the node, and a partition's lines the partition.
//
// The same --peers on each initial node creates the cluster; a node whose
// data dir is already initialized ignores --peers and rejoins. A node started
// with neither waits until `kvctl join ID ADDR` adds it. A node removed from
// its cluster (it left, or was down past --replace-after and replaced) is
// refused by the others and exits with status 4. SIGTERM or
// SIGINT shut down cleanly (leadership handed off first); SIGKILL loses no
// acknowledged write, since every acknowledgement follows a WAL sync.
//
// Under a cgroup memory limit (a container's), kvnode sets the Go runtime's
// soft memory limit (GOMEMLIMIT) to 90 % of it unless GOMEMLIMIT is already
// set: built without cgo, pebble allocates its block cache on the Go heap, and
// the collector's default pacing (GOGC=100) would let garbage grow as large
// as everything live, cache included, and get the process killed.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/KimMachineGun/automemlimit/memlimit"
	"github.com/hashicorp/go-hclog"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/ringkv/ringkv/cluster"
	"github.com/ringkv/ringkv/internal/storage"
	"github.com/ringkv/ringkv/node"
	"github.com/ringkv/ringkv/raftgroup"
	"github.com/ringkv/ringkv/shard"
)

func main() { os.Exit(run(os.Args[1:], os.Stderr)) }

// memLimitRatio is the part of a cgroup memory limit given to the Go heap;
// the rest is for what the runtime does not count (stacks are counted, but
// not the kernel's page tables or the binary's text).
const memLimitRatio = 0.9

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("kvnode", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cfg         node.Config
		peers       string
		raftLog     string
		logLevel    string
		logFormat   string
		otlp        string
		sampleRatio float64
	)
	fs.StringVar(&cfg.ID, "id", "", "node id (required)")
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:7001", "gRPC address (client, Raft and admin traffic)")
	fs.StringVar(&cfg.Advertise, "advertise-addr", "", "address peers and clients reach this node at (default: its --peers entry, or --listen)")
	fs.StringVar(&cfg.MetricsAddr, "metrics-addr", "", "HTTP address for /metrics, /healthz and /readyz (empty: off)")
	fs.StringVar(&cfg.DataDir, "data-dir", "", "data directory (required)")
	fs.StringVar(&peers, "peers", "", "initial cluster: ID=HOST:PORT,... (ignored once the data dir is initialized)")
	fs.StringVar(&cfg.ClusterToken, "cluster-token", "", "mixed into a new cluster's id with --peers: bootstrap each cluster with its own token, so that nodes of another cluster at the same addresses are refused (ignored once the data dir is initialized)")
	fs.IntVar(&cfg.Partitions, "partitions", 0, "partitions of a new cluster, a power of two (0: --partitions-per-node times the --peers, rounded up to a power of two)")
	fs.StringVar(&raftLog, "raft-log", string(shard.LogWAL), "where Raft logs live: wal (the node's shared WAL) or boltdb (baseline)")
	fs.Int64Var(&cfg.Storage.CacheSize, "cache-size", storage.DefaultCacheSize, "bytes of the storage engine's block cache, most of what the engine keeps in memory")
	fs.Uint64Var(&cfg.Storage.MemTableSize, "memtable-size", storage.DefaultMemTableSize, "bytes of one storage engine memtable (up to two are in memory, counted against --cache-size)")
	fs.IntVar(&cfg.Storage.CompactionConcurrency, "compaction-concurrency", storage.DefaultCompactionConcurrency, "most storage engine compactions that run at once")
	// Raft sends a heartbeat every heartbeat-timeout/10 per partition and
	// replica, which is most of an idle node's CPU; a primary's loss is
	// noticed in about two heartbeat timeouts (docs/benchmarks.md measures
	// both).
	fs.DurationVar(&cfg.Raft.HeartbeatTimeout, "heartbeat-timeout", raftgroup.DefaultHeartbeatTimeout, "Raft heartbeat timeout")
	fs.DurationVar(&cfg.Raft.ElectionTimeout, "election-timeout", raftgroup.DefaultElectionTimeout, "Raft election timeout")
	fs.DurationVar(&cfg.Raft.LeaderLeaseTimeout, "leader-lease", raftgroup.DefaultLeaderLeaseTimeout, "a primary cut off from its replicas for this long steps down")
	fs.DurationVar(&cfg.Raft.CommitTimeout, "commit-timeout", raftgroup.DefaultCommitTimeout, "how long an idle primary waits before telling replicas the commit index again")
	fs.BoolVar(&cfg.Pprof, "pprof", false, "serve /debug/pprof/ on --metrics-addr")
	var contention bool
	fs.BoolVar(&contention, "pprof-contention", false, "with --pprof, also record where goroutines block and wait for locks (/debug/pprof/block and /debug/pprof/mutex); costs CPU")
	fs.DurationVar(&cfg.OpTimeout, "op-timeout", shard.DefaultOpTimeout, "bound for a strong write or quorum read that cannot reach a majority")
	fs.Uint64Var(&cfg.SnapshotPolicy.Threshold, "snapshot-threshold", shard.DefaultSnapshotThreshold, "log entries between snapshots")
	fs.DurationVar(&cfg.BalanceInterval, "balance-interval", node.DefaultBalanceInterval, "how often to hand partitions to their preferred primaries, spreading primaries evenly (negative: never)")
	fs.DurationVar(&cfg.SnapshotPolicy.Interval, "snapshot-interval", shard.DefaultSnapshotInterval, "how often to check whether a snapshot is due")
	fs.Uint64Var(&cfg.SnapshotPolicy.TrailingLogs, "trailing-logs", shard.DefaultTrailingLogs, "log entries kept after a snapshot, so a short outage replays the log")
	fs.DurationVar(&cfg.Timeouts.SuspectAfter, "suspect-after", cluster.DefaultSuspectAfter, "a node silent this long is suspect")
	fs.DurationVar(&cfg.Timeouts.DeadAfter, "dead-after", cluster.DefaultDeadAfter, "a node silent this long is down and dropped from routing")
	fs.DurationVar(&cfg.Timeouts.ReplaceAfter, "replace-after", cluster.DefaultReplaceAfter, "the replicas of a node down this long are re-created on other nodes")
	fs.IntVar(&cfg.MaxMoves, "max-moves", node.DefaultMaxMoves, "partitions whose replicas move at the same time")
	fs.IntVar(&cfg.PartitionsPerNode, "partitions-per-node", node.DefaultPartitionsPerNode, "split until the cluster has this many partitions per placeable node, rounded up to a power of two (negative: never for the cluster's size)")
	fs.Int64Var(&cfg.SplitSize, "split-size", node.DefaultSplitSize, "split once more when a partition holds more bytes on disk (negative: never for size)")
	fs.Float64Var(&cfg.SplitWriteRate, "split-write-rate", 0, "split once more when a partition commits more entries a second (0: never for load)")
	fs.DurationVar(&cfg.SplitCheckInterval, "split-check-interval", node.DefaultSplitCheckInterval, "how often the metadata leader samples partition sizes and write rates")
	fs.IntVar(&cfg.FastJournalRecords, "fast-journal-records", shard.DefaultJournalEntries, "fast writes a partition's primary may hold acknowledged and not yet applied; a fast write that finds the journal full for its op timeout fails Unavailable")
	fs.Int64Var(&cfg.FastJournalBytes, "fast-journal-bytes", shard.DefaultJournalBytes, "bytes of fast writes a partition's primary may hold acknowledged and not yet applied")
	fs.DurationVar(&cfg.TombstoneTTL, "tombstone-ttl", node.DefaultTombstoneTTL, "how long a delete's tombstone is kept before primaries purge it; a write older than the delete that arrives later (a fast write re-offered by a replica away that long) brings the key back (negative: never purge)")
	fs.Uint64Var(&cfg.ReadyMaxLag, "ready-max-lag", node.DefaultReadyMaxLag, "entries a replica's applied index may trail its commit index while the node is ready")
	fs.StringVar(&logLevel, "log-level", "info", "trace, debug, info, warn or error")
	fs.StringVar(&logFormat, "log-format", "text", "text or json")
	fs.StringVar(&otlp, "otlp-endpoint", "", "OTLP/gRPC trace collector, host:port (plaintext) or http(s)://host:port; default $OTEL_EXPORTER_OTLP_ENDPOINT, empty: no tracing")
	fs.Float64Var(&sampleRatio, "trace-sample-ratio", 1, "fraction of new traces sampled, in [0, 1]; a forwarded request follows its caller's decision")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	usage := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "kvnode: "+format+"\n", a...)
		return 2
	}
	if fs.NArg() > 0 {
		return usage("unexpected argument %q", fs.Arg(0))
	}
	if cfg.ID == "" || cfg.DataDir == "" {
		return usage("--id and --data-dir are required")
	}
	if contention {
		if !cfg.Pprof {
			return usage("--pprof-contention needs --pprof")
		}
		// Every wait of 10 µs or more, and one in 10 lock contentions.
		runtime.SetBlockProfileRate(int(10 * time.Microsecond))
		runtime.SetMutexProfileFraction(10)
	}
	cfg.RaftLog = shard.LogBackend(raftLog)
	var err error
	if cfg.Peers, err = node.ParsePeers(peers); err != nil {
		return usage("--peers: %v", err)
	}
	level := hclog.LevelFromString(logLevel)
	if level == hclog.NoLevel {
		return usage("--log-level %q: want trace, debug, info, warn or error", logLevel)
	}
	if logFormat != "text" && logFormat != "json" {
		return usage("--log-format %q: want text or json", logFormat)
	}
	if !(sampleRatio >= 0 && sampleRatio <= 1) {
		return usage("--trace-sample-ratio %v: must be in [0, 1]", sampleRatio)
	}
	cfg.Logger = hclog.New(&hclog.LoggerOptions{
		Name: "kvnode", Level: level, Output: stderr, JSONFormat: logFormat == "json",
	})
	log := cfg.Logger.With("node", cfg.ID)
	if limit, err := memlimit.Set(memlimit.WithRatio(memLimitRatio)); err != nil {
		log.Debug("no cgroup memory limit read", "error", err)
	} else if limit != math.MaxInt64 {
		log.Info("Go memory limit set", "bytes", limit, "cache_size", cfg.Storage.CacheSize)
	}
	if otlp == "" {
		otlp = os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT")
	}
	var tp *sdktrace.TracerProvider
	if otlp != "" {
		if tp, err = tracerProvider(otlp, sampleRatio, cfg.ID); err != nil {
			return usage("--otlp-endpoint %q: %v", otlp, err)
		}
		cfg.TracerProvider = tp
		log.Info("exporting traces", "otlp_endpoint", otlp, "sample_ratio", sampleRatio)
	}
	n, err := node.Start(cfg)
	if errors.Is(err, node.ErrInvalidConfig) {
		// The library names Config fields; each flag above sets the field
		// of its name (--max-moves: MaxMoves).
		return usage("%v", err)
	}
	if err != nil {
		log.Error("start failed", "error", err)
		return 3
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	code := 0
	select {
	case s := <-sig:
		log.Info("shutting down", "signal", s.String())
	case err := <-n.Fatal():
		log.Error("stopping", "error", err)
		code = 4
	}
	if err := n.Close(); err != nil && code == 0 {
		log.Error("shutdown", "error", err)
		code = 3
	}
	if tp != nil {
		// Flush the spans still batched.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := tp.Shutdown(ctx); err != nil {
			log.Warn("trace exporter shutdown", "error", err)
		}
	}
	return code
}

// tracerProvider exports spans in batches over OTLP/gRPC to endpoint,
// sampling ratio of the traces this node starts and following the caller's
// decision for the others.
func tracerProvider(endpoint string, ratio float64, nodeID string) (*sdktrace.TracerProvider, error) {
	opt := otlptracegrpc.WithEndpointURL(endpoint)
	if !strings.Contains(endpoint, "://") {
		if _, _, err := net.SplitHostPort(endpoint); err != nil {
			return nil, err
		}
		opt = otlptracegrpc.WithEndpoint(endpoint)
	}
	opts := []otlptracegrpc.Option{opt}
	if !strings.HasPrefix(endpoint, "https://") {
		opts = append(opts, otlptracegrpc.WithInsecure())
	}
	// New does not connect: an unreachable collector costs dropped spans,
	// never a failed start.
	exp, err := otlptracegrpc.New(context.Background(), opts...)
	if err != nil {
		return nil, err
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(
		attribute.String("service.name", "ringkv"),
		attribute.String("service.instance.id", nodeID),
	))
	if err != nil {
		return nil, err
	}
	return sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio))),
	), nil
}
