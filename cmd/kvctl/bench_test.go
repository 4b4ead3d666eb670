package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ringkv/ringkv/client"
	"github.com/ringkv/ringkv/fsm"
	"github.com/ringkv/ringkv/internal/testing/testcluster"
)

// runBenchJSON runs "kvctl bench --json args..." against addr and decodes
// its report strictly.
func runBenchJSON(t *testing.T, addr string, args ...string) (benchReport, string) {
	t.Helper()
	stdout, stderr := runBenchOut(t, addr, append([]string{"--json"}, args...)...)
	var rep benchReport
	dec := json.NewDecoder(strings.NewReader(stdout))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rep); err != nil {
		t.Fatalf("output is not a bench report: %v\n%s", err, stdout)
	}
	return rep, stderr
}

func runBenchOut(t *testing.T, addr string, args ...string) (string, string) {
	t.Helper()
	opts := options{addr: addr, timeout: 10 * time.Second}
	var stdout, stderr bytes.Buffer
	if err := runBench(newFlagSet("bench", &opts), args, &opts, &stdout, &stderr); err != nil {
		t.Fatalf("bench %v: %v\nstderr:\n%s", args, err, stderr.String())
	}
	return stdout.String(), stderr.String()
}

// checkCounts checks that a phase's counts add up.
func checkCounts(t *testing.T, name string, p *phaseReport) {
	t.Helper()
	if p == nil {
		t.Fatalf("%s: missing", name)
	}
	var ops, ok, errs int64
	for _, o := range p.Operations {
		var oerrs int64
		for _, n := range o.Errors {
			oerrs += n
		}
		if o.Ops != o.OK+oerrs {
			t.Errorf("%s %s: ops = %d, want ok %d + errors %d", name, o.Op, o.Ops, o.OK, oerrs)
		}
		if want := float64(o.OK) / p.Seconds; math.Abs(o.Throughput-want) > 1e-6*want {
			t.Errorf("%s %s: throughput = %v, want ok/seconds = %v", name, o.Op, o.Throughput, want)
		}
		if l := o.LatencyUS; o.OK > 0 && !(0 < l.P50 && l.P50 <= l.P95 && l.P95 <= l.P99 && l.P99 <= l.P999 && l.P999 <= l.Max) {
			t.Errorf("%s %s: latency percentiles out of order: %+v", name, o.Op, l)
		}
		ops, ok, errs = ops+o.Ops, ok+o.OK, errs+oerrs
	}
	if p.Ops != ops || p.OK != ok || p.Errors != errs || p.Ops != p.OK+p.Errors {
		t.Errorf("%s: ops/ok/errors = %d/%d/%d, operations sum to %d/%d/%d", name, p.Ops, p.OK, p.Errors, ops, ok, errs)
	}
	if p.ClientCPU.Cores <= 0 || p.ClientCPU.UserSeconds+p.ClientCPU.SysSeconds <= 0 {
		t.Errorf("%s: client CPU not measured: %+v", name, p.ClientCPU)
	}
}

func opByName(p *phaseReport, name string) opReport {
	for _, o := range p.Operations {
		if o.Op == name {
			return o
		}
	}
	return opReport{}
}

func TestBenchWorkloadsCountsAddUp(t *testing.T) {
	addr := testcluster.Start(t, testcluster.Options{}).Addrs()[0]
	const keys = 300
	// R runs first: it loads the keys the later reads find.
	tests := []struct {
		name     string
		args     []string
		readFrac float64
		load     bool
	}{
		{"R loads then reads", []string{"--workload", "R"}, 1, true},
		{"A", []string{"--workload", "A"}, 0.5, false},
		{"B lower-case", []string{"--workload", "b"}, 0.95, false},
		{"C quorum zipfian", []string{"--workload", "C", "--read-consistency", "quorum", "--distribution", "zipfian"}, 1, false},
		{"W fast", []string{"--workload", "W", "--write-consistency", "fast"}, 0, false},
		{"load only", []string{"--workload", "W", "--load", "--duration", "0"}, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"--clients", "4", "--keys", strconv.Itoa(keys), "--duration", "1s"}, tt.args...)
			rep, stderr := runBenchJSON(t, addr, args...)
			if rep.Clients != 4 || rep.Connections != 1 || rep.Keys != keys || rep.ValueSize != 100 {
				t.Errorf("report echoes clients/connections/keys/value size %d/%d/%d/%d, want 4/1/%d/100",
					rep.Clients, rep.Connections, rep.Keys, rep.ValueSize, keys)
			}
			if tt.load {
				checkCounts(t, "load", rep.Load)
				if rep.Load.OK != keys || rep.Load.Errors != 0 {
					t.Errorf("load wrote %d keys with %d errors, want %d and 0", rep.Load.OK, rep.Load.Errors, keys)
				}
				if !strings.Contains(stderr, "load [") || !strings.Contains(stderr, "100%") {
					t.Errorf("no load progress bar on stderr:\n%s", stderr)
				}
			} else if rep.Load != nil {
				t.Errorf("load phase ran without --load: %+v", rep.Load)
			}
			if tt.name == "load only" {
				if rep.Run != nil {
					t.Errorf("--duration 0 ran a measured phase: %+v", rep.Run)
				}
				return
			}
			checkCounts(t, "run", rep.Run)
			if rep.Run.Errors != 0 {
				t.Errorf("run errors on a healthy cluster: %+v", rep.Run.Operations)
			}
			if rep.Run.Ops == 0 {
				t.Fatal("run completed no operation")
			}
			// Five standard deviations of the binomial share of reads.
			n := float64(rep.Run.Ops)
			got := float64(opByName(rep.Run, "read").Ops) / n
			if tol := 5*math.Sqrt(tt.readFrac*(1-tt.readFrac)/n) + 1/n; math.Abs(got-tt.readFrac) > tol {
				t.Errorf("read share = %.3f of %d ops, want %.2f ± %.3f", got, rep.Run.Ops, tt.readFrac, tol)
			}
			if !strings.Contains(stderr, "ops/s") {
				t.Errorf("no progress line on stderr:\n%s", stderr)
			}
		})
	}
	t.Run("table", func(t *testing.T) {
		out, _ := runBenchOut(t, addr, "--workload", "A", "--clients", "2", "--keys", strconv.Itoa(keys), "--duration", "500ms")
		for _, want := range []string{"workload A (50% read, 50% update)", "run: ", "P99.9", "read ", "update "} {
			if !strings.Contains(out, want) {
				t.Errorf("table lacks %q:\n%s", want, out)
			}
		}
	})
}

// TestBenchLoadFrom grows a key space: --load-from writes only the keys from
// its index on.
func TestBenchLoadFrom(t *testing.T) {
	addr := testcluster.Start(t, testcluster.Options{}).Addrs()[0]
	rep, _ := runBenchJSON(t, addr, "--workload", "W", "--clients", "4", "--keys", "300", "--load", "--load-from", "200", "--duration", "0")
	if rep.Load == nil || rep.Load.OK != 100 || rep.Load.Errors != 0 {
		t.Fatalf("load = %+v, want 100 keys written without errors", rep.Load)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.New(ctx, []string{addr})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for key, present := range map[int]bool{0: false, 199: false, 200: true, 299: true} {
		_, err := c.Get(ctx, []byte(keyPrefix+strconv.Itoa(key)), client.Quorum)
		if got := err == nil; got != present || (err != nil && !errors.Is(err, client.ErrNotFound)) {
			t.Errorf("key %d: Get error %v, want present = %v", key, err, present)
		}
	}
}

func TestBenchCountsErrorsByCode(t *testing.T) {
	addr := testcluster.Start(t, testcluster.Options{}).Addrs()[0]
	tests := []struct {
		name string
		args []string
		op   string
		code string
	}{
		{"reads of absent keys", []string{"--workload", "C"}, "read", "NotFound"},
		{"values over the limit", []string{"--workload", "W", "--value-size", strconv.Itoa(fsm.DefaultMaxValueSize + 1)}, "update", "InvalidArgument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep, stderr := runBenchJSON(t, addr, append([]string{"--clients", "2", "--keys", "50", "--duration", "500ms"}, tt.args...)...)
			checkCounts(t, "run", rep.Run)
			o := opByName(rep.Run, tt.op)
			if o.Ops == 0 || o.OK != 0 || len(o.Errors) != 1 || o.Errors[tt.code] != o.Ops {
				t.Errorf("%s: ok %d, errors %v; want every one of %d ops to fail with %s", tt.op, o.OK, o.Errors, o.Ops, tt.code)
			}
			if rep.Run.Errors != rep.Run.Ops {
				t.Errorf("run errors = %d, want all %d ops", rep.Run.Errors, rep.Run.Ops)
			}
			if !strings.Contains(stderr, "errors "+strconv.FormatInt(rep.Run.Errors, 10)) {
				t.Errorf("last progress line does not count the %d errors:\n%s", rep.Run.Errors, stderr)
			}
		})
	}
}

func TestBenchOpenLoop(t *testing.T) {
	addr := testcluster.Start(t, testcluster.Options{}).Addrs()[0]
	t.Run("keeps the rate", func(t *testing.T) {
		const rate, secs = 50, 2
		rep, _ := runBenchJSON(t, addr, "--workload", "W", "--write-consistency", "fast", "--clients", "16",
			"--keys", "100", "--rate", strconv.Itoa(rate), "--duration", strconv.Itoa(secs)+"s")
		checkCounts(t, "run", rep.Run)
		if rep.Rate != rate {
			t.Errorf("report rate = %v, want %d", rep.Rate, rate)
		}
		if got := rep.Run.Ops + rep.Run.Missed; got != rate*secs {
			t.Errorf("ops %d + missed %d = %d, want the %d due in %d s", rep.Run.Ops, rep.Run.Missed, got, rate*secs, secs)
		}
		if rep.Run.Missed != 0 || rep.Run.Errors != 0 {
			t.Errorf("16 workers at %d ops/s missed %d ops and failed %d", rate, rep.Run.Missed, rep.Run.Errors)
		}
		// Requests are spread over the run, not sent in a burst: the run
		// lasts its duration (plus the last request's latency).
		if rep.Run.Seconds < secs-0.1 || rep.Run.Seconds > secs+3 {
			t.Errorf("run lasted %.2f s, want about %d s", rep.Run.Seconds, secs)
		}
	})
	t.Run("latency counts from the due time", func(t *testing.T) {
		// One synchronous worker cannot do 100 000 strong writes a second,
		// so the schedule falls ever further behind: an op's latency is
		// mostly its wait, and the median op waited about half the run.
		const rate = 100000
		rep, _ := runBenchJSON(t, addr, "--workload", "W", "--clients", "1", "--keys", "100",
			"--rate", strconv.Itoa(rate), "--duration", "1s")
		checkCounts(t, "run", rep.Run)
		if got := rep.Run.Ops + rep.Run.Missed; got != rate {
			t.Errorf("ops %d + missed %d = %d, want %d due", rep.Run.Ops, rep.Run.Missed, got, rate)
		}
		if rep.Run.Missed == 0 {
			t.Error("missed = 0, want the ops that were due but never started")
		}
		if p50 := opByName(rep.Run, "update").LatencyUS.P50; p50 < 250e3 {
			t.Errorf("p50 = %.0f µs, want ≥ 250 ms: latency must include the wait behind the schedule", p50)
		}
	})
}

func TestBenchBadInput(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--workload", "X"}, `--workload = "X", want A, B, C, W, R`},
		{[]string{"--clients", "0"}, "--clients = 0, want 1..10000"},
		{[]string{"--clients", "10001"}, "--clients = 10001, want 1..10000"},
		{[]string{"--duration", "0"}, "--duration = 0s, want > 0"},
		{[]string{"--duration", "-1s", "--load"}, "--duration = -1s, want > 0"},
		{[]string{"--keys", "0"}, "--keys = 0, want at least 1"},
		{[]string{"--keys", "10", "--load", "--load-from", "10"}, "--load-from = 10, want 0..9"},
		{[]string{"--load-from", "-1", "--load"}, "--load-from = -1, want 0..99999"},
		{[]string{"--load-from", "5"}, "--load-from = 5, want 0..99999 (--keys - 1), and --load"},
		{[]string{"--value-size", "-1"}, "--value-size = -1, want 0..67108864"},
		{[]string{"--distribution", "pareto"}, `--distribution = "pareto", want uniform, zipfian`},
		{[]string{"--write-consistency", "weak"}, `--write-consistency = "weak", want strong, fast`},
		{[]string{"--read-consistency", "any"}, `--read-consistency = "any", want local, quorum`},
		{[]string{"--rate", "-1"}, "--rate = -1, want 0 (closed loop) to 1e+07 ops/s"},
		{[]string{"--rate", "NaN"}, "--rate = NaN, want 0 (closed loop)"},
		{[]string{"--timeout", "0s"}, "--timeout = 0s, want > 0"},
		{[]string{"--retry", "-1s"}, "--retry = -1s, want >= 0"},
		{[]string{"extra"}, "bench takes 0 argument(s), got 1"},
		{[]string{"--clients", "x"}, `invalid value "x" for flag -clients`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			// Nothing listens on port 1: a dial would fail with status 3,
			// so status 2 also shows that nothing was sent.
			var stdout, stderr bytes.Buffer
			args := append([]string{"--addr", "127.0.0.1:1", "bench"}, tt.args...)
			if code := run(args, nil, &stdout, &stderr); code != exitUsage {
				t.Errorf("exit status %d, want %d; stderr: %s", code, exitUsage, stderr.String())
			}
			if !strings.Contains(stderr.String(), tt.want) {
				t.Errorf("stderr %q does not say %q", stderr.String(), tt.want)
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout %q, want nothing", stdout.String())
			}
		})
	}
}

func TestZipfianKeysAreSkewed(t *testing.T) {
	const keys, draws = 1000, 100000
	rng := rand.New(rand.NewSource(1))
	w := &worker{rng: rng, zipf: rand.NewZipf(rng, zipfS, 1, keys-1)}
	var count [keys]int
	for range draws {
		k := w.nextKey(keys)
		if k < 0 || k >= keys {
			t.Fatalf("key %d outside [0, %d)", k, keys)
		}
		count[k]++
	}
	// P(k) ∝ (1+k)^-1.01: key 0 takes about 13% of draws, 130 times a
	// uniform share, and popularity falls with the rank.
	if count[0] < 100*draws/keys || !(count[0] > count[1] && count[1] > count[10] && count[10] > count[500]) {
		t.Errorf("draws of keys 0, 1, 10, 500 = %d, %d, %d, %d; want zipfian skew", count[0], count[1], count[10], count[500])
	}
}

func TestBenchRetryOp(t *testing.T) {
	unavailable := status.Error(codes.Unavailable, "no quorum")
	tests := []struct {
		name         string
		retry        time.Duration
		fails        int // attempts that fail before one succeeds
		err          error
		wantAttempts int
		wantErr      bool
	}{
		{"no retry: one attempt", 0, 1, unavailable, 1, true},
		{"retried until it succeeds", time.Minute, 3, unavailable, 4, false},
		{"a wrapped NotPrimary give-up is retried", time.Minute, 2, fmt.Errorf("ringkv: gave up: %w", status.Error(codes.FailedPrecondition, "not primary")), 3, false},
		{"absent key not retried", time.Minute, 1, client.ErrNotFound, 1, true},
		{"invalid request not retried", time.Minute, 1, status.Error(codes.InvalidArgument, "value too large"), 1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls := 0
			start := time.Now()
			attempts, err := retryOp(context.Background(), tt.retry, func() error {
				calls++
				if calls <= tt.fails {
					return tt.err
				}
				return nil
			})
			if attempts != tt.wantAttempts || calls != attempts || (err != nil) != tt.wantErr {
				t.Errorf("attempts %d, calls %d, err %v; want %d attempts, error %v", attempts, calls, err, tt.wantAttempts, tt.wantErr)
			}
			if err != nil && !errors.Is(err, tt.err) {
				t.Errorf("err = %v, want the last attempt's %v", err, tt.err)
			}
			if minWait := time.Duration(attempts-1) * retryPause; time.Since(start) < minWait {
				t.Errorf("%d attempts took %v, want at least %v (retryPause between them)", attempts, time.Since(start), minWait)
			}
		})
	}
	// How many attempts fit in retry depends on how late the pauses' timers
	// fire on a loaded machine, so the count is bounded from both sides
	// instead: no pause starts unless it ends within retry (at most
	// retry/retryPause pauses), and it gives up only once another pause
	// would not.
	t.Run("gives up after retry", func(t *testing.T) {
		const retry = 5 * retryPause / 2
		start := time.Now()
		calls := 0
		attempts, err := retryOp(context.Background(), retry, func() error { calls++; return unavailable })
		elapsed := time.Since(start)
		if maxAttempts := int(retry/retryPause) + 1; attempts < 1 || attempts > maxAttempts || calls != attempts || !errors.Is(err, unavailable) {
			t.Errorf("attempts %d, calls %d, err %v; want 1..%d attempts and the last attempt's error", attempts, calls, err, maxAttempts)
		}
		if elapsed+retryPause <= retry {
			t.Errorf("gave up after %v, though another attempt %v later was still within --retry %v", elapsed, retryPause, retry)
		}
		if minWait := time.Duration(attempts-1) * retryPause; elapsed < minWait {
			t.Errorf("%d attempts took %v, want at least %v (retryPause between them)", attempts, elapsed, minWait)
		}
	})
	t.Run("stops when ctx ends", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		attempts, err := retryOp(ctx, time.Hour, func() error { cancel(); return unavailable })
		if attempts != 1 || !errors.Is(err, unavailable) {
			t.Errorf("attempts %d, err %v; want 1 and the attempt's error", attempts, err)
		}
	})
}

func TestBenchLatencyLog(t *testing.T) {
	addr := testcluster.Start(t, testcluster.Options{}).Addrs()[0]
	path := filepath.Join(t.TempDir(), "latencies")
	before := time.Now()
	rep, _ := runBenchJSON(t, addr, "--workload", "A", "--clients", "4", "--keys", "50", "--duration", "500ms",
		"--load", "--retry", "5s", "--latency-log", path)
	after := time.Now()
	checkCounts(t, "run", rep.Run)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	// The run's operations only, not the load's.
	if int64(len(lines)) != rep.Run.Ops {
		t.Fatalf("%d lines, want one per operation of the run (%d)", len(lines), rep.Run.Ops)
	}
	var maxNS int64
	ops := map[string]int64{}
	for _, line := range lines {
		var start, ns int64
		var op, outcome string
		var attempts int
		if n, err := fmt.Sscanf(line, "%d %d %s %s %d", &start, &ns, &op, &outcome, &attempts); n != 5 || err != nil {
			t.Fatalf("line %q: want START_UNIX_NS LATENCY_NS OP OUTCOME ATTEMPTS (%v)", line, err)
		}
		if s := time.Unix(0, start); s.Before(before) || s.After(after) || ns <= 0 || attempts < 1 {
			t.Errorf("line %q: start %v outside the run [%v, %v], or no latency or attempt", line, s, before, after)
		}
		if outcome != "ok" {
			t.Errorf("line %q: outcome %q on a healthy cluster with every key loaded", line, outcome)
		}
		ops[op]++
		maxNS = max(maxNS, ns)
	}
	if ops["read"] != opByName(rep.Run, "read").Ops || ops["update"] != opByName(rep.Run, "update").Ops {
		t.Errorf("lines by op %v, want the report's read %d and update %d", ops, opByName(rep.Run, "read").Ops, opByName(rep.Run, "update").Ops)
	}
	// The histograms keep 3 significant digits.
	var repMax float64
	for _, o := range rep.Run.Operations {
		repMax = max(repMax, o.LatencyUS.Max)
	}
	if got := float64(maxNS) / 1e3; math.Abs(got-repMax) > repMax/100 {
		t.Errorf("longest logged latency %.0f µs, report's max %.0f µs", got, repMax)
	}
}

// TestLatencyLogWriteAllocatesNothing: --latency-log's line is written on
// every operation's path, between one measurement and the next; it must
// cost neither an allocation (GC pressure shows in the latencies) nor a
// syscall (the buffer takes the lines).
func TestLatencyLogWriteAllocatesNothing(t *testing.T) {
	l, err := openLatencyLog(filepath.Join(t.TempDir(), "latencies"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.close()
	start := time.Now()
	if n := testing.AllocsPerRun(1000, func() { l.write(start, 1234*time.Microsecond, opUpdate, nil, 1) }); n != 0 {
		t.Errorf("%v allocations per line, want 0", n)
	}
	if l.w.Buffered() == 0 {
		t.Error("no line waits in the buffer: they go to the file one by one")
	}
}
