package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"sort"
	"strconv"
	"text/tabwriter"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/ringkv/ringkv/client"
)

// scrape fetches and parses a node's /metrics. A metrics address that
// listens on every interface (0.0.0.0:9100 in a container) is reached on the
// host of the node's gRPC address.
func scrape(ctx context.Context, metricsAddr, grpcAddr string) (map[string]*dto.MetricFamily, error) {
	host, port, err := net.SplitHostPort(metricsAddr)
	if err != nil {
		return nil, fmt.Errorf("metrics address %q: %w", metricsAddr, err)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		if h, _, err := net.SplitHostPort(grpcAddr); err == nil {
			host = h
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort(host, port)+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics of %s: %s", metricsAddr, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	return parser.TextToMetricFamilies(resp.Body)
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// lagKey names one follower of one partition.
type lagKey struct {
	partition uint32
	replica   string
}

type lag struct {
	entries uint64
	seconds float64
	timed   bool // seconds is known
}

// lags reads the replication lag series a primary exports.
func lags(fams map[string]*dto.MetricFamily, into map[lagKey]*lag) {
	get := func(k lagKey) *lag {
		if into[k] == nil {
			into[k] = &lag{}
		}
		return into[k]
	}
	key := func(m *dto.Metric) (lagKey, bool) {
		p, err := strconv.ParseUint(label(m, "partition"), 10, 32)
		return lagKey{uint32(p), label(m, "replica")}, err == nil
	}
	for _, m := range fams["ringkv_replication_lag_entries"].GetMetric() {
		if k, ok := key(m); ok {
			get(k).entries = uint64(m.GetGauge().GetValue())
		}
	}
	for _, m := range fams["ringkv_replication_lag_seconds"].GetMetric() {
		if k, ok := key(m); ok {
			l := get(k)
			l.seconds, l.timed = m.GetGauge().GetValue(), true
		}
	}
}

// quantile estimates the q-quantile of a cumulative histogram the way
// Prometheus's histogram_quantile does: linear interpolation in the bucket
// that holds it.
func quantile(q float64, h *dto.Histogram) float64 {
	total := float64(h.GetSampleCount())
	if total == 0 {
		return math.NaN()
	}
	rank := q * total
	var prevBound, prevCount float64
	for _, b := range h.GetBucket() {
		count := float64(b.GetCumulativeCount())
		if count >= rank {
			if math.IsInf(b.GetUpperBound(), 1) {
				return prevBound
			}
			if count == prevCount {
				return b.GetUpperBound()
			}
			return prevBound + (b.GetUpperBound()-prevBound)*(rank-prevCount)/(count-prevCount)
		}
		prevBound, prevCount = b.GetUpperBound(), count
	}
	return prevBound
}

// headline is what `kvctl metrics` prints for one node.
type headline struct {
	Node          string            `json:"node"`
	Error         string            `json:"error,omitempty"`
	Requests      []requestHeadline `json:"requests,omitempty"`
	WALSizeBytes  float64           `json:"wal_size_bytes"`
	MaxLagEntries uint64            `json:"max_lag_entries"`
	MaxLagSeconds float64           `json:"max_lag_seconds"`
	lagByReplica  map[lagKey]*lag   `json:"-"`
}

type requestHeadline struct {
	Op          string  `json:"op"`
	Consistency string  `json:"consistency"`
	Count       uint64  `json:"count"`
	P50         float64 `json:"p50_seconds"`
	P95         float64 `json:"p95_seconds"`
	P99         float64 `json:"p99_seconds"`
}

func headlineOf(node string, fams map[string]*dto.MetricFamily) headline {
	h := headline{Node: node, lagByReplica: map[lagKey]*lag{}}
	for _, m := range fams["ringkv_request_duration_seconds"].GetMetric() {
		hist := m.GetHistogram()
		if hist.GetSampleCount() == 0 {
			continue
		}
		h.Requests = append(h.Requests, requestHeadline{
			Op: label(m, "op"), Consistency: label(m, "consistency"), Count: hist.GetSampleCount(),
			P50: quantile(0.50, hist), P95: quantile(0.95, hist), P99: quantile(0.99, hist),
		})
	}
	sort.Slice(h.Requests, func(i, j int) bool {
		a, b := h.Requests[i], h.Requests[j]
		return a.Op < b.Op || a.Op == b.Op && a.Consistency < b.Consistency
	})
	for _, m := range fams["ringkv_wal_size_bytes"].GetMetric() {
		h.WALSizeBytes = m.GetGauge().GetValue()
	}
	lags(fams, h.lagByReplica)
	for _, l := range h.lagByReplica {
		h.MaxLagEntries = max(h.MaxLagEntries, l.entries)
		h.MaxLagSeconds = max(h.MaxLagSeconds, l.seconds)
	}
	return h
}

// metricsCmd prints each node's headline figures from its /metrics: request
// latency percentiles per operation and consistency since the node started,
// WAL size, and the largest replication lag among partitions it leads.
func metricsCmd(ctx context.Context, c *client.Client, w io.Writer, onlyNode string, asJSON bool) error {
	m, err := c.ClusterMap(ctx)
	if err != nil {
		return err
	}
	var out []headline
	found := false
	for _, n := range m.GetNodes() {
		if onlyNode != "" && n.GetId() != onlyNode {
			continue
		}
		found = true
		h := headline{Node: n.GetId()}
		st, err := c.Status(ctx, n.GetAddress())
		switch {
		case err != nil:
			h.Error = err.Error()
		case st.GetMetricsAddress() == "":
			h.Error = "the node serves no metrics (started without --metrics-addr)"
		default:
			fams, err := scrape(ctx, st.GetMetricsAddress(), n.GetAddress())
			if err != nil {
				h.Error = err.Error()
			} else {
				h = headlineOf(n.GetId(), fams)
			}
		}
		out = append(out, h)
	}
	if !found {
		return usagef("--node %q is not a member of the cluster", onlyNode)
	}
	if asJSON {
		return writeJSON(w, out)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, h := range out {
		if h.Error != "" {
			fmt.Fprintf(tw, "%s\terror: %s\n\n", h.Node, h.Error)
			continue
		}
		fmt.Fprintf(tw, "%s\tWAL %s\tmax lag %d entries, %.3fs\n", h.Node, bytesString(h.WALSizeBytes), h.MaxLagEntries, h.MaxLagSeconds)
		fmt.Fprintf(tw, "  OP\tCONSISTENCY\tCOUNT\tP50\tP95\tP99\n")
		for _, r := range h.Requests {
			fmt.Fprintf(tw, "  %s\t%s\t%d\t%s\t%s\t%s\n", r.Op, r.Consistency, r.Count, ms(r.P50), ms(r.P95), ms(r.P99))
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}

func ms(s float64) string {
	if math.IsNaN(s) {
		return "-"
	}
	return strconv.FormatFloat(s*1000, 'f', 2, 64) + "ms"
}

func bytesString(b float64) string {
	const mib = 1 << 20
	return strconv.FormatFloat(b/mib, 'f', 1, 64) + " MiB"
}
