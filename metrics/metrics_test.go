package metrics

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ringkv/ringkv/internal/storage"
	"github.com/ringkv/ringkv/internal/testing/wait"
	pb "github.com/ringkv/ringkv/proto/ringkvpb"
	"github.com/ringkv/ringkv/shard"
	"github.com/ringkv/ringkv/transport"
	"github.com/ringkv/ringkv/wal"
)

type fakeReplica struct {
	partition uint32
	status    shard.Status
	stats     shard.Stats
	appended  map[uint64]time.Time // AppendedAt by index; missing: an error
	tombs     int
}

func (f *fakeReplica) Partition() uint32    { return f.partition }
func (f *fakeReplica) Status() shard.Status { return f.status }
func (f *fakeReplica) Stats() *shard.Stats  { return &f.stats }
func (f *fakeReplica) Tombstones() int      { return f.tombs }
func (f *fakeReplica) AppendedAt(i uint64) (time.Time, error) {
	if at, ok := f.appended[i]; ok {
		return at, nil
	}
	return time.Time{}, errors.New("not in log")
}

// sample returns the value of the series name{labels}, and whether it exists.
func sample(t *testing.T, reg prometheus.Gatherer, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			if len(got) != len(labels) {
				continue
			}
			for k, v := range labels {
				if got[k] != v {
					continue next
				}
			}
			return value(m), true
		}
	}
	return 0, false
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Histogram != nil:
		return float64(m.GetHistogram().GetSampleCount())
	}
	return m.GetUntyped().GetValue()
}

func TestReplicationLag(t *testing.T) {
	now := time.Unix(1000, 0)
	voters := []raft.ServerID{"n1", "n2", "n3"}
	tests := []struct {
		name        string
		last        uint64
		acks        []transport.AppendResponse // from n2
		appended    map[uint64]time.Time
		wantEntries float64
		wantSeconds float64
		noSeconds   bool
	}{
		{name: "caught up", last: 10, acks: []transport.AppendResponse{{LastLog: 10, Success: true}}, wantEntries: 0, wantSeconds: 0},
		{name: "ahead with a stale-term tail is no lag", last: 10, acks: []transport.AppendResponse{{LastLog: 12, Success: true}}},
		{
			name: "behind: age of the oldest missing entry", last: 10,
			acks:        []transport.AppendResponse{{LastLog: 7, Success: true}},
			appended:    map[uint64]time.Time{8: now.Add(-3 * time.Second), 9: now.Add(-time.Second)},
			wantEntries: 3, wantSeconds: 3,
		},
		{
			name: "a failed response does not move the match", last: 10,
			acks:        []transport.AppendResponse{{LastLog: 7, Success: true}, {LastLog: 9, Success: false}},
			appended:    map[uint64]time.Time{8: now.Add(-2 * time.Second)},
			wantEntries: 3, wantSeconds: 2,
		},
		{
			name: "never acknowledged: the whole log", last: 10,
			appended:    map[uint64]time.Time{1: now.Add(-time.Minute)},
			wantEntries: 10, wantSeconds: 60,
		},
		{
			name: "entry time unknown: no seconds sample", last: 10,
			acks:        []transport.AppendResponse{{LastLog: 5, Success: true}},
			wantEntries: 5, noSeconds: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := &fakeReplica{partition: 3, appended: tc.appended, status: shard.Status{
				State: raft.Leader, LeaderID: "n1", LastIndex: tc.last, CommitIndex: tc.last, Voters: voters,
			}}
			m := New(Options{Node: "n1", Replicas: func() []Replica { return []Replica{r} }, Now: func() time.Time { return now }})
			for _, a := range tc.acks {
				a.Partition, a.ID = 3, "n2"
				m.ObserveAppendResponse(a)
			}
			m.ObserveAppendResponse(transport.AppendResponse{Partition: 3, ID: "n3", LastLog: tc.last, Success: true})
			lbl := map[string]string{"partition": "3", "replica": "n2"}
			if got, ok := sample(t, m.Registry(), "ringkv_replication_lag_entries", lbl); !ok || got != tc.wantEntries {
				t.Errorf("lag entries = %v (present %v), want %v", got, ok, tc.wantEntries)
			}
			got, ok := sample(t, m.Registry(), "ringkv_replication_lag_seconds", lbl)
			if tc.noSeconds {
				if ok {
					t.Errorf("lag seconds = %v, want no sample", got)
				}
			} else if !ok || got != tc.wantSeconds {
				t.Errorf("lag seconds = %v (present %v), want %v", got, ok, tc.wantSeconds)
			}
			if got, _ := sample(t, m.Registry(), "ringkv_replication_lag_entries", map[string]string{"partition": "3", "replica": "n3"}); got != 0 {
				t.Errorf("caught-up n3 lag = %v", got)
			}
			if _, ok := sample(t, m.Registry(), "ringkv_replication_lag_entries", map[string]string{"partition": "3", "replica": "n1"}); ok {
				t.Error("the primary reports lag for itself")
			}
		})
	}
}

func TestLagOnlyOnPrimary(t *testing.T) {
	r := &fakeReplica{partition: 1, status: shard.Status{State: raft.Follower, LeaderID: "n2", LastIndex: 5, Voters: []raft.ServerID{"n1", "n2", "n3"}}}
	m := New(Options{Node: "n1", Replicas: func() []Replica { return []Replica{r} }})
	if n := testutil.CollectAndCount(m.Registry(), "ringkv_replication_lag_entries", "ringkv_replication_lag_seconds"); n != 0 {
		t.Fatalf("a follower exported %d lag series", n)
	}
	if got, _ := sample(t, m.Registry(), "ringkv_raft_is_primary", map[string]string{"partition": "1"}); got != 0 {
		t.Fatalf("is_primary = %v on a follower", got)
	}
}

func TestStateSeries(t *testing.T) {
	r := &fakeReplica{partition: 2, status: shard.Status{
		State: raft.Leader, LeaderID: "n1", Term: 4, LastIndex: 9, CommitIndex: 8, AppliedIndex: 7,
		Voters: []raft.ServerID{"n1", "n2", "n3"},
	}, tombs: 6}
	r.stats.FastUncommitted.Store(2)
	r.stats.JournalRecords.Store(9)
	r.stats.JournalBytes.Store(900)
	r.stats.Reoffered.Store(5)
	r.stats.ReofferLost.Store(1)
	r.stats.ReofferDropped.Store(2)
	r.stats.LeaderChanges.Store(3)
	r.stats.SnapshotsInstalled.Store(4)
	m := New(Options{Node: "n1", Replicas: func() []Replica { return []Replica{r} }, WALStats: func() wal.Stats { return wal.Stats{SizeBytes: 4096} }})
	p := map[string]string{"partition": "2"}
	for name, want := range map[string]float64{
		"ringkv_raft_is_primary":                   1,
		"ringkv_raft_term":                         4,
		"ringkv_raft_commit_index":                 8,
		"ringkv_raft_applied_index":                7,
		"ringkv_raft_leader_changes_total":         3,
		"ringkv_partition_replicas":                3,
		"ringkv_fast_writes_uncommitted":           2,
		"ringkv_fast_write_journal_records":        9,
		"ringkv_fast_write_journal_bytes":          900,
		"ringkv_fast_writes_reoffered_total":       5,
		"ringkv_fast_writes_reoffer_lost_total":    1,
		"ringkv_fast_writes_reoffer_dropped_total": 2,
		"ringkv_snapshots_installed_total":         4,
		"ringkv_tombstones":                        6,
	} {
		if got, ok := sample(t, m.Registry(), name, p); !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", name, got, ok, want)
		}
	}
	if got, ok := sample(t, m.Registry(), "ringkv_wal_size_bytes", nil); !ok || got != 4096 {
		t.Errorf("wal size = %v (present %v)", got, ok)
	}
	if got, ok := sample(t, m.Registry(), "ringkv_moves_in_flight", nil); !ok || got != 0 {
		t.Errorf("moves in flight = %v (present %v)", got, ok)
	}
	m.ObserveWALSync(2*time.Millisecond, 7, 100)
	m.ObserveSnapshot(shard.SnapshotInfo{Partition: 2, Duration: time.Second, Bytes: 1 << 20})
	m.ObserveFastReplication(3 * time.Millisecond)
	for _, name := range []string{"ringkv_wal_sync_duration_seconds", "ringkv_wal_batch_records", "ringkv_snapshot_duration_seconds", "ringkv_snapshot_size_bytes", "ringkv_fast_write_replication_seconds"} {
		if got, _ := sample(t, m.Registry(), name, nil); got != 1 {
			t.Errorf("%s has %v observations, want 1", name, got)
		}
	}
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(`
# HELP ringkv_wal_batch_records Records per WAL group commit (one sync).
# TYPE ringkv_wal_batch_records histogram
ringkv_wal_batch_records_bucket{le="1"} 0
ringkv_wal_batch_records_bucket{le="2"} 0
ringkv_wal_batch_records_bucket{le="4"} 0
ringkv_wal_batch_records_bucket{le="8"} 1
ringkv_wal_batch_records_bucket{le="16"} 1
ringkv_wal_batch_records_bucket{le="32"} 1
ringkv_wal_batch_records_bucket{le="64"} 1
ringkv_wal_batch_records_bucket{le="128"} 1
ringkv_wal_batch_records_bucket{le="256"} 1
ringkv_wal_batch_records_bucket{le="512"} 1
ringkv_wal_batch_records_bucket{le="1024"} 1
ringkv_wal_batch_records_bucket{le="2048"} 1
ringkv_wal_batch_records_bucket{le="+Inf"} 1
ringkv_wal_batch_records_sum 7
ringkv_wal_batch_records_count 1
`), "ringkv_wal_batch_records"); err != nil {
		t.Error(err)
	}
}

// engineSeries are the storage engine's series, by name, and the figure of
// storage.Stats each exports.
var engineSeries = map[string]func(storage.Stats) float64{
	"ringkv_engine_disk_bytes":               func(s storage.Stats) float64 { return float64(s.DiskBytes) },
	"ringkv_engine_l0_files":                 func(s storage.Stats) float64 { return float64(s.L0Files) },
	"ringkv_engine_l0_sublevels":             func(s storage.Stats) float64 { return float64(s.L0Sublevels) },
	"ringkv_engine_read_amplification":       func(s storage.Stats) float64 { return float64(s.ReadAmp) },
	"ringkv_engine_compaction_debt_bytes":    func(s storage.Stats) float64 { return float64(s.CompactionDebt) },
	"ringkv_engine_compactions_running":      func(s storage.Stats) float64 { return float64(s.CompactionsRunning) },
	"ringkv_engine_compactions_total":        func(s storage.Stats) float64 { return float64(s.Compactions) },
	"ringkv_engine_memtable_bytes":           func(s storage.Stats) float64 { return float64(s.MemTableBytes) },
	"ringkv_engine_block_cache_bytes":        func(s storage.Stats) float64 { return float64(s.CacheBytes) },
	"ringkv_engine_block_cache_hits_total":   func(s storage.Stats) float64 { return float64(s.CacheHits) },
	"ringkv_engine_block_cache_misses_total": func(s storage.Stats) float64 { return float64(s.CacheMisses) },
}

// TestEngineSeries scrapes a real engine through each stage an operator
// watches — data flushed to L0, L0 compacted, blocks read through the
// cache — and checks each series against the engine's own figures and
// against what the stage must have done.
func TestEngineSeries(t *testing.T) {
	e, err := storage.Open(storage.Options{Dir: t.TempDir(), CacheSize: 16 << 20, MemTableSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	m := New(Options{Node: "n1", EngineStats: e.Stats})
	// scrape reads every engine series, at a moment the engine holds still
	// (background flushes, compactions and file deletions change the
	// figures), and checks each against the engine's own.
	scrape := func() map[string]float64 {
		t.Helper()
		var got map[string]float64
		var before storage.Stats
		wait.For(t, 10*time.Second, "the engine to hold still through a scrape", func() (bool, string) {
			before, got = e.Stats(), map[string]float64{}
			for name := range engineSeries {
				v, ok := sample(t, m.Registry(), name, nil)
				if !ok {
					t.Fatalf("no %s", name)
				}
				got[name] = v
			}
			after := e.Stats()
			return before == after, fmt.Sprintf("%+v became %+v", before, after)
		})
		for name, field := range engineSeries {
			if want := field(before); got[name] != want {
				t.Errorf("%s = %v, the engine says %v", name, got[name], want)
			}
		}
		return got
	}
	empty := scrape()

	// A round writes 512 KiB of incompressible values to 512 keys of a
	// partition, with the partition's applied index, and flushes them into
	// one more L0 table: in a sublevel of its own if it overlaps a table
	// already there, as a table of the same partition does.
	rng := rand.New(rand.NewPCG(1, 2))
	round := func(p *storage.Partition, applied uint64) {
		b := p.NewBatch()
		defer b.Close()
		for k := range 512 {
			v := make([]byte, 1024)
			for j := range v {
				v[j] = byte(rng.Uint32())
			}
			if err := b.Set(1, fmt.Appendf(nil, "key%04d", k), v); err != nil {
				t.Fatal(err)
			}
		}
		if err := b.Commit(applied); err != nil {
			t.Fatal(err)
		}
		if err := e.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	p1, p2 := e.Partition(1), e.Partition(2)

	round(p1, 1)
	flushed := scrape()
	if d := flushed["ringkv_engine_disk_bytes"] - empty["ringkv_engine_disk_bytes"]; d < 512<<10 {
		t.Errorf("disk bytes grew by %v after flushing 512 KiB", d)
	}
	for _, name := range []string{"ringkv_engine_l0_files", "ringkv_engine_l0_sublevels", "ringkv_engine_read_amplification"} {
		if flushed[name] != 1 {
			t.Errorf("%s = %v after one flush, want 1", name, flushed[name])
		}
	}
	if flushed["ringkv_engine_memtable_bytes"] < 1 {
		t.Error("no memtable bytes: pebble always has a memtable allocated")
	}

	// A second sublevel: pebble compacts L0 into the empty level below.
	round(p1, 2)
	wait.Until(t, 10*time.Second, "an L0 compaction", func() bool { return e.Stats().Compactions > 0 })
	compacted := scrape()
	if compacted["ringkv_engine_compactions_total"] < 1 || compacted["ringkv_engine_l0_files"] != 0 {
		t.Errorf("after compacting: %v compactions, %v L0 files; want some, and none", compacted["ringkv_engine_compactions_total"], compacted["ringkv_engine_l0_files"])
	}

	// Two tables in one sublevel (different partitions do not overlap)
	// over data in the level below: pebble counts both levels as debt until
	// a compaction merges them (one sublevel triggers none), and a read
	// may look in both.
	round(p1, 3)
	round(p2, 1)
	indebted := scrape()
	for name, want := range map[string]float64{"ringkv_engine_l0_files": 2, "ringkv_engine_l0_sublevels": 1, "ringkv_engine_read_amplification": 2} {
		if indebted[name] != want {
			t.Errorf("%s = %v with two disjoint tables in L0 over a level, want %v", name, indebted[name], want)
		}
	}
	if debt := indebted["ringkv_engine_compaction_debt_bytes"]; debt < 1<<20 {
		t.Errorf("compaction debt %v with 1 MiB in L0 over 512 KiB below, want at least 1 MiB", debt)
	}

	// Reading every key twice: the first pass misses the block cache
	// (flushes and compactions do not fill it), the second finds each
	// block there.
	for range 2 {
		for k := range 512 {
			if _, ok, err := p1.Get(1, fmt.Appendf(nil, "key%04d", k)); !ok || err != nil {
				t.Fatalf("key%04d: found %v, %v", k, ok, err)
			}
		}
	}
	read := scrape()
	hits, misses := read["ringkv_engine_block_cache_hits_total"], read["ringkv_engine_block_cache_misses_total"]
	if misses < 1 || hits <= misses || read["ringkv_engine_block_cache_bytes"] < 1 {
		t.Errorf("after reading each key twice: %v hits, %v misses, %v bytes cached; want misses, more hits, and blocks cached",
			hits, misses, read["ringkv_engine_block_cache_bytes"])
	}
}

// TestNoEngineNoSeries: a node without an engine (Options.EngineStats nil)
// exports no engine series rather than zeros that read as an empty engine.
func TestNoEngineNoSeries(t *testing.T) {
	m := New(Options{Node: "n1"})
	for name := range engineSeries {
		if _, ok := sample(t, m.Registry(), name, nil); ok {
			t.Errorf("%s exported without an engine", name)
		}
	}
}

func TestNodeUp(t *testing.T) {
	now := time.Unix(1000, 0)
	window := time.Second
	tests := []struct {
		name     string
		status   shard.Status
		contact  map[raft.ServerID]time.Duration // response from the node, this long ago
		want     map[string]float64
		unlisted []string
	}{
		{
			name:    "primary hears from one follower only",
			status:  shard.Status{State: raft.Leader, LeaderID: "n1", Voters: []raft.ServerID{"n1", "n2", "n3"}},
			contact: map[raft.ServerID]time.Duration{"n2": 100 * time.Millisecond, "n3": 2 * time.Second},
			want:    map[string]float64{"n1": 1, "n2": 1, "n3": 0},
		},
		{
			name:     "follower hears from its leader",
			status:   shard.Status{State: raft.Follower, LeaderID: "n2", LastContact: now.Add(-200 * time.Millisecond), Voters: []raft.ServerID{"n1", "n2", "n3"}},
			want:     map[string]float64{"n1": 1, "n2": 1},
			unlisted: []string{"n3"},
		},
		{
			name:   "follower whose leader went quiet",
			status: shard.Status{State: raft.Follower, LeaderID: "n2", LastContact: now.Add(-5 * time.Second), Voters: []raft.ServerID{"n1", "n2", "n3"}},
			want:   map[string]float64{"n1": 1, "n2": 0},
		},
		{
			name:     "a candidate knows no leader",
			status:   shard.Status{State: raft.Candidate, Voters: []raft.ServerID{"n1", "n2", "n3"}},
			want:     map[string]float64{"n1": 1},
			unlisted: []string{"n2", "n3"},
		},
		{
			name:     "followers of one primary do not see each other",
			status:   shard.Status{State: raft.Follower, LeaderID: "n2", LastContact: now, Voters: []raft.ServerID{"n1", "n2", "n3"}},
			contact:  map[raft.ServerID]time.Duration{"n3": 0},
			want:     map[string]float64{"n1": 1, "n2": 1},
			unlisted: []string{"n3"},
		},
		{
			name:     "nodes sharing no partition are not listed",
			status:   shard.Status{State: raft.Leader, LeaderID: "n1", Voters: []raft.ServerID{"n1", "n2"}},
			contact:  map[raft.ServerID]time.Duration{"n2": 0, "n4": 0},
			want:     map[string]float64{"n1": 1, "n2": 1},
			unlisted: []string{"n4"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var clock time.Time
			r := &fakeReplica{status: tc.status}
			m := New(Options{Node: "n1", UpWindow: window, Replicas: func() []Replica { return []Replica{r} }, Now: func() time.Time { return clock }})
			for id, ago := range tc.contact {
				clock = now.Add(-ago)
				m.ObserveAppendResponse(transport.AppendResponse{ID: id})
			}
			clock = now
			for id, want := range tc.want {
				if got, ok := sample(t, m.Registry(), "ringkv_node_up", map[string]string{"node": id}); !ok || got != want {
					t.Errorf("node_up{node=%s} = %v (present %v), want %v", id, got, ok, want)
				}
			}
			for _, id := range tc.unlisted {
				if _, ok := sample(t, m.Registry(), "ringkv_node_up", map[string]string{"node": id}); ok {
					t.Errorf("node_up{node=%s} listed", id)
				}
			}
		})
	}
}

func TestInterceptorCountsClientRequests(t *testing.T) {
	m := New(Options{Node: "n1"})
	icpt := m.UnaryServerInterceptor()
	call := func(req any, err error) {
		_, _ = icpt(context.Background(), req, &grpc.UnaryServerInfo{}, func(context.Context, any) (any, error) { return nil, err })
	}
	notFound := status.Error(codes.NotFound, "key not found")
	tests := []struct {
		req                 any
		err                 error
		op, consistency, cd string
	}{
		{&pb.PutRequest{}, nil, "put", "strong", "OK"},
		{&pb.PutRequest{Consistency: pb.WriteConsistency_WRITE_CONSISTENCY_STRONG}, nil, "put", "strong", "OK"},
		{&pb.PutRequest{Consistency: pb.WriteConsistency_WRITE_CONSISTENCY_FAST}, nil, "put", "fast", "OK"},
		{&pb.PutRequest{Consistency: 7}, status.Error(codes.InvalidArgument, "x"), "put", "invalid", "InvalidArgument"},
		{&pb.DeleteRequest{Consistency: pb.WriteConsistency_WRITE_CONSISTENCY_FAST}, nil, "delete", "fast", "OK"},
		{&pb.GetRequest{}, notFound, "get", "local", "NotFound"},
		{&pb.GetRequest{Consistency: pb.ReadConsistency_READ_CONSISTENCY_QUORUM}, nil, "get", "quorum", "OK"},
	}
	for _, tc := range tests {
		call(tc.req, tc.err)
	}
	// Forwarded requests and other services are not client requests here.
	call(&pb.PutRequest{Hops: 1}, nil)
	call(&pb.GetRequest{Hops: 1}, nil)
	call(&pb.StatusRequest{}, nil)

	want := map[[3]string]float64{}
	for _, tc := range tests {
		want[[3]string{tc.op, tc.consistency, tc.cd}]++
	}
	var total float64
	for k, n := range want {
		total += n
		if got := testutil.ToFloat64(m.requests.WithLabelValues(k[0], k[1], k[2])); got != n {
			t.Errorf("requests_total%v = %v, want %v", k, got, n)
		}
	}
	if got := testutil.CollectAndCount(m.requests); got != len(want) {
		t.Errorf("%d request series, want %d", got, len(want))
	}
	var observed float64
	for _, op := range []string{"put", "get", "delete"} {
		for _, c := range []string{"strong", "fast", "local", "quorum", "invalid"} {
			if v, ok := sample(t, m.Registry(), "ringkv_request_duration_seconds", map[string]string{"op": op, "consistency": c}); ok {
				observed += v
			}
		}
	}
	if observed != total {
		t.Errorf("%v latency observations, want %v", observed, total)
	}
}

func TestRequestSeriesExistBeforeTraffic(t *testing.T) {
	m := New(Options{Node: "n1"})
	for op, modes := range requestModes {
		for _, c := range modes {
			if _, ok := sample(t, m.Registry(), "ringkv_request_duration_seconds", map[string]string{"op": op, "consistency": c}); !ok {
				t.Errorf("no latency series for %s/%s", op, c)
			}
		}
	}
}

// BenchmarkInterceptor is the per-request cost of request metrics.
//
//	go test ./metrics -run '^$' -bench . -benchmem
func BenchmarkInterceptor(b *testing.B) {
	icpt := New(Options{Node: "n1"}).UnaryServerInterceptor()
	req := &pb.PutRequest{Consistency: pb.WriteConsistency_WRITE_CONSISTENCY_FAST}
	handler := func(context.Context, any) (any, error) { return nil, nil }
	ctx := context.Background()
	for b.Loop() {
		icpt(ctx, req, nil, handler)
	}
}

// BenchmarkObserveAppendResponse is the cost added to every AppendEntries
// response a primary receives.
func BenchmarkObserveAppendResponse(b *testing.B) {
	m := New(Options{Node: "n1"})
	r := transport.AppendResponse{Partition: 3, ID: "n2", LastLog: 10, Success: true}
	for b.Loop() {
		m.ObserveAppendResponse(r)
	}
}
