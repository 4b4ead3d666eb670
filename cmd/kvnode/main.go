// Command kvnode runs one ringkv server.
//
//	kvnode --id n1 --listen 127.0.0.1:7001 --metrics-addr 127.0.0.1:9101 \
//	  --data-dir DIR --peers n1=127.0.0.1:7001,n2=127.0.0.1:7002,n3=127.0.0.1:7003
//
// The same --peers on each initial node creates the cluster; a node whose
// data dir is already initialized ignores --peers and rejoins. SIGTERM or
// SIGINT shut down cleanly (leadership handed off first); SIGKILL loses no
// acknowledged write, since every acknowledgement follows a WAL sync.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/ringkv/ringkv/node"
	"github.com/ringkv/ringkv/shard"
)

func main() { os.Exit(run(os.Args[1:], os.Stderr)) }

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("kvnode", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cfg         node.Config
		peers       string
		metricsAddr string
		raftLog     string
		logLevel    string
	)
	fs.StringVar(&cfg.ID, "id", "", "node id (required)")
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:7001", "gRPC address (client, Raft and admin traffic)")
	fs.StringVar(&metricsAddr, "metrics-addr", "", "HTTP address for /healthz (empty: off)")
	fs.StringVar(&cfg.DataDir, "data-dir", "", "data directory (required)")
	fs.StringVar(&peers, "peers", "", "initial cluster: ID=HOST:PORT,... (ignored once the data dir is initialized)")
	fs.IntVar(&cfg.Partitions, "partitions", 16, "partitions of a new cluster (power of two)")
	fs.StringVar(&raftLog, "raft-log", string(shard.LogWAL), "where Raft logs live: wal (the node's shared WAL) or boltdb (baseline)")
	fs.DurationVar(&cfg.HeartbeatTimeout, "heartbeat-timeout", 500*time.Millisecond, "Raft heartbeat timeout")
	fs.DurationVar(&cfg.ElectionTimeout, "election-timeout", 500*time.Millisecond, "Raft election timeout")
	fs.DurationVar(&cfg.LeaderLeaseTimeout, "leader-lease", 500*time.Millisecond, "a primary cut off from its replicas for this long steps down")
	fs.DurationVar(&cfg.OpTimeout, "op-timeout", 3*time.Second, "bound for a strong write or quorum read that cannot reach a majority")
	fs.Uint64Var(&cfg.SnapshotThreshold, "snapshot-threshold", 8192, "log entries between snapshots")
	fs.DurationVar(&cfg.SnapshotInterval, "snapshot-interval", 30*time.Second, "how often to check whether a snapshot is due")
	fs.Uint64Var(&cfg.TrailingLogs, "trailing-logs", 10240, "log entries kept after a snapshot, so a short outage replays the log")
	fs.StringVar(&logLevel, "log-level", "info", "trace, debug, info, warn or error")
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
	if _, _, err := net.SplitHostPort(cfg.Listen); err != nil {
		return usage("--listen %q: %v", cfg.Listen, err)
	}
	cfg.RaftLog = shard.LogBackend(raftLog)
	if cfg.RaftLog != shard.LogWAL && cfg.RaftLog != shard.LogBoltDB {
		return usage("--raft-log %q: want wal or boltdb", raftLog)
	}
	var err error
	if cfg.Peers, err = node.ParsePeers(peers); err != nil {
		return usage("%v", err)
	}
	cfg.Logger = hclog.New(&hclog.LoggerOptions{
		Name: cfg.ID, Level: hclog.LevelFromString(logLevel), Output: stderr, IncludeLocation: false,
	})
	n, err := node.Start(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "kvnode: %v\n", err)
		return 3
	}
	var hs *http.Server
	if metricsAddr != "" {
		mux := http.NewServeMux()
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
		hs = &http.Server{Addr: metricsAddr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := hs.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				cfg.Logger.Error("metrics server", "error", err)
			}
		}()
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	s := <-sig
	cfg.Logger.Info("shutting down", "signal", s.String())
	if hs != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		hs.Shutdown(ctx)
		cancel()
	}
	if err := n.Close(); err != nil {
		cfg.Logger.Error("shutdown", "error", err)
		return 3
	}
	return 0
}
