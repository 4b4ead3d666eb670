package main

import (
	"encoding/json"
	"math"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"

	"github.com/ringkv/ringkv/internal/testing/testcluster"
)

func TestQuantile(t *testing.T) {
	// 10 samples ≤ 0.1, 10 more ≤ 0.2, none above.
	h := &dto.Histogram{SampleCount: proto.Uint64(20), Bucket: []*dto.Bucket{
		{UpperBound: proto.Float64(0.1), CumulativeCount: proto.Uint64(10)},
		{UpperBound: proto.Float64(0.2), CumulativeCount: proto.Uint64(20)},
		{UpperBound: proto.Float64(math.Inf(1)), CumulativeCount: proto.Uint64(20)},
	}}
	tests := []struct{ q, want float64 }{
		{0.25, 0.05}, {0.5, 0.1}, {0.75, 0.15}, {1, 0.2},
	}
	for _, tc := range tests {
		if got := quantile(tc.q, h); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("quantile(%v) = %v, want %v", tc.q, got, tc.want)
		}
	}
	if got := quantile(0.5, &dto.Histogram{}); !math.IsNaN(got) {
		t.Errorf("quantile of an empty histogram = %v, want NaN", got)
	}
}

func TestMetricsAndStatusLag(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Metrics: true})
	addr := c.Nodes[0].Addr()
	for _, args := range [][]string{
		{"put", "a", "1"}, {"put", "b", "2", "-c", "fast"}, {"get", "a", "-c", "quorum"}, {"get", "b"},
	} {
		if r := kvctl(nil, append([]string{"--addr", addr}, args...)...); r.code != exitOK {
			t.Fatalf("%v: exit %d: %s", args, r.code, r.stderr)
		}
	}
	r := kvctl(nil, "--addr", addr, "metrics", "--json")
	if r.code != exitOK {
		t.Fatalf("metrics: exit %d: %s", r.code, r.stderr)
	}
	var heads []headline
	if err := json.Unmarshal([]byte(r.stdout), &heads); err != nil {
		t.Fatalf("metrics --json: %v\n%s", err, r.stdout)
	}
	if len(heads) != 3 {
		t.Fatalf("metrics for %d nodes, want 3", len(heads))
	}
	// kvctl sends each request straight to its primary, which counts it:
	// over all nodes there is one put/strong, put/fast, get/quorum and
	// get/local each.
	counts := map[string]uint64{}
	for _, h := range heads {
		if h.Error != "" || h.WALSizeBytes <= 0 {
			t.Fatalf("node %s: error %q, WAL size %v", h.Node, h.Error, h.WALSizeBytes)
		}
		for _, q := range h.Requests {
			counts[q.Op+"/"+q.Consistency] += q.Count
			if !(q.P50 > 0 && q.P50 <= q.P95 && q.P95 <= q.P99) {
				t.Errorf("%s %s/%s: percentiles %v %v %v", h.Node, q.Op, q.Consistency, q.P50, q.P95, q.P99)
			}
		}
	}
	for _, k := range []string{"put/strong", "put/fast", "get/quorum", "get/local"} {
		if counts[k] != 1 {
			t.Errorf("%s counted %d times over the cluster, want 1 (%v)", k, counts[k], counts)
		}
	}
	if r := kvctl(nil, "--addr", addr, "metrics", "--node", "n9"); r.code != exitUsage {
		t.Errorf("metrics --node n9: exit %d, want %d", r.code, exitUsage)
	}

	// Every follower shows its lag in status, as its primary exports it.
	deadline := time.Now().Add(30 * time.Second)
	for {
		r := kvctl(nil, "--addr", addr, "status", "--json")
		var rep statusReport
		if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
			t.Fatalf("status --json: %v", err)
		}
		missing := 0
		for _, p := range rep.Partitions {
			for _, rs := range p.Replicas {
				if rs.Node != p.Primary && (rs.LagEntries == nil || rs.LagSeconds == nil) {
					missing++
				}
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d followers without lag in status after 30s:\n%s", missing, r.stdout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
