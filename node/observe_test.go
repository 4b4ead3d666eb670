package node_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"gopkg.in/yaml.v3"

	"github.com/ringkv/ringkv/internal/testing/testcluster"
	"github.com/ringkv/ringkv/internal/testing/wait"
	pb "github.com/ringkv/ringkv/proto/ringkvpb"
)

var waitFor = wait.For

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	code, body := get(t, "http://"+addr+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics on %s: %d %s", addr, code, body)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics on %s: %v", addr, err)
	}
	return mfs
}

func labelsOf(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, lp := range m.GetLabel() {
		out[lp.GetName()] = lp.GetValue()
	}
	return out
}

func gaugeValue(m *dto.Metric) float64 {
	if m.Counter != nil {
		return m.GetCounter().GetValue()
	}
	return m.GetGauge().GetValue()
}

// series lists name's samples on every running node, as "node partition
// replica=value" strings, and calls match on each.
func series(t *testing.T, c *testcluster.Cluster, name string, match func(labels map[string]string, v float64) bool) (matched int, all []string) {
	t.Helper()
	for _, n := range c.Nodes {
		if n == nil {
			continue
		}
		for _, m := range scrape(t, n.MetricsAddr())[name].GetMetric() {
			l, v := labelsOf(m), gaugeValue(m)
			all = append(all, fmt.Sprintf("%s:%v=%v", n.ID(), l, v))
			if match(l, v) {
				matched++
			}
		}
	}
	sort.Strings(all)
	return matched, all
}

var requiredSeries = []string{
	"ringkv_request_duration_seconds", "ringkv_requests_total",
	"ringkv_wal_size_bytes", "ringkv_wal_sync_duration_seconds", "ringkv_wal_batch_records",
	"ringkv_snapshot_duration_seconds", "ringkv_snapshot_size_bytes",
	"ringkv_replication_lag_entries", "ringkv_replication_lag_seconds",
	"ringkv_raft_is_primary", "ringkv_raft_term", "ringkv_raft_commit_index", "ringkv_raft_applied_index",
	"ringkv_raft_leader_changes_total",
	"ringkv_fast_writes_uncommitted", "ringkv_fast_writes_reoffered_total", "ringkv_fast_writes_reoffer_lost_total", "ringkv_snapshots_installed_total",
	"ringkv_tombstones",
	"ringkv_node_up", "ringkv_partition_replicas", "ringkv_moves_in_flight",
	"ringkv_engine_disk_bytes", "ringkv_engine_l0_files", "ringkv_engine_l0_sublevels", "ringkv_engine_read_amplification",
	"ringkv_engine_compaction_debt_bytes", "ringkv_engine_compactions_running", "ringkv_engine_compactions_total",
	"ringkv_engine_memtable_bytes", "ringkv_engine_block_cache_bytes",
	"ringkv_engine_block_cache_hits_total", "ringkv_engine_block_cache_misses_total",
	"go_goroutines", "process_cpu_seconds_total",
}

// TestObservability drives every request mode through every node of a
// 3-node cluster and checks the metrics each node exports, replication lag
// while a node is down and after it returns, readiness, and that every
// metric the deploy files use exists.
func TestObservability(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Metrics: true})
	ctx := context.Background()

	// Requests sent to each node, by (op, consistency, code).
	sent := make([]map[[3]string]float64, len(c.Nodes))
	for i := range c.Nodes {
		sent[i] = map[[3]string]float64{}
		kv := pb.NewKVClient(c.Conn(i))
		count := func(op, consistency string, err error) {
			sent[i][[3]string{op, consistency, status.Code(err).String()}]++
		}
		for k := range 6 {
			key := []byte(fmt.Sprintf("obs/%d/%d", i, k))
			_, err := kv.Put(ctx, &pb.PutRequest{Key: key, Value: key})
			count("put", "strong", err)
			_, err = kv.Put(ctx, &pb.PutRequest{Key: key, Value: key, Consistency: pb.WriteConsistency_WRITE_CONSISTENCY_FAST})
			count("put", "fast", err)
			_, err = kv.Get(ctx, &pb.GetRequest{Key: key, Consistency: pb.ReadConsistency_READ_CONSISTENCY_LOCAL})
			count("get", "local", err)
			_, err = kv.Get(ctx, &pb.GetRequest{Key: key, Consistency: pb.ReadConsistency_READ_CONSISTENCY_QUORUM})
			count("get", "quorum", err)
			_, err = kv.Delete(ctx, &pb.DeleteRequest{Key: key, Consistency: pb.WriteConsistency_WRITE_CONSISTENCY_FAST})
			count("delete", "fast", err)
			_, err = kv.Delete(ctx, &pb.DeleteRequest{Key: key})
			count("delete", "strong", err)
			_, err = kv.Get(ctx, &pb.GetRequest{Key: key})
			count("get", "local", err)
		}
		_, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("k"), Consistency: 9})
		count("put", "invalid", err)

		// Requests on a Batch stream are counted as their unary calls are.
		batched := map[uint64][2]string{1: {"put", "strong"}, 2: {"get", "quorum"}, 3: {"delete", "fast"}, 4: {"put", "invalid"}}
		key := []byte(fmt.Sprintf("obs/%d/batched", i))
		stream, err := kv.Batch(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&pb.BatchRequest{Requests: []*pb.Request{
			{Id: 1, Op: &pb.Request_Put{Put: &pb.PutRequest{Key: key, Value: key}}},
			{Id: 2, Op: &pb.Request_Get{Get: &pb.GetRequest{Key: key, Consistency: pb.ReadConsistency_READ_CONSISTENCY_QUORUM}}},
			{Id: 3, Op: &pb.Request_Delete{Delete: &pb.DeleteRequest{Key: key, Consistency: pb.WriteConsistency_WRITE_CONSISTENCY_FAST}}},
			{Id: 4, Op: &pb.Request_Put{Put: &pb.PutRequest{Key: key, Consistency: 9}}},
		}}); err != nil {
			t.Fatal(err)
		}
		if err := stream.CloseSend(); err != nil {
			t.Fatal(err)
		}
		for {
			msg, err := stream.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range msg.GetResponses() {
				var rerr error
				if e := r.GetError(); e != nil {
					rerr = e.Err()
				}
				count(batched[r.GetId()][0], batched[r.GetId()][1], rerr)
				delete(batched, r.GetId())
			}
		}
		if len(batched) != 0 {
			t.Fatalf("batched requests %v not answered", batched)
		}
	}

	t.Run("request counts", func(t *testing.T) {
		for i, n := range c.Nodes {
			got := map[[3]string]float64{}
			for _, m := range scrape(t, n.MetricsAddr())["ringkv_requests_total"].GetMetric() {
				l := labelsOf(m)
				got[[3]string{l["op"], l["consistency"], l["code"]}] = m.GetCounter().GetValue()
			}
			if fmt.Sprint(got) != fmt.Sprint(sent[i]) {
				t.Errorf("%s: requests_total %v, sent %v", n.ID(), got, sent[i])
			}
			var total, observed float64
			for _, v := range sent[i] {
				total += v
			}
			for _, m := range scrape(t, n.MetricsAddr())["ringkv_request_duration_seconds"].GetMetric() {
				observed += float64(m.GetHistogram().GetSampleCount())
			}
			if observed != total {
				t.Errorf("%s: %v latency observations, sent %v requests", n.ID(), observed, total)
			}
		}
		if sent[0][[3]string{"get", "local", codes.NotFound.String()}] == 0 {
			t.Error("no NotFound read was counted: the code label is not exercised")
		}
	})

	t.Run("series exist", func(t *testing.T) {
		have := map[string]bool{}
		for _, n := range c.Nodes {
			mfs := scrape(t, n.MetricsAddr())
			for name, mf := range mfs {
				if len(mf.GetMetric()) > 0 {
					have[name] = true
				}
			}
			if got := mfs["ringkv_wal_sync_duration_seconds"].GetMetric(); len(got) != 1 || got[0].GetHistogram().GetSampleCount() == 0 {
				t.Errorf("%s: no WAL sync observed", n.ID())
			}
		}
		for _, name := range requiredSeries {
			if !have[name] {
				t.Errorf("no node exports %s", name)
			}
		}
		// The engine series come from each node's own engine.
		if n, all := series(t, c, "ringkv_engine_disk_bytes", func(_ map[string]string, v float64) bool { return v > 0 }); n != len(c.Nodes) {
			t.Errorf("%d of %d nodes report engine files on disk: %v", n, len(c.Nodes), all)
		}
		// An election under load may leave a partition without a primary
		// for a moment.
		waitFor(t, 30*time.Second, "one primary per partition", func() (bool, string) {
			primaries, all := series(t, c, "ringkv_raft_is_primary", func(_ map[string]string, v float64) bool { return v == 1 })
			return primaries == 8, fmt.Sprintf("%d primaries for 8 partitions: %v", primaries, all)
		})
	})

	t.Run("deploy files", func(t *testing.T) { checkDeployFiles(t, scrape(t, c.Nodes[0].MetricsAddr())) })

	t.Run("lag while a replica is down", func(t *testing.T) {
		kv := pb.NewKVClient(c.Conn(0))
		c.StopNode(2)
		laggingN3 := func(l map[string]string, v float64) bool { return l["replica"] == "n3" && v > 0 }
		k := 0
		waitFor(t, 30*time.Second, "lag of n3 in entries and seconds", func() (bool, string) {
			for range 16 {
				k++
				kv.Put(ctx, &pb.PutRequest{Key: []byte(fmt.Sprintf("lag/%d", k)), Value: []byte("v")})
			}
			e, all := series(t, c, "ringkv_replication_lag_entries", laggingN3)
			s, _ := series(t, c, "ringkv_replication_lag_seconds", laggingN3)
			return e > 0 && s > 0, strings.Join(all, " ")
		})
		waitFor(t, 30*time.Second, "n3 seen down and nowhere up", func() (bool, string) {
			down, all := series(t, c, "ringkv_node_up", func(l map[string]string, v float64) bool { return l["node"] == "n3" && v == 0 })
			up, _ := series(t, c, "ringkv_node_up", func(l map[string]string, v float64) bool { return l["node"] == "n3" && v == 1 })
			return down > 0 && up == 0, strings.Join(all, " ")
		})

		c.RestartNode(2)
		waitFor(t, 60*time.Second, "every lag back to 0", func() (bool, string) {
			e, all := series(t, c, "ringkv_replication_lag_entries", func(_ map[string]string, v float64) bool { return v > 0 })
			s, alls := series(t, c, "ringkv_replication_lag_seconds", func(_ map[string]string, v float64) bool { return v > 0 })
			n, _ := series(t, c, "ringkv_replication_lag_entries", func(map[string]string, float64) bool { return true })
			// 8 partitions, each with two followers of its primary.
			return e == 0 && s == 0 && n == 16, strings.Join(append(all, alls...), " ")
		})
		waitFor(t, 30*time.Second, "every node up as far as any node sees", func() (bool, string) {
			down, all := series(t, c, "ringkv_node_up", func(_ map[string]string, v float64) bool { return v != 1 })
			n3, _ := series(t, c, "ringkv_node_up", func(l map[string]string, _ float64) bool { return l["node"] == "n3" })
			return down == 0 && n3 >= 2, strings.Join(all, " ")
		})
	})

	t.Run("readiness", func(t *testing.T) {
		addr := c.Nodes[0].MetricsAddr()
		health := healthpb.NewHealthClient(c.Conn(0))
		serving := func(want healthpb.HealthCheckResponse_ServingStatus) func() (bool, string) {
			return func() (bool, string) {
				resp, err := health.Check(ctx, &healthpb.HealthCheckRequest{})
				return err == nil && resp.GetStatus() == want, fmt.Sprint(resp, err)
			}
		}
		if code, body := get(t, "http://"+addr+"/healthz"); code != http.StatusOK {
			t.Fatalf("/healthz: %d %s", code, body)
		}
		waitFor(t, 30*time.Second, "ready", func() (bool, string) {
			code, body := get(t, "http://"+addr+"/readyz")
			return code == http.StatusOK, body
		})
		waitFor(t, 10*time.Second, "gRPC health SERVING", serving(healthpb.HealthCheckResponse_SERVING))

		// Alone, n1's replicas lose their leaders.
		c.StopNode(1)
		c.StopNode(2)
		waitFor(t, 30*time.Second, "not ready without a majority", func() (bool, string) {
			code, body := get(t, "http://"+addr+"/readyz")
			return code == http.StatusServiceUnavailable && strings.Contains(body, "no leader known") && strings.Count(body, "\n") == 1, body
		})
		waitFor(t, 10*time.Second, "gRPC health NOT_SERVING", serving(healthpb.HealthCheckResponse_NOT_SERVING))
		if code, body := get(t, "http://"+addr+"/healthz"); code != http.StatusOK {
			t.Fatalf("/healthz while not ready: %d %s", code, body)
		}
		c.RestartNode(1)
		c.RestartNode(2)
		waitFor(t, 60*time.Second, "ready again", func() (bool, string) {
			code, body := get(t, "http://"+addr+"/readyz")
			return code == http.StatusOK, body
		})
		waitFor(t, 10*time.Second, "gRPC health SERVING again", serving(healthpb.HealthCheckResponse_SERVING))
	})
}

var metricRef = regexp.MustCompile(`\bringkv_[a-z0-9_]+`)

// checkDeployFiles parses the Prometheus config, the recording rules and
// the Grafana dashboard, and checks every ringkv_* metric they reference
// against a live node's exposition.
func checkDeployFiles(t *testing.T, mfs map[string]*dto.MetricFamily) {
	exposed := map[string]bool{}
	for name, mf := range mfs {
		exposed[name] = true
		if mf.GetType() == dto.MetricType_HISTOGRAM {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				exposed[name+suffix] = true
			}
		}
	}
	var exprs []string

	var prom struct {
		RuleFiles     []string `yaml:"rule_files"`
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	readYAML(t, "../deploy/prometheus.yml", &prom)
	var targets []string
	for _, sc := range prom.ScrapeConfigs {
		for _, st := range sc.StaticConfigs {
			targets = append(targets, st.Targets...)
		}
	}
	if fmt.Sprint(targets) != "[n1:9100 n2:9100 n3:9100]" {
		t.Errorf("prometheus.yml scrapes %v, want n1..n3 on 9100", targets)
	}
	if len(prom.RuleFiles) == 0 {
		t.Error("prometheus.yml loads no rule files")
	}

	var rules struct {
		Groups []struct {
			Rules []struct {
				Record string `yaml:"record"`
				Alert  string `yaml:"alert"`
				Expr   string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	readYAML(t, "../deploy/prometheus-rules.yml", &rules)
	recorded := map[string]bool{}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			exprs = append(exprs, r.Expr)
			recorded[r.Record] = true
		}
	}
	for _, q := range []string{"p50", "p95", "p99"} {
		if name := "op_consistency:ringkv_request_duration_seconds:" + q; !recorded[name] {
			t.Errorf("no recording rule %s", name)
		}
	}

	dash, err := os.ReadFile("../deploy/grafana/ringkv.json")
	if err != nil {
		t.Fatal(err)
	}
	var board struct {
		Panels []struct {
			ID      int    `json:"id"`
			Type    string `json:"type"`
			Title   string `json:"title"`
			GridPos struct {
				X, Y, W, H int
			} `json:"gridPos"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(dash, &board); err != nil {
		t.Fatalf("ringkv.json: %v", err)
	}
	if len(board.Panels) < 6 {
		t.Errorf("dashboard has %d panels", len(board.Panels))
	}
	// Grafana takes a panel that shares an id or overlaps another without a
	// word, and shows something else than the file says.
	ids := map[int]bool{}
	for i, p := range board.Panels {
		if ids[p.ID] {
			t.Errorf("panel %q: id %d is taken", p.Title, p.ID)
		}
		ids[p.ID] = true
		g := p.GridPos
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
			t.Errorf("panel %q: gridPos %+v is outside the 24 columns", p.Title, g)
		}
		for _, q := range board.Panels[:i] {
			if o := q.GridPos; g.X < o.X+o.W && o.X < g.X+g.W && g.Y < o.Y+o.H && o.Y < g.Y+g.H {
				t.Errorf("panels %q and %q overlap", q.Title, p.Title)
			}
		}
		// A row only heads the panels below it.
		if len(p.Targets) == 0 && p.Type != "row" {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
			// A recorded series used by the dashboard must be recorded.
			for _, ref := range regexp.MustCompile(`[a-z_]+:ringkv_[a-z0-9_:]+`).FindAllString(tg.Expr, -1) {
				if !recorded[ref] {
					t.Errorf("panel %q uses %s, which no rule records", p.Title, ref)
				}
			}
		}
	}

	refs := 0
	for _, e := range exprs {
		// Recorded names (level:metric:operation) are checked above.
		for _, ref := range metricRef.FindAllStringIndex(e, -1) {
			if ref[0] > 0 && e[ref[0]-1] == ':' || ref[1] < len(e) && e[ref[1]] == ':' {
				continue
			}
			refs++
			if name := e[ref[0]:ref[1]]; !exposed[name] {
				t.Errorf("%q uses %s, which a node does not export", e, name)
			}
		}
	}
	if refs < 10 {
		t.Errorf("only %d metric references found in the deploy files", refs)
	}
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
