// Package metrics exports one ringkv node's Prometheus metrics from a
// registry of its own (never the global one, so several nodes can share a
// process in tests).
//
// Three kinds of series:
//   - Events, recorded as they happen: client requests (a gRPC unary server
//     interceptor), WAL syncs (wal.Options.OnSync), snapshots
//     (shard.Config.OnSnapshot) and AppendEntries responses
//     (transport.Options.OnAppendResponse).
//   - State mirrored from Raft, the replicas, the WAL and the storage
//     engine (ringkv_engine_*: disk used, L0 shape, compactions, block
//     cache, read amplification), computed at scrape time by a Collector,
//     so it is never stale and costs nothing between scrapes.
//   - The Go runtime and process collectors.
//
// Invariants: label values are bounded — op × consistency × gRPC code for
// requests, partitions × replicas for Raft series, cluster nodes for
// ringkv_node_up — and never carry keys or values.
package metrics

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/ringkv/ringkv/internal/consistency"
	"github.com/ringkv/ringkv/internal/storage"
	pb "github.com/ringkv/ringkv/proto/ringkvpb"
	"github.com/ringkv/ringkv/shard"
	"github.com/ringkv/ringkv/transport"
	"github.com/ringkv/ringkv/wal"
)

// Replica is what the collector reads of a hosted replica at scrape time;
// *shard.Replica implements it.
type Replica interface {
	Partition() uint32
	Status() shard.Status
	Stats() *shard.Stats
	AppendedAt(index uint64) (time.Time, error)
	// Tombstones counts the tombstones awaiting a purge, exported as
	// ringkv_tombstones, which drops when a purge applies.
	Tombstones() int
}

var _ Replica = (*shard.Replica)(nil)

// Options configure Metrics.
type Options struct {
	// Node is this node's id (its raft.ServerID).
	Node string
	// Replicas lists the hosted replicas at scrape time.
	Replicas func() []Replica
	// WALStats reads the node's WAL counters at scrape time.
	WALStats func() wal.Stats
	// EngineStats reads the node's storage engine figures at scrape time
	// (once per scrape); nil exports no ringkv_engine_* series.
	EngineStats func() storage.Stats
	// MovesInFlight counts, at scrape time, the partitions whose replicas
	// are moving; nil reports 0.
	MovesInFlight func() int
	// UpWindow is how recent the last contact with a node must be for
	// ringkv_node_up to report it up. Default DefaultUpWindow.
	UpWindow time.Duration
	// Now is the clock (tests inject one); default time.Now.
	Now func() time.Time
}

// DefaultUpWindow is Options.UpWindow when none is set: three of
// raftgroup.DefaultHeartbeatTimeout (node TestDefaultUpWindowFollowsTheTiming),
// while leaders contact followers ten times per heartbeat timeout.
const DefaultUpWindow = 1200 * time.Millisecond

// Metrics holds a node's instruments and its registry.
type Metrics struct {
	opts Options
	reg  *prometheus.Registry

	reqDuration *prometheus.HistogramVec
	requests    *prometheus.CounterVec
	walSync     prometheus.Histogram
	walBatch    prometheus.Histogram
	snapDur     prometheus.Histogram
	snapSize    prometheus.Histogram
	fastLag     prometheus.Histogram

	mu      sync.Mutex
	matches map[follower]uint64 // last log a follower acknowledged to this node as primary
	contact map[raft.ServerID]time.Time
}

type follower struct {
	partition uint32
	id        raft.ServerID
}

// The request label values. Writes are strong or fast, reads local or
// quorum; a request with an unknown consistency is labelled "invalid".
var requestModes = map[string][]string{
	"put":    {shard.Strong.String(), shard.Fast.String()},
	"delete": {shard.Strong.String(), shard.Fast.String()},
	"get":    {shard.Local.String(), shard.Quorum.String()},
}

// New creates a node's metrics and registers them, with the Go runtime and
// process collectors, in a new registry.
func New(opts Options) *Metrics {
	if opts.UpWindow == 0 {
		opts.UpWindow = DefaultUpWindow
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Replicas == nil {
		opts.Replicas = func() []Replica { return nil }
	}
	m := &Metrics{
		opts: opts,
		reg:  prometheus.NewRegistry(),
		reqDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "ringkv_request_duration_seconds",
			Help: "Latency of client KV requests at the node that received them from the client (forwarded hops are not counted again), by op and consistency.",
			// 100µs to 6.6s.
			Buckets: prometheus.ExponentialBuckets(100e-6, 2, 17),
		}, []string{"op", "consistency"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ringkv_requests_total",
			Help: "Client KV requests at the node that received them from the client, by op, consistency and gRPC status code.",
		}, []string{"op", "consistency", "code"}),
		walSync: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "ringkv_wal_sync_duration_seconds",
			Help:    "Duration of each WAL group-commit write and fdatasync.",
			Buckets: prometheus.ExponentialBuckets(50e-6, 2, 16), // 50µs to 1.6s
		}),
		walBatch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "ringkv_wal_batch_records",
			Help:    "Records per WAL group commit (one sync).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 12), // 1 to 2048
		}),
		snapDur: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "ringkv_snapshot_duration_seconds",
			Help:    "Time to serialize and persist a replica's snapshot, sync included.",
			Buckets: prometheus.ExponentialBuckets(1e-3, 4, 10), // 1ms to 262s
		}),
		snapSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "ringkv_snapshot_size_bytes",
			Help:    "Size of each persisted replica snapshot.",
			Buckets: prometheus.ExponentialBuckets(1<<10, 4, 12), // 1 KiB to 4 GiB
		}),
		fastLag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "ringkv_fast_write_replication_seconds",
			Help: "Per fast write, from its append to the primary's journal (its acknowledgement follows the sync) to its application " +
				"by a primary: the replication lag of fast writes.",
			// 500µs to 8.4s in steps of 1.5×: fine enough to tell a p99
			// of 40 ms from one of 50.
			Buckets: prometheus.ExponentialBuckets(500e-6, 1.5, 25),
		}),
		matches: make(map[follower]uint64),
		contact: make(map[raft.ServerID]time.Time),
	}
	moves := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "ringkv_moves_in_flight",
		Help: "Partitions whose replicas are moving (their Raft configuration differs from the target placement), as this node's view of the cluster metadata records them.",
	}, func() float64 {
		if opts.MovesInFlight == nil {
			return 0
		}
		return float64(opts.MovesInFlight())
	})
	m.reg.MustRegister(m.reqDuration, m.requests, m.walSync, m.walBatch, m.snapDur, m.snapSize, m.fastLag, moves,
		collector{m},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Every valid (op, consistency) pair exists from the start, so that
	// dashboards and rate() see zeros rather than missing series.
	for op, modes := range requestModes {
		for _, mode := range modes {
			m.reqDuration.WithLabelValues(op, mode)
		}
	}
	return m
}

// Registry is the node's registry.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus text format, or in
// OpenMetrics (with trace-id exemplars on request latencies) when the
// scraper asks for it.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg, EnableOpenMetrics: true})
}

// UnaryServerInterceptor records the KV requests a client sent to this node.
// Forwarded requests (hops > 0) were counted by the node that forwarded
// them and pass through unrecorded; so do other services' calls.
func (m *Metrics) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		op, mode, ok := classify(req)
		if !ok {
			return handler(ctx, req)
		}
		start := time.Now()
		resp, err := handler(ctx, req)
		d := time.Since(start).Seconds()
		obs := m.reqDuration.WithLabelValues(op, mode)
		if sc := trace.SpanContextFromContext(ctx); sc.IsSampled() {
			obs.(prometheus.ExemplarObserver).ObserveWithExemplar(d, prometheus.Labels{"trace_id": sc.TraceID().String()})
		} else {
			obs.Observe(d)
		}
		m.requests.WithLabelValues(op, mode, status.Code(err).String()).Inc()
		return resp, err
	}
}

// classify names a client request's op and its consistency label; ok is
// false for anything else, forwarded requests included.
func classify(req any) (op, label string, ok bool) {
	var hops uint32
	var mode interface{ String() string }
	var err error
	switch r := req.(type) {
	case *pb.PutRequest:
		op, hops = "put", r.GetHops()
		mode, err = consistency.Write(r.GetConsistency())
	case *pb.DeleteRequest:
		op, hops = "delete", r.GetHops()
		mode, err = consistency.Write(r.GetConsistency())
	case *pb.GetRequest:
		op, hops = "get", r.GetHops()
		mode, err = consistency.Read(r.GetConsistency())
	default:
		return "", "", false
	}
	if hops > 0 {
		return "", "", false
	}
	if err != nil {
		return op, "invalid", true
	}
	return op, mode.String(), true
}

// ObserveWALSync records one WAL sync; it is wal.Options.OnSync.
func (m *Metrics) ObserveWALSync(d time.Duration, records, _ int) {
	m.walSync.Observe(d.Seconds())
	m.walBatch.Observe(float64(records))
}

// ObserveSnapshot records one persisted snapshot; it is
// shard.Config.OnSnapshot.
func (m *Metrics) ObserveSnapshot(s shard.SnapshotInfo) {
	m.snapDur.Observe(s.Duration.Seconds())
	m.snapSize.Observe(float64(s.Bytes))
}

// ObserveFastReplication records the replication lag of one fast write;
// it is shard.Config.OnReplicated.
func (m *Metrics) ObserveFastReplication(lag time.Duration) {
	m.fastLag.Observe(lag.Seconds())
}

// ObserveAppendResponse records a follower's answer to this node as a
// primary; it is transport.Options.OnAppendResponse. Any answer is contact;
// a successful one also gives the follower's last log index.
func (m *Metrics) ObserveAppendResponse(r transport.AppendResponse) {
	now := m.opts.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.contact[r.ID] = now
	if r.Success {
		m.matches[follower{r.Partition, r.ID}] = r.LastLog
	}
}

var (
	descIsPrimary = prometheus.NewDesc("ringkv_raft_is_primary",
		"1 if this node's replica of the partition is its Raft leader, else 0.", []string{"partition"}, nil)
	descTerm = prometheus.NewDesc("ringkv_raft_term",
		"Current Raft term of this node's replica of the partition.", []string{"partition"}, nil)
	descCommit = prometheus.NewDesc("ringkv_raft_commit_index",
		"Raft commit index known to this node's replica of the partition.", []string{"partition"}, nil)
	descApplied = prometheus.NewDesc("ringkv_raft_applied_index",
		"Last log index applied to this node's replica of the partition.", []string{"partition"}, nil)
	descLeaderChanges = prometheus.NewDesc("ringkv_raft_leader_changes_total",
		"Times this node's replica of the partition learned of a new leader.", []string{"partition"}, nil)
	descReplicas = prometheus.NewDesc("ringkv_partition_replicas",
		"Voting members in the partition's latest Raft configuration, as this node's replica knows it.", []string{"partition"}, nil)
	descFastUncommitted = prometheus.NewDesc("ringkv_fast_writes_uncommitted",
		"Keys whose acknowledged fast write is not yet applied on this primary.", []string{"partition"}, nil)
	descReoffered = prometheus.NewDesc("ringkv_fast_writes_reoffered_total",
		"Acknowledged fast writes this replica's journal re-offered to a primary after it lost leadership, restarted, or saw their entry refused.", []string{"partition"}, nil)
	descJournalRecords = prometheus.NewDesc("ringkv_fast_write_journal_records",
		"Fast writes in this replica's journal that no primary has applied yet (bounded by --fast-journal-records).", []string{"partition"}, nil)
	descJournalBytes = prometheus.NewDesc("ringkv_fast_write_journal_bytes",
		"Bytes of the fast writes in this replica's journal that no primary has applied yet (bounded by --fast-journal-bytes).", []string{"partition"}, nil)
	descReofferLost = prometheus.NewDesc("ringkv_fast_writes_reoffer_lost_total",
		"Re-offered fast writes this primary applied that lost to a newer write of the key.", []string{"partition"}, nil)
	descReofferDropped = prometheus.NewDesc("ringkv_fast_writes_reoffer_dropped_total",
		"Re-offered fast writes this replica dropped because no primary can take them (undecodable, or breaking the limits).", []string{"partition"}, nil)
	descSnapshotsInstalled = prometheus.NewDesc("ringkv_snapshots_installed_total",
		"Snapshots this node's replica of the partition received from a primary and ingested (catch-up after it fell too far behind; a restart installs none).", []string{"partition"}, nil)
	descTombstones = prometheus.NewDesc("ringkv_tombstones",
		"Deleted keys whose tombstone this node's replica of the partition keeps until a purge removes it (--tombstone-ttl after the delete).", []string{"partition"}, nil)
	descLagEntries = prometheus.NewDesc("ringkv_replication_lag_entries",
		"On the partition's primary: its last log index minus the last log index the replica acknowledged "+
			"in a successful AppendEntries response (0 when caught up; the full log when it has acknowledged nothing to this primary).",
		[]string{"partition", "replica"}, nil)
	descLagSeconds = prometheus.NewDesc("ringkv_replication_lag_seconds",
		"On the partition's primary: seconds since the primary appended the oldest entry the replica has not acknowledged "+
			"(the oldest entry still in the log if that one was compacted away); 0 when caught up.",
		[]string{"partition", "replica"}, nil)
	descNodeUp = prometheus.NewDesc("ringkv_node_up",
		"1 if this node had Raft contact with the node within the up window, else 0. Listed are this node itself, "+
			"the followers of the partitions it leads (contact: their AppendEntries answers) and the primaries of the "+
			"partitions it follows (contact: their AppendEntries); a node it has neither relation with is not listed.",
		[]string{"node"}, nil)
	descWALSize = prometheus.NewDesc("ringkv_wal_size_bytes",
		"Bytes of WAL segment files on disk, preallocation included.", nil, nil)

	// The storage engine's, node-wide: its partitions share one pebble.
	descEngineDisk = prometheus.NewDesc("ringkv_engine_disk_bytes",
		"Bytes the storage engine's files take on disk: live and not yet deleted tables, the manifest, compaction output in progress.", nil, nil)
	descEngineL0Files = prometheus.NewDesc("ringkv_engine_l0_files",
		"Tables in the storage engine's level 0; a growing count means compactions fall behind the flushes.", nil, nil)
	descEngineL0Sublevels = prometheus.NewDesc("ringkv_engine_l0_sublevels",
		"Sublevels of the storage engine's level 0, each one more table a read may look in; pebble stops writes at its L0StopWritesThreshold (12 by default).", nil, nil)
	descEngineReadAmp = prometheus.NewDesc("ringkv_engine_read_amplification",
		"Tables a point read of the storage engine may look in: L0's sublevels plus the non-empty levels below.", nil, nil)
	descEngineDebt = prometheus.NewDesc("ringkv_engine_compaction_debt_bytes",
		"Estimated bytes the storage engine's compactions must rewrite to bring every level within its target size.", nil, nil)
	descEngineCompacting = prometheus.NewDesc("ringkv_engine_compactions_running",
		"Storage engine compactions in progress.", nil, nil)
	descEngineCompactions = prometheus.NewDesc("ringkv_engine_compactions_total",
		"Storage engine compactions completed since the node started.", nil, nil)
	descEngineMemTable = prometheus.NewDesc("ringkv_engine_memtable_bytes",
		"Bytes of the storage engine's memtables (the one being written and those awaiting a flush), charged to the block cache.", nil, nil)
	descEngineCacheSize = prometheus.NewDesc("ringkv_engine_block_cache_bytes",
		"Bytes in the storage engine's block cache.", nil, nil)
	descEngineCacheHits = prometheus.NewDesc("ringkv_engine_block_cache_hits_total",
		"Block reads of the storage engine served from its block cache.", nil, nil)
	descEngineCacheMisses = prometheus.NewDesc("ringkv_engine_block_cache_misses_total",
		"Block reads of the storage engine that missed its block cache and went to disk.", nil, nil)
)

// collector computes the state series at scrape time.
type collector struct{ m *Metrics }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descIsPrimary, descTerm, descCommit, descApplied, descLeaderChanges,
		descReplicas, descFastUncommitted, descJournalRecords, descJournalBytes, descReoffered, descReofferLost, descReofferDropped, descSnapshotsInstalled, descTombstones, descLagEntries, descLagSeconds,
		descNodeUp, descWALSize, descEngineDisk, descEngineL0Files, descEngineL0Sublevels, descEngineReadAmp, descEngineDebt,
		descEngineCompacting, descEngineCompactions, descEngineMemTable, descEngineCacheSize, descEngineCacheHits, descEngineCacheMisses} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	m := c.m
	now := m.opts.Now()
	if m.opts.WALStats != nil {
		ch <- prometheus.MustNewConstMetric(descWALSize, prometheus.GaugeValue, float64(m.opts.WALStats().SizeBytes))
	}
	if m.opts.EngineStats != nil {
		collectEngine(ch, m.opts.EngineStats())
	}
	self := raft.ServerID(m.opts.Node)
	peers := map[raft.ServerID]time.Time{}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range m.opts.Replicas() {
		st, stats := r.Status(), r.Stats()
		p := strconv.FormatUint(uint64(r.Partition()), 10)
		gauge := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, p)
		}
		counter := func(d *prometheus.Desc, v uint64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), p)
		}
		primary := st.State == raft.Leader
		gauge(descIsPrimary, b2f(primary))
		gauge(descTerm, float64(st.Term))
		gauge(descCommit, float64(st.CommitIndex))
		gauge(descApplied, float64(st.AppliedIndex))
		gauge(descReplicas, float64(len(st.Voters)))
		gauge(descFastUncommitted, float64(stats.FastUncommitted.Load()))
		gauge(descJournalRecords, float64(stats.JournalRecords.Load()))
		gauge(descJournalBytes, float64(stats.JournalBytes.Load()))
		counter(descLeaderChanges, stats.LeaderChanges.Load())
		counter(descReoffered, stats.Reoffered.Load())
		counter(descReofferLost, stats.ReofferLost.Load())
		counter(descReofferDropped, stats.ReofferDropped.Load())
		counter(descSnapshotsInstalled, stats.SnapshotsInstalled.Load())
		gauge(descTombstones, float64(r.Tombstones()))

		// Only Raft contact is seen: a primary hears from its followers and a
		// follower from its primary; two followers of one primary never talk.
		if primary {
			for _, id := range st.Voters {
				if id != self {
					peers[id] = later(peers[id], m.contact[id])
				}
			}
		} else if st.LeaderID != "" && st.LeaderID != self {
			peers[st.LeaderID] = later(peers[st.LeaderID], st.LastContact)
		}
		if primary {
			m.collectLag(ch, r, p, st, self, now)
		}
	}
	ch <- prometheus.MustNewConstMetric(descNodeUp, prometheus.GaugeValue, 1, string(self))
	for id, last := range peers {
		ch <- prometheus.MustNewConstMetric(descNodeUp, prometheus.GaugeValue, b2f(now.Sub(last) <= m.opts.UpWindow), string(id))
	}
}

// collectEngine exports one read of the engine's figures, so the series of a
// scrape agree with each other.
func collectEngine(ch chan<- prometheus.Metric, s storage.Stats) {
	for _, g := range []struct {
		d *prometheus.Desc
		t prometheus.ValueType
		v float64
	}{
		{descEngineDisk, prometheus.GaugeValue, float64(s.DiskBytes)},
		{descEngineL0Files, prometheus.GaugeValue, float64(s.L0Files)},
		{descEngineL0Sublevels, prometheus.GaugeValue, float64(s.L0Sublevels)},
		{descEngineReadAmp, prometheus.GaugeValue, float64(s.ReadAmp)},
		{descEngineDebt, prometheus.GaugeValue, float64(s.CompactionDebt)},
		{descEngineCompacting, prometheus.GaugeValue, float64(s.CompactionsRunning)},
		{descEngineCompactions, prometheus.CounterValue, float64(s.Compactions)},
		{descEngineMemTable, prometheus.GaugeValue, float64(s.MemTableBytes)},
		{descEngineCacheSize, prometheus.GaugeValue, float64(s.CacheBytes)},
		{descEngineCacheHits, prometheus.CounterValue, float64(s.CacheHits)},
		{descEngineCacheMisses, prometheus.CounterValue, float64(s.CacheMisses)},
	} {
		ch <- prometheus.MustNewConstMetric(g.d, g.t, g.v)
	}
}

// collectLag runs with m.mu held.
func (m *Metrics) collectLag(ch chan<- prometheus.Metric, r Replica, p string, st shard.Status, self raft.ServerID, now time.Time) {
	for _, id := range st.Voters {
		if id == self {
			continue
		}
		// A follower's last log can exceed the primary's when it holds
		// entries of an older term not yet overwritten: that is no lag.
		match := m.matches[follower{r.Partition(), id}]
		var lag uint64
		if st.LastIndex > match {
			lag = st.LastIndex - match
		}
		ch <- prometheus.MustNewConstMetric(descLagEntries, prometheus.GaugeValue, float64(lag), p, string(id))
		if lag == 0 {
			ch <- prometheus.MustNewConstMetric(descLagSeconds, prometheus.GaugeValue, 0, p, string(id))
			continue
		}
		// Without the entry's time (an error, or an entry written without
		// one) the lag in time is unknown, and the sample is left out.
		if at, err := r.AppendedAt(match + 1); err == nil && !at.IsZero() {
			ch <- prometheus.MustNewConstMetric(descLagSeconds, prometheus.GaugeValue, max(0, now.Sub(at).Seconds()), p, string(id))
		}
	}
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
