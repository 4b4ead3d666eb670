// Package node assembles one ringkv server process: the shared WAL, a replica
// per hosted partition, the node's member of the metadata group and its
// control loop (package control), and one gRPC server carrying the KV, Raft
// and Admin services (plus health and reflection), and its observability:
// Prometheus metrics, /healthz and /readyz over HTTP, the gRPC health status,
// and OpenTelemetry tracing of KV and Admin calls. It wires; what to host and
// how the cluster changes is control's to decide, requests are router's, the
// Admin service is admin's.
//
// Invariants:
//   - One WAL per node; every hosted replica keeps its Raft log in its own
//     stream of it.
//   - One gRPC listener per node; every partition's Raft traffic shares it.
//   - The cluster's metadata (members, placement, each partition's Raft
//     configuration) lives in the metadata group (package cluster), of which
//     every node is a member; each node keeps its latest view of it in
//     DataDir/cluster.json. A node whose data dir holds one ignores
//     Config.Peers and rejoins with what it recorded; a node with neither
//     waits to be adopted by Join.
//   - A node deletes a replica's data only once the recorded configuration
//     no longer includes it (control decides; DropReplica executes).
//   - The gRPC health status is SERVING exactly while Ready reports nil (as
//     of its last check, every ReadyPoll); Raft RPCs are never traced unless
//     Config.TraceRaft is set.
//
// Goroutines: the gRPC server's Serve and the HTTP server's (until Close);
// watchReady (until Close); the control loops, once the node belongs to a
// cluster (control.Controller, stopped by Close); the metadata group's
// OnChange runs setView on its apply goroutine.
//
// Lock order: closeMu → adoptMu → viewMu, and adoptMu → repMu; viewMu and
// repMu are never held together. closeMu makes Close run once; adoptMu
// makes the start of the cluster's parts (startCluster, from Start or an
// Admin.Adopt) and Close exclusive, so an adoption either sees the node
// closed or has started its loops before Close stops them; viewMu orders
// view changes with their saving; repMu guards changes of the replica map,
// which readers load without locking.
package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/ringkv/ringkv/admin"
	"github.com/ringkv/ringkv/cluster"
	"github.com/ringkv/ringkv/control"
	"github.com/ringkv/ringkv/hlc"
	"github.com/ringkv/ringkv/internal/connpool"
	"github.com/ringkv/ringkv/internal/storage"
	"github.com/ringkv/ringkv/metrics"
	pb "github.com/ringkv/ringkv/proto/ringkvpb"
	"github.com/ringkv/ringkv/ring"
	"github.com/ringkv/ringkv/router"
	"github.com/ringkv/ringkv/shard"
	"github.com/ringkv/ringkv/transport"
	"github.com/ringkv/ringkv/wal"
)

// ReadyPoll is how often a node re-checks readiness for its gRPC health
// status.
const ReadyPoll = 250 * time.Millisecond

// ErrNotReady: a hosted replica knows no leader or has not applied what it
// knows to be committed.
var ErrNotReady = errors.New("not ready")

// Node is a running ringkv server.
type Node struct {
	cfg       Config
	advertise string // the address the node's Raft groups announce
	log       hclog.Logger
	view      atomic.Pointer[cluster.State]
	viewMu    sync.Mutex    // serializes view changes and their saving
	viewCh    chan struct{} // a new view awaits the replicas' reconciliation
	ring      atomic.Pointer[ring.Ring]
	meta      atomic.Pointer[cluster.Meta] // nil until the node belongs to a cluster
	gate      chan struct{}                // snapshot transfers in flight
	wal       *wal.WAL
	engine    *storage.Engine
	trans     *transport.Node
	grpc      *grpc.Server
	router    *router.Router
	lis       net.Listener
	pool      *connpool.Pool
	health    *health.Server
	clock     *hlc.Clock
	served    chan struct{} // closed when Serve returns; nil until it runs
	metrics   *metrics.Metrics
	http      *http.Server
	httpLis   net.Listener
	stop      chan struct{} // closed by Close; stops watchReady
	watch     sync.WaitGroup
	closeMu   sync.Mutex
	closed    bool
	adoptMu   sync.Mutex
	ctl       atomic.Pointer[control.Controller] // set under adoptMu; nil until the node belongs to a cluster
	// fatal receives the reason the node must stop (it was removed).
	fatal     chan error
	fatalOnce sync.Once

	// replicas is copied on write under repMu, so the request path reads it
	// without locking.
	repMu    sync.Mutex
	replicas atomic.Pointer[map[ring.PartitionID]*shard.Replica]
}

// Start opens the node's data, starts its replicas and serves gRPC. A node
// with no cluster yet (no cluster.json, no Config.Peers) serves only Status
// and Adopt until Join adds it. A Config it refuses gives an error wrapping
// ErrInvalidConfig.
func Start(cfg Config) (n *Node, err error) {
	if cfg, err = cfg.withDefaults(); err != nil {
		return nil, err
	}
	n = newNode(cfg)
	// Returning an error sets n to nil: close what was started through a
	// copy.
	started := n
	defer func() {
		if err != nil {
			started.Close()
		}
	}()
	view, create, err := n.loadView()
	if err != nil {
		return nil, err
	}
	if err := n.openWAL(); err != nil {
		return nil, err
	}
	if err := n.openEngine(); err != nil {
		return nil, err
	}
	if err := n.serveGRPC(view); err != nil {
		return nil, err
	}
	if view != nil {
		if err := n.startCluster(view, create); err != nil {
			return nil, err
		}
	} else {
		n.log.Info("node belongs to no cluster yet; waiting to be added with kvctl join", "id", cfg.ID, "addr", n.advertise)
	}
	if err := n.serveHTTP(); err != nil {
		return nil, err
	}
	n.watch.Add(1)
	go n.watchReady()
	n.log.Info("node started", "addr", n.advertise, "metrics_addr", n.MetricsAddr(), "hosted", len(n.Partitions()))
	return n, nil
}

func newNode(cfg Config) *Node {
	n := &Node{
		cfg:     cfg,
		log:     cfg.Logger.With("node", cfg.ID),
		clock:   hlc.New(nil),
		stop:    make(chan struct{}),
		viewCh:  make(chan struct{}, 1),
		fatal:   make(chan error, 1),
		gate:    make(chan struct{}, cfg.MaxSnapshotTransfers),
		httpLis: cfg.MetricsListener,
	}
	n.replicas.Store(&map[ring.PartitionID]*shard.Replica{})
	n.metrics = metrics.New(metrics.Options{
		Node:          cfg.ID,
		Replicas:      n.metricReplicas,
		WALStats:      func() wal.Stats { return n.wal.Stats() },
		EngineStats:   func() storage.Stats { return n.engine.Stats() },
		UpWindow:      3 * cfg.Raft.HeartbeatTimeout,
		MovesInFlight: n.movesInFlight,
	})
	return n
}

// loadView reads the view the data dir holds or, on a new cluster's first
// start, places the cluster from Config.Peers (create). Nil: the node
// waits to be adopted.
func (n *Node) loadView() (view *cluster.State, create bool, err error) {
	if err := os.MkdirAll(n.cfg.DataDir, 0o755); err != nil {
		return nil, false, err
	}
	if view, err = loadState(n.cfg.DataDir, n.cfg.ID); err != nil || view != nil || len(n.cfg.Peers) == 0 {
		return view, false, err
	}
	if view, err = newView(n.cfg); err != nil {
		return nil, false, err
	}
	return view, true, checkPeers(n.cfg.ID, view)
}

func (n *Node) openWAL() (err error) {
	n.wal, err = wal.Open(filepath.Join(n.cfg.DataDir, "wal"), wal.Options{SegmentSize: n.cfg.WALSegmentSize, OnSync: n.metrics.ObserveWALSync})
	if errors.Is(err, wal.ErrInvalid) {
		return fmt.Errorf("node: %w: WALSegmentSize: %w", ErrInvalidConfig, err)
	}
	if err != nil {
		return err
	}
	if rec := n.wal.Recovery(); rec.DroppedBytes > 0 {
		n.log.Warn("wal: cut a torn tail on recovery", "segment", rec.TornSegment, "offset", rec.TornOffset, "bytes", rec.DroppedBytes)
	}
	return nil
}

// openEngine opens the storage engine in DataDir/state. The engine checks
// Config.Storage itself; an option it refuses is a Config error like any
// other (kvnode's --memtable-size, say).
func (n *Node) openEngine() (err error) {
	opts := n.cfg.Storage
	opts.Dir = filepath.Join(n.cfg.DataDir, "state")
	n.engine, err = storage.Open(opts)
	if errors.Is(err, storage.ErrInvalid) {
		return fmt.Errorf("node: %w: Storage: %w", ErrInvalidConfig, err)
	}
	return err
}

// serveGRPC builds the Raft transport, the connection pool and the gRPC
// server with its services, and serves it.
func (n *Node) serveGRPC(view *cluster.State) (err error) {
	tr := newTracing(n.cfg.TracerProvider, n.cfg.TraceRaft)
	topts := transport.Options{OnAppendResponse: n.metrics.ObserveAppendResponse,
		DialOptions:     append(n.identityDialOptions(), chaosDialOptions()...),
		HeartbeatWindow: heartbeatWindow(n.cfg)}
	if n.cfg.TraceRaft {
		topts.DialOptions = append(topts.DialOptions, tr.dialOptions()...)
	}
	n.advertise = n.cfg.Advertise
	if n.advertise == "" && view != nil {
		n.advertise = view.Addr(n.cfg.ID)
	}
	if n.advertise == "" {
		n.advertise = n.cfg.Listen
	}
	if n.trans, err = transport.NewNode(raft.ServerAddress(n.advertise), topts); err != nil {
		return err
	}
	n.pool = connpool.New(append(tr.dialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	// One AppendEntries carries up to raft's MaxAppendEntries (64) entries of up
	// to a 1 MiB value each.
	n.grpc = grpc.NewServer(append(append(append(tr.serverOptions(), n.identityServerOptions()...), transport.ServerOptions()...),
		grpc.MaxRecvMsgSize(72<<20),
		grpc.ChainUnaryInterceptor(n.metrics.UnaryServerInterceptor()))...)
	n.trans.Register(n.grpc)
	n.router = router.New(routerDirectory{n}, n.pool.Dial, router.Options{Limits: n.cfg.Limits, TracerProvider: n.cfg.TracerProvider, Interceptor: n.metrics.UnaryServerInterceptor()})
	pb.RegisterKVServer(n.grpc, n.router)
	pb.RegisterAdminServer(n.grpc, admin.New(adminNode{n}, n.log))
	registerChaos(n.grpc)
	n.health = health.NewServer()
	n.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(n.grpc, n.health)
	reflection.Register(n.grpc)

	n.lis = n.cfg.Listener
	if n.lis == nil {
		if n.lis, err = net.Listen("tcp", n.cfg.Listen); err != nil {
			return fmt.Errorf("node: %w", err)
		}
	}
	n.served = make(chan struct{})
	go func() {
		defer close(n.served)
		if err := n.grpc.Serve(n.lis); err != nil {
			n.log.Error("grpc server stopped", "error", err)
		}
	}()
	return nil
}

// heartbeatWindow is how long the transport holds a heartbeat to send it
// with others. raft sends a group's heartbeats HeartbeatTimeout/10 to /5
// apart, each timer firing on its own, and an idle node's CPU goes mostly
// into those wake-ups and the messages: a window of the shortest gap lets
// each peer's heartbeats of all groups go together (with two smaller fixes
// it cut idle CPU by a third against half that gap; docs/benchmarks.md,
// "Heartbeat window and idle wake-ups"). A round then takes at
// most HeartbeatTimeout/5 + the window + a round trip, which the window's
// cap at LeaderLeaseTimeout/5 keeps well inside the lease a leader must
// renew (0.3 × HeartbeatTimeout against 0.5 at the defaults).
func heartbeatWindow(cfg Config) time.Duration {
	return min(cfg.Raft.HeartbeatTimeout/10, cfg.Raft.LeaderLeaseTimeout/5)
}

// startCluster starts the node's member of the metadata group, its replicas
// and the control loop that keeps them in line with the metadata. create
// bootstraps a new cluster's groups.
func (n *Node) startCluster(view *cluster.State, create bool) error {
	n.adoptMu.Lock()
	defer n.adoptMu.Unlock()
	if n.meta.Load() != nil {
		return nil
	}
	select {
	case <-n.stop:
		return errors.New("node: closed")
	default:
	}
	if err := n.setView(view, true); err != nil {
		return err
	}
	meta, err := n.openMeta(view, create)
	if err != nil {
		return err
	}
	if err := n.dropStrays(view); err != nil {
		return err
	}
	for p := range ring.PartitionID(view.Partitions) {
		if !view.Hosts(n.cfg.ID, p) {
			continue
		}
		r, err := n.openReplica(p)
		if errors.Is(err, control.ErrDeferred) {
			// A split's child whose parent here replays the split: the
			// replay opens it (OnSplit), or the control loop does later.
			n.log.Info("opening a replica later", "partition", p, "why", err)
			continue
		}
		if err != nil {
			return err
		}
		if create {
			var servers []raft.Server
			for _, id := range view.Placement().Replicas(p) {
				servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(id), Address: raft.ServerAddress(view.Addr(string(id)))})
			}
			if err := r.Bootstrap(servers); err != nil {
				return fmt.Errorf("partition %d: bootstrap: %w", p, err)
			}
		}
	}
	n.ctl.Store(control.Start(control.Config{
		ID:              n.cfg.ID,
		Advertise:       n.advertise,
		Meta:            meta,
		View:            n.view.Load,
		ViewChanged:     n.viewCh,
		Dial:            n.pool.Dial,
		OnRemoved:       n.fail,
		Logger:          n.log,
		Timeouts:        n.cfg.Timeouts,
		ManageInterval:  n.cfg.ManageInterval,
		MaxMoves:        n.cfg.MaxMoves,
		PromoteMaxLag:   n.cfg.PromoteMaxLag,
		BalanceInterval: n.cfg.BalanceInterval,
		TombstoneTTL:    n.cfg.TombstoneTTL,

		PartitionsPerNode:  n.cfg.PartitionsPerNode,
		SplitSize:          uint64(max(n.cfg.SplitSize, 0)),
		SplitWriteRate:     n.cfg.SplitWriteRate,
		SplitCheckInterval: n.cfg.SplitCheckInterval,
	}, host{n}))
	return nil
}

// openMeta starts the node's member of the metadata group; create
// bootstraps a new cluster's.
func (n *Node) openMeta(view *cluster.State, create bool) (*cluster.Meta, error) {
	tr, err := n.trans.Transport(cluster.Group)
	if err != nil {
		return nil, err
	}
	meta, err := cluster.Open(cluster.Config{
		NodeID:    n.cfg.ID,
		Dir:       filepath.Join(n.cfg.DataDir, "meta"),
		WAL:       n.wal,
		Transport: tr,
		Logger:    n.log,
		Raft:      n.cfg.Raft,
		OnChange:  func(s *cluster.State) { n.setView(s, false) },
	})
	if err != nil {
		tr.Close()
		return nil, err
	}
	n.meta.Store(meta)
	if servers := metaServers(view); create && votes(servers, n.cfg.ID) {
		// Only a voter may bootstrap (raft refuses with ErrNotVoter): a
		// new cluster's members past MaxVoters learn the configuration,
		// themselves as non-voters included, from the first leader.
		if err := meta.Bootstrap(servers); err != nil {
			return nil, fmt.Errorf("metadata group: bootstrap: %w", err)
		}
	}
	return meta, nil
}

// votes reports whether id is a voter among servers.
func votes(servers []raft.Server, id string) bool {
	return slices.ContainsFunc(servers, func(s raft.Server) bool {
		return s.ID == raft.ServerID(id) && s.Suffrage == raft.Voter
	})
}

func (n *Node) fail(err error) {
	n.fatalOnce.Do(func() {
		n.log.Error("node must stop", "error", err)
		n.fatal <- err
	})
}

// movesInFlight counts the partitions the view has moving.
func (n *Node) movesInFlight() int {
	k := 0
	if v := n.view.Load(); v != nil {
		for p := range ring.PartitionID(v.Partitions) {
			if v.Moving(p) {
				k++
			}
		}
	}
	return k
}

// metaServers is a new cluster's metadata group: its first MaxVoters
// members by id vote, the rest follow.
func metaServers(view *cluster.State) []raft.Server {
	var servers []raft.Server
	for i, m := range view.Members {
		sf := raft.Voter
		if i >= cluster.MaxVoters {
			sf = raft.Nonvoter
		}
		servers = append(servers, raft.Server{Suffrage: sf, ID: raft.ServerID(m.ID), Address: raft.ServerAddress(m.Addr)})
	}
	return servers
}

// setView records a newer view: published, saved to cluster.json, and
// handed to the replicas' reconciliation. An older or equal one is ignored
// (a restarting member of the metadata group replays history), unless
// force.
func (n *Node) setView(s *cluster.State, force bool) error {
	if s == nil {
		return nil
	}
	n.viewMu.Lock()
	defer n.viewMu.Unlock()
	if cur := n.view.Load(); cur != nil && !force && s.Epoch <= cur.Epoch {
		return nil
	}
	r, err := s.Ring()
	if err != nil {
		return err
	}
	if err := saveState(n.cfg.DataDir, n.cfg.ID, s); err != nil {
		n.log.Error("saving the cluster view", "epoch", s.Epoch, "error", err)
		return err
	}
	n.ring.Store(r)
	n.view.Store(s)
	select {
	case n.viewCh <- struct{}{}:
	default:
	}
	return nil
}

func (n *Node) replicaConfig(p ring.PartitionID, tr raft.Transport) shard.Config {
	return shard.Config{
		Partition:      uint32(p),
		NodeID:         raft.ServerID(n.cfg.ID),
		Dir:            n.partitionDir(p),
		Backend:        n.cfg.RaftLog,
		WAL:            n.wal,
		Engine:         n.engine,
		Transport:      tr,
		Clock:          n.clock,
		Logger:         n.log,
		Limits:         n.cfg.Limits,
		Raft:           n.cfg.Raft,
		SnapshotPolicy: n.cfg.SnapshotPolicy,
		OpTimeout:      n.cfg.OpTimeout,
		Snapshots:      n.gate,
		Reoffer:        n.reoffer,
		JournalEntries: n.cfg.FastJournalRecords,
		JournalBytes:   n.cfg.FastJournalBytes,
		OnReplicated:   n.metrics.ObserveFastReplication,
		OnSnapshot:     n.metrics.ObserveSnapshot,
		OnSplit:        func(child uint32, leading bool) { go n.openSplitChild(ring.PartitionID(child), leading) },
		Rehome:         n.rehome,
	}
}

func (n *Node) partitionDir(p ring.PartitionID) string {
	return filepath.Join(n.cfg.DataDir, "partitions", partitionDirName(p))
}

func partitionDirName(p ring.PartitionID) string { return fmt.Sprintf("%04d", p) }

// reoffer hands a fast write cut from a local log to the partition's primary.
func (n *Node) reoffer(ctx context.Context, primary raft.ServerAddress, partition uint32, entry []byte) error {
	conn, err := n.pool.Dial(string(primary))
	if err != nil {
		return err
	}
	_, err = pb.NewAdminClient(conn).Reoffer(ctx, &pb.ReofferRequest{Partition: partition, Entry: entry})
	return err
}

// rehome delivers a re-offered fast write whose key a split handed to
// another partition to that partition's replica here, if it leads, or to
// the first of its voters not known down, which answers NotPrimary unless
// it leads: the queue offers the write again next round.
func (n *Node) rehome(ctx context.Context, key, entry []byte) error {
	p := n.Lookup(key)
	if r := n.Replica(p); r != nil && r.IsPrimary() {
		return r.Reoffer(ctx, entry)
	}
	if r := n.Replica(p); r != nil {
		if _, addr := r.Leader(); addr != "" {
			return n.reoffer(ctx, addr, uint32(p), entry)
		}
	}
	addrs := n.Addrs(p)
	if len(addrs) == 0 {
		return fmt.Errorf("partition %d: no replica known", p)
	}
	return n.reoffer(ctx, raft.ServerAddress(addrs[0]), uint32(p), entry)
}

// Addr is the node's gRPC address.
func (n *Node) Addr() string { return n.lis.Addr().String() }

// ID is the node's id.
func (n *Node) ID() string { return n.cfg.ID }

// Lookup maps a key to its partition. A node that belongs to no cluster
// yet maps every key to partition 0, which it neither hosts nor knows.
func (n *Node) Lookup(key []byte) ring.PartitionID {
	if r := n.ring.Load(); r != nil {
		return r.Lookup(key)
	}
	return 0
}

// Replica is this node's replica of p, or nil.
func (n *Node) Replica(p ring.PartitionID) *shard.Replica { return (*n.replicas.Load())[p] }

// Addrs lists the voters of p's recorded
// configuration that are not down, the preferred primary first.
func (n *Node) Addrs(p ring.PartitionID) []string {
	view := n.view.Load()
	if view == nil || int(p) >= view.Partitions {
		return nil
	}
	var out []string
	for _, sv := range view.Config[p] {
		m := view.Member(sv.ID)
		if !sv.Voter || m == nil || m.State == cluster.Down {
			continue
		}
		if ring.NodeID(sv.ID) == view.Placement().Primary(p) {
			out = append([]string{m.Addr}, out...)
		} else {
			out = append(out, m.Addr)
		}
	}
	return out
}

// View is the cluster metadata as this node last saw it; nil while the node
// belongs to no cluster.
func (n *Node) View() *cluster.State { return n.view.Load() }

// Fatal delivers the reason the node cannot go on (it was removed from its
// cluster); the process should stop.
func (n *Node) Fatal() <-chan error { return n.fatal }

// Partitions lists the partitions this node hosts, in order.
func (n *Node) Partitions() []ring.PartitionID {
	reps := *n.replicas.Load()
	ps := make([]ring.PartitionID, 0, len(reps))
	for p := range reps {
		ps = append(ps, p)
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i] < ps[j] })
	return ps
}

// Close shuts the node down gracefully: it hands leadership of the
// partitions it leads to other replicas, then stops the replicas (their logs
// are synced on every append), the WAL and the gRPC server.
func (n *Node) Close() error {
	n.closeMu.Lock()
	defer n.closeMu.Unlock()
	if n.closed {
		return nil
	}
	n.closed = true
	// Under adoptMu, so that an adoption either sees stop closed or has
	// started its loops before Close waits for them.
	n.adoptMu.Lock()
	close(n.stop)
	if ctl := n.ctl.Load(); ctl != nil {
		ctl.Stop()
	}
	n.adoptMu.Unlock()
	n.watch.Wait()
	if n.health != nil {
		n.health.Shutdown()
	}
	var errs []error
	if n.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		errs = append(errs, n.http.Shutdown(ctx))
		cancel()
	} else if n.httpLis != nil {
		n.httpLis.Close()
	}
	reps := *n.replicas.Load()
	var wg sync.WaitGroup
	for _, r := range reps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.TransferLeadership(); err != nil {
				n.log.Warn("leadership transfer on shutdown", "partition", r.Partition(), "error", err)
			}
		}()
	}
	if meta := n.meta.Load(); meta != nil && meta.IsLeader() {
		// Joins and moves in flight go on under the next leader at once,
		// rather than after an election timeout.
		if err := meta.Raft().LeadershipTransfer().Error(); err != nil {
			n.log.Warn("metadata leadership transfer on shutdown", "error", err)
		}
	}
	wg.Wait()
	// Requests on Batch streams end answered, or vouched unserved so that
	// clients send them elsewhere, rather than cut off by the replicas
	// closing under them. A request in flight takes at most its op timeout.
	if n.router != nil {
		ctx, cancel := context.WithTimeout(context.Background(), n.cfg.OpTimeout+time.Second)
		if err := n.router.Drain(ctx); err != nil {
			n.log.Warn("batch streams still serving at shutdown", "error", err)
		}
		cancel()
	}
	for _, r := range reps {
		errs = append(errs, r.Close())
	}
	if meta := n.meta.Load(); meta != nil {
		errs = append(errs, meta.Close())
	}
	if n.trans != nil {
		errs = append(errs, n.trans.Close())
	}
	if n.grpc != nil {
		stopped := make(chan struct{})
		go func() { n.grpc.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(5 * time.Second):
			n.grpc.Stop()
		}
	}
	// A Start that failed before serving leaves a listener no server owns.
	if n.served != nil {
		<-n.served
	} else if n.lis != nil {
		n.lis.Close()
	}
	if n.pool != nil {
		errs = append(errs, n.pool.Close())
	}
	if n.engine != nil {
		// Not needed for safety (the Raft log replays what a memtable
		// held), but a restart then replays nothing.
		errs = append(errs, n.engine.Flush(), n.engine.Close())
	}
	if n.wal != nil {
		errs = append(errs, n.wal.Close())
	}
	return errors.Join(errs...)
}
