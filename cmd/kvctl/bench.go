package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/signal"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ringkv/ringkv/client"
)

const (
	// workersPerClient workers share one client.Client and so one gRPC
	// connection per node: enough to keep HTTP/2 streams busy without one
	// connection's framing becoming the limit.
	workersPerClient = 16
	// keyPrefix keeps benchmark keys apart from other keys.
	keyPrefix = "bench/"
	// Latency histograms: 1 µs to 1 min, 3 significant digits; a longer
	// latency is recorded as 1 min.
	histLowest  = int64(time.Microsecond)
	histHighest = int64(time.Minute)
	histDigits  = 3
	// zipfS is the exponent of the zipfian distribution. math/rand's Zipf
	// needs s > 1; 1.01 is as close as it gets to YCSB's theta = 0.99.
	zipfS = 1.01

	maxClients   = 10000
	maxValueSize = 64 << 20
	maxRate      = 1e7
	// retryPause separates the attempts of an operation repeated under
	// --retry; the client's own backoff comes on top when it retries
	// inside an attempt.
	retryPause = 10 * time.Millisecond
)

// workload is a YCSB operation mix.
type workload struct {
	name     string
	readFrac float64 // share of reads; the rest are updates
	load     bool    // always load the key space first
	desc     string
}

func (w workload) String() string { return w.name }

var workloads = []workload{
	{"A", 0.5, false, "50% read, 50% update"},
	{"B", 0.95, false, "95% read, 5% update"},
	{"C", 1, false, "read only"},
	{"W", 0, false, "update only"},
	{"R", 1, true, "read only after a load phase"},
}

type distribution string

func (d distribution) String() string { return string(d) }

const (
	uniform distribution = "uniform"
	zipfian distribution = "zipfian"
)

// benchConfig is a checked "kvctl bench" command line.
type benchConfig struct {
	addr      string
	opTimeout time.Duration
	workload  workload
	clients   int
	duration  time.Duration
	keys      int
	loadFrom  int // first key --load writes
	valueSize int
	dist      distribution
	write     client.WriteConsistency
	read      client.ReadConsistency
	rate      float64 // ops/s; 0 is closed loop
	load      bool
	json      bool
	// retry repeats a failed operation until it succeeds or this long has
	// passed since its first attempt; 0 never repeats.
	retry time.Duration
	// latencyLog names the file that gets one line per operation of the
	// run; empty: none.
	latencyLog string
}

// runBench implements "kvctl bench", a YCSB-style load generator: the table
// (or JSON) goes to stdout, a progress line about once a second to stderr.
//
//	kvctl bench [--workload A|B|C|W|R] [--clients N] [--duration D] [--keys K]
//	            [--value-size B] [--distribution uniform|zipfian]
//	            [--write-consistency strong|fast] [--read-consistency local|quorum]
//	            [--rate OPS] [--load [--load-from I]] [--json] [--retry D]
//	            [--latency-log FILE]
//
// Workloads: A 50% read / 50% update, B 95/5, C read-only, W update-only, R
// read-only after a load phase (C with --load). --load first writes every key
// of the key space once (with --write-consistency), or with --load-from I the
// keys from I on, growing a key space loaded before; --duration 0 then only
// loads. Keys are "bench/<i>" for i in [0, --keys), so a run never touches
// keys a person wrote.
//
// Closed loop (default): each of the --clients workers sends its next request
// when the previous one answered. Open loop (--rate): requests are due at a
// fixed aggregate rate whatever the answers, and a request's latency is
// measured from the moment it was due, not from when a worker got to send it,
// so a stalled server shows up in the percentiles instead of slowing the
// senders down (no coordinated omission). Due requests that no worker could
// start before the end are reported as missed.
//
// Each block of workersPerClient workers shares one client.Client, so the
// load spreads over several gRPC connections per node. --timeout bounds each
// operation. Latencies of successful operations go into HDR histograms;
// failures are counted by gRPC code (NotFound for a read of an absent key).
// The client's own CPU use (getrusage user+sys over wall time) is reported so
// that a saturated load generator is visible.
//
// --retry D sends a failed operation again, with the same key and value,
// retryPause after each failure, until it succeeds or D has passed since its
// first attempt (never for NotFound or InvalidArgument, which a repeat cannot
// change): its latency then runs from its first attempt to its success, what
// a caller that repeats its request waits, and only its last outcome is
// counted. --latency-log FILE writes one line per operation of the run,
// "START_UNIX_NS LATENCY_NS OP OUTCOME ATTEMPTS" (OUTCOME is ok or the
// error's code), so that a script can find the operations around a fault.
func runBench(fs *flag.FlagSet, args []string, opts *options, stdout, stderr io.Writer) error {
	cfg, err := parseBench(fs, args, opts)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := cfg.run(ctx, stderr)
	if err != nil {
		return err
	}
	if cfg.json {
		return writeJSON(stdout, rep)
	}
	return printBench(stdout, rep)
}

func parseBench(fs *flag.FlagSet, args []string, opts *options) (benchConfig, error) {
	var wl, dist, write, read string
	cfg := benchConfig{}
	fs.StringVar(&wl, "workload", "A", "A (50/50 read/update), B (95/5), C (read only), W (update only), R (read only after loading)")
	fs.IntVar(&cfg.clients, "clients", 16, "concurrent workers")
	fs.DurationVar(&cfg.duration, "duration", 10*time.Second, "length of the measured run (0 with --load: load only)")
	fs.IntVar(&cfg.keys, "keys", 100000, "size of the key space")
	fs.IntVar(&cfg.valueSize, "value-size", 100, "bytes per value")
	fs.StringVar(&dist, "distribution", "uniform", "key popularity: uniform or zipfian")
	fs.StringVar(&write, "write-consistency", "strong", "strong or fast")
	fs.StringVar(&read, "read-consistency", "local", "local or quorum")
	fs.Float64Var(&cfg.rate, "rate", 0, "open loop at this many ops/s in total (0: closed loop)")
	fs.BoolVar(&cfg.load, "load", false, "write every key once before the run")
	fs.IntVar(&cfg.loadFrom, "load-from", 0, "with --load, write only the keys from this index on (the ones below were loaded before)")
	fs.BoolVar(&opts.json, "json", false, "print one JSON object")
	fs.DurationVar(&cfg.retry, "retry", 0, "repeat a failed operation until it succeeds or this long has passed since its first attempt; its latency counts from the first (0: never)")
	fs.StringVar(&cfg.latencyLog, "latency-log", "", "write one line per operation of the run to this file: start (Unix ns), latency (ns), op, outcome, attempts")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return cfg, err
	}
	if len(pos) != 0 {
		return cfg, usagef("bench takes 0 argument(s), got %d", len(pos))
	}
	cfg.addr, cfg.opTimeout, cfg.json = opts.addr, opts.timeout, opts.json
	if cfg.workload, err = choice("workload", strings.ToUpper(wl), workloads...); err != nil {
		return cfg, err
	}
	if cfg.dist, err = choice("distribution", dist, uniform, zipfian); err != nil {
		return cfg, err
	}
	if cfg.write, err = choice("write-consistency", write, client.Strong, client.Fast); err != nil {
		return cfg, err
	}
	if cfg.read, err = choice("read-consistency", read, client.Local, client.Quorum); err != nil {
		return cfg, err
	}
	cfg.load = cfg.load || cfg.workload.load
	switch {
	case cfg.opTimeout <= 0:
		return cfg, usagef("--timeout = %v, want > 0", cfg.opTimeout)
	case cfg.clients < 1 || cfg.clients > maxClients:
		return cfg, usagef("--clients = %d, want 1..%d", cfg.clients, maxClients)
	case cfg.duration < 0 || (cfg.duration == 0 && !cfg.load):
		return cfg, usagef("--duration = %v, want > 0 (or 0 with --load to only load)", cfg.duration)
	case cfg.keys < 1:
		return cfg, usagef("--keys = %d, want at least 1", cfg.keys)
	case cfg.loadFrom < 0 || cfg.loadFrom >= cfg.keys || (cfg.loadFrom > 0 && !cfg.load):
		return cfg, usagef("--load-from = %d, want 0..%d (--keys - 1), and --load", cfg.loadFrom, cfg.keys-1)
	case cfg.valueSize < 0 || cfg.valueSize > maxValueSize:
		return cfg, usagef("--value-size = %d, want 0..%d", cfg.valueSize, maxValueSize)
	case !(cfg.rate >= 0 && cfg.rate <= maxRate):
		return cfg, usagef("--rate = %v, want 0 (closed loop) to %g ops/s", cfg.rate, float64(maxRate))
	case cfg.retry < 0:
		return cfg, usagef("--retry = %v, want >= 0", cfg.retry)
	}
	return cfg, nil
}

// choice returns the choice whose name is s, or a usage error naming the
// flag and the accepted values.
func choice[T fmt.Stringer](flagName, s string, choices ...T) (T, error) {
	var names []string
	for _, c := range choices {
		if c.String() == s {
			return c, nil
		}
		names = append(names, c.String())
	}
	var zero T
	dashes := "--"
	if len(flagName) == 1 {
		dashes = "-"
	}
	return zero, usagef("%s%s = %q, want %s", dashes, flagName, s, strings.Join(names, ", "))
}

type opKind int

const (
	opRead opKind = iota
	opUpdate
	numOps
)

func (o opKind) String() string { return [...]string{"read", "update"}[o] }

// job is one operation for a worker. A zero due time means "now" (closed
// loop).
type job struct {
	op  opKind
	key int
	due time.Time
}

// worker is one concurrent sender with its own random source and buffers.
type worker struct {
	c     *client.Client
	rng   *rand.Rand
	zipf  *rand.Zipf // nil for uniform
	key   []byte
	value []byte
}

// nextKey draws a key index. With zipfian, index 0 is the hottest key; the
// ring hashes keys, so hot keys still spread over the partitions without
// YCSB's scrambling.
func (w *worker) nextKey(keys int) int {
	if w.zipf != nil {
		return int(w.zipf.Uint64())
	}
	return w.rng.Intn(keys)
}

func (w *worker) do(ctx context.Context, cfg *benchConfig, j job) error {
	w.key = strconv.AppendInt(append(w.key[:0], keyPrefix...), int64(j.key), 10)
	ctx, cancel := context.WithTimeout(ctx, cfg.opTimeout)
	defer cancel()
	if j.op == opRead {
		_, err := w.c.Get(ctx, w.key, cfg.read)
		return err
	}
	_, err := w.c.Put(ctx, w.key, w.value, cfg.write)
	return err
}

// errorCode names the outcome of a failed operation: its gRPC code, or
// NotFound for client.ErrNotFound.
func errorCode(err error) string {
	if errors.Is(err, client.ErrNotFound) {
		return "NotFound"
	}
	return status.Code(err).String()
}

// retryOp runs do, and with retry > 0 runs it again retryPause after each
// failure that a repeat may cure, until it succeeds or retry has passed since
// the first attempt (or ctx ends). It returns the number of attempts and the
// last error.
func retryOp(ctx context.Context, retry time.Duration, do func() error) (int, error) {
	start := time.Now()
	for attempts := 1; ; attempts++ {
		err := do()
		if err == nil || retry <= 0 || !repeatable(err) || time.Since(start)+retryPause > retry {
			return attempts, err
		}
		if !sleepCtx(ctx, retryPause) {
			return attempts, err
		}
	}
}

// sleepCtx waits d, or until ctx ends; it reports whether d passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// repeatable reports whether sending a failed operation again may succeed:
// not for an absent key or an invalid request.
func repeatable(err error) bool {
	return !errors.Is(err, client.ErrNotFound) && status.Code(err) != codes.InvalidArgument
}

// latencyLog writes a line per operation for --latency-log. A nil
// *latencyLog writes nothing.
type latencyLog struct {
	mu  sync.Mutex
	f   *os.File
	w   *bufio.Writer
	buf []byte
	err error // the first write error
}

// openLatencyLog creates the file name, or returns nil for "".
func openLatencyLog(name string) (*latencyLog, error) {
	if name == "" {
		return nil, nil
	}
	f, err := os.Create(name)
	if err != nil {
		return nil, err
	}
	return &latencyLog{f: f, w: bufio.NewWriterSize(f, 1<<16)}, nil
}

// write logs "START_UNIX_NS LATENCY_NS OP OUTCOME ATTEMPTS".
func (l *latencyLog) write(start time.Time, d time.Duration, op opKind, err error, attempts int) {
	if l == nil {
		return
	}
	outcome := "ok"
	if err != nil {
		outcome = errorCode(err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b := strconv.AppendInt(l.buf[:0], start.UnixNano(), 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(d), 10)
	b = append(append(append(append(append(b, ' '), op.String()...), ' '), outcome...), ' ')
	b = strconv.AppendInt(b, int64(attempts), 10)
	l.buf = append(b, '\n')
	if _, werr := l.w.Write(l.buf); werr != nil && l.err == nil {
		l.err = werr
	}
}

// close flushes and closes the file; it returns the first error, and nil
// when called again.
func (l *latencyLog) close() error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.err
	if ferr := l.w.Flush(); err == nil {
		err = ferr
	}
	if cerr := l.f.Close(); err == nil {
		err = cerr
	}
	l.f = nil
	return err
}

// tally is what one operation type recorded.
type tally struct {
	hist *hdrhistogram.Histogram // latencies of successful operations
	errs map[string]int64        // failures by code
}

func newTally() tally {
	return tally{hdrhistogram.New(histLowest, histHighest, histDigits), map[string]int64{}}
}

func (t tally) failed() int64 {
	var n int64
	for _, c := range t.errs {
		n += c
	}
	return n
}

// recorder collects every worker's outcomes. One mutex is enough: it is
// held for a histogram increment, far less than an operation takes.
type recorder struct {
	mu       sync.Mutex
	interval [numOps]tally // since the last flush
	total    [numOps]tally
	scratch  *hdrhistogram.Histogram // the interval's latencies of all types
}

func newRecorder() *recorder {
	r := &recorder{scratch: hdrhistogram.New(histLowest, histHighest, histDigits)}
	for op := range numOps {
		r.interval[op], r.total[op] = newTally(), newTally()
	}
	return r
}

func (r *recorder) record(op opKind, d time.Duration, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := r.interval[op]
	if err != nil {
		t.errs[errorCode(err)]++
		return
	}
	// Out of range only above histHighest: clamp rather than lose it.
	_ = t.hist.RecordValue(min(int64(d), histHighest))
}

// tick is what the progress line shows.
type tick struct {
	ok, errs       int64 // in this interval
	p99            time.Duration
	totalOK, total int64 // since the start, total counting failures too
	totalErrs      int64
}

// flush moves the interval's outcomes into the totals and summarises them.
func (r *recorder) flush() tick {
	r.mu.Lock()
	defer r.mu.Unlock()
	var tk tick
	r.scratch.Reset()
	for op := range numOps {
		in, tot := r.interval[op], r.total[op]
		tk.ok += in.hist.TotalCount()
		r.scratch.Merge(in.hist)
		tot.hist.Merge(in.hist)
		in.hist.Reset()
		for code, n := range in.errs {
			tk.errs += n
			tot.errs[code] += n
			delete(in.errs, code)
		}
		tk.totalOK += tot.hist.TotalCount()
		tk.totalErrs += tot.failed()
	}
	tk.total = tk.totalOK + tk.totalErrs
	tk.p99 = time.Duration(r.scratch.ValueAtQuantile(99))
	return tk
}

// progress writes a line to w about once a second; on a terminal it
// rewrites one line in place.
type progress struct {
	w   io.Writer
	tty bool
}

func newProgress(w io.Writer) progress {
	f, ok := w.(*os.File)
	if !ok {
		return progress{w: w}
	}
	fi, err := f.Stat()
	return progress{w: w, tty: err == nil && fi.Mode()&os.ModeCharDevice != 0}
}

func (p progress) line(s string) {
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s", s)
		return
	}
	fmt.Fprintln(p.w, s)
}

func (p progress) done() {
	if p.tty {
		fmt.Fprintln(p.w)
	}
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() (user, sys time.Duration) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, 0
	}
	return time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano())
}

// phase is one measured stretch: the load or the run.
type phase struct {
	name string
	// next hands a worker its next job, or false when the phase is over.
	next func(*worker) (job, bool)
	// status is the progress line after elapsed, with tk covering the
	// last dt.
	status func(elapsed, dt time.Duration, tk tick) string
	// missed is called at the end: due operations never started.
	missed func() int64
	// log gets every operation of the phase; nil: none.
	log *latencyLog
}

func (cfg *benchConfig) run(ctx context.Context, stderr io.Writer) (*benchReport, error) {
	dialCtx, cancel := context.WithTimeout(ctx, cfg.opTimeout)
	defer cancel()
	nclients := (cfg.clients + workersPerClient - 1) / workersPerClient
	workers := make([]*worker, cfg.clients)
	for i := range workers {
		if i%workersPerClient == 0 {
			c, err := client.New(dialCtx, []string{cfg.addr})
			if err != nil {
				return nil, err
			}
			defer c.Close()
			workers[i] = &worker{c: c}
		} else {
			workers[i] = &worker{c: workers[i-i%workersPerClient].c}
		}
		w := workers[i]
		// Fixed seeds: two runs with the same flags send the same keys.
		w.rng = rand.New(rand.NewSource(int64(i) + 1))
		if cfg.dist == zipfian {
			w.zipf = rand.NewZipf(w.rng, zipfS, 1, uint64(cfg.keys-1))
		}
		w.value = make([]byte, cfg.valueSize)
		w.rng.Read(w.value)
	}
	rep := &benchReport{
		Workload:         cfg.workload.name,
		Mix:              cfg.workload.desc,
		Clients:          cfg.clients,
		Connections:      nclients,
		Keys:             cfg.keys,
		ValueSize:        cfg.valueSize,
		Distribution:     cfg.dist.String(),
		WriteConsistency: cfg.write.String(),
		ReadConsistency:  cfg.read.String(),
		Rate:             cfg.rate,
		NumCPU:           runtime.NumCPU(),
	}
	log, err := openLatencyLog(cfg.latencyLog)
	if err != nil {
		return nil, err
	}
	defer log.close()
	prog := newProgress(stderr)
	if cfg.load {
		rep.Load = runPhase(ctx, cfg, workers, prog, cfg.loadPhase(ctx))
	}
	if cfg.duration > 0 && ctx.Err() == nil {
		ph := cfg.runPhase(ctx)
		ph.log = log
		rep.Run = runPhase(ctx, cfg, workers, prog, ph)
	}
	if err := log.close(); err != nil {
		return nil, err
	}
	return rep, nil
}

// loadPhase writes keys loadFrom..keys-1 once each, in order.
func (cfg *benchConfig) loadPhase(ctx context.Context) phase {
	var nextKey atomic.Int64
	nextKey.Store(int64(cfg.loadFrom))
	n := cfg.keys - cfg.loadFrom
	return phase{
		name: "load",
		next: func(*worker) (job, bool) {
			k := nextKey.Add(1) - 1
			return job{op: opUpdate, key: int(k)}, k < int64(cfg.keys) && ctx.Err() == nil
		},
		status: func(elapsed, _ time.Duration, tk tick) string {
			const width = 30
			done := float64(tk.total) / float64(n)
			bar := strings.Repeat("#", int(done*width)) + strings.Repeat(".", width-int(done*width))
			return fmt.Sprintf("load [%s] %3.0f%%  %d/%d keys  %.0f keys/s  errors %d",
				bar, 100*done, tk.total, n, float64(tk.totalOK)/elapsed.Seconds(), tk.totalErrs)
		},
		missed: func() int64 { return 0 },
	}
}

// runPhase draws operations of the workload for cfg.duration, closed loop
// or at cfg.rate.
func (cfg *benchConfig) runPhase(ctx context.Context) phase {
	start := time.Now()
	deadline := start.Add(cfg.duration)
	pick := func(w *worker) job {
		op := opUpdate
		if w.rng.Float64() < cfg.workload.readFrac {
			op = opRead
		}
		return job{op: op, key: w.nextKey(cfg.keys)}
	}
	p := phase{
		name: "run",
		status: func(elapsed, dt time.Duration, tk tick) string {
			return fmt.Sprintf("run %5.1fs  %8.0f ops/s  p99 %s  errors %d",
				elapsed.Seconds(), float64(tk.ok)/dt.Seconds(), fmtLatency(float64(tk.p99)), tk.totalErrs)
		},
		missed: func() int64 { return 0 },
	}
	if cfg.rate == 0 {
		p.next = func(w *worker) (job, bool) {
			return pick(w), ctx.Err() == nil && time.Now().Before(deadline)
		}
		return p
	}
	interval := float64(time.Second) / cfg.rate
	due := int64(cfg.duration.Seconds() * cfg.rate)
	var slots, started atomic.Int64
	p.next = func(w *worker) (job, bool) {
		slot := slots.Add(1) - 1
		j := pick(w)
		j.due = start.Add(time.Duration(float64(slot) * interval))
		if slot >= due || ctx.Err() != nil {
			return j, false
		}
		// Wait for the due time, but not past the end of the run.
		if wait := time.Until(j.due); wait > 0 && !sleepCtx(ctx, wait) {
			return j, false
		}
		if !time.Now().Before(deadline) {
			return j, false
		}
		started.Add(1)
		return j, true
	}
	p.missed = func() int64 { return due - started.Load() }
	return p
}

// runPhase runs every worker through ph and reports it.
func runPhase(ctx context.Context, cfg *benchConfig, workers []*worker, prog progress, ph phase) *phaseReport {
	rec := newRecorder()
	user0, sys0 := cpuTime()
	start := time.Now()
	// Operations in flight when ctx ends (Ctrl-C) finish within their
	// timeout instead of being counted as Canceled.
	opCtx := context.WithoutCancel(ctx)
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Go(func() {
			for {
				j, ok := ph.next(w)
				if !ok {
					return
				}
				begin := j.due
				if begin.IsZero() {
					begin = time.Now()
				}
				attempts, err := retryOp(ctx, cfg.retry, func() error { return w.do(opCtx, cfg, j) })
				d := time.Since(begin)
				rec.record(j.op, d, err)
				ph.log.write(begin, d, j.op, err, attempts)
			}
		})
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()
	last := start
	for running := true; running; {
		select {
		case <-ticker.C:
		case <-finished:
			running = false
		}
		now := time.Now()
		prog.line(ph.status(now.Sub(start), now.Sub(last), rec.flush()))
		last = now
	}
	prog.done()
	elapsed := time.Since(start)
	user1, sys1 := cpuTime()
	return newPhaseReport(rec, elapsed, user1-user0, sys1-sys0, ph.missed())
}

// benchReport is the outcome of "kvctl bench", printed by --json.
type benchReport struct {
	Workload         string  `json:"workload"`
	Mix              string  `json:"mix"`
	Clients          int     `json:"clients"`
	Connections      int     `json:"connections"` // client.Clients, each one connection per node
	Keys             int     `json:"keys"`
	ValueSize        int     `json:"value_size"`
	Distribution     string  `json:"distribution"`
	WriteConsistency string  `json:"write_consistency"`
	ReadConsistency  string  `json:"read_consistency"`
	Rate             float64 `json:"rate"` // target ops/s; 0 is closed loop
	NumCPU           int     `json:"num_cpu"`
	// Load is the load phase, if there was one; Run the measured run, if
	// --duration was not 0.
	Load *phaseReport `json:"load,omitempty"`
	Run  *phaseReport `json:"run,omitempty"`
}

type phaseReport struct {
	Seconds float64 `json:"seconds"`
	// Ops = OK + Errors: operations that completed.
	Ops    int64 `json:"ops"`
	OK     int64 `json:"ok"`
	Errors int64 `json:"errors"`
	// Throughput is successful operations per second.
	Throughput float64 `json:"throughput"`
	// Missed counts operations due before the end of an open-loop run that
	// no worker could start: the rate was not kept.
	Missed     int64      `json:"missed"`
	Operations []opReport `json:"operations"`
	// ClientCPU is this process's CPU use during the phase.
	ClientCPU cpuReport `json:"client_cpu"`
}

type opReport struct {
	Op         string           `json:"op"`
	Ops        int64            `json:"ops"` // OK + sum of Errors
	OK         int64            `json:"ok"`
	Errors     map[string]int64 `json:"errors"` // by gRPC code
	Throughput float64          `json:"throughput"`
	// LatencyUS are percentiles of successful operations, in µs.
	LatencyUS latencyReport `json:"latency_us"`
}

type latencyReport struct {
	P50  float64 `json:"p50"`
	P95  float64 `json:"p95"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p99_9"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

type cpuReport struct {
	UserSeconds float64 `json:"user_seconds"`
	SysSeconds  float64 `json:"sys_seconds"`
	// Cores is (user + sys) / wall time: 1 is one core busy.
	Cores float64 `json:"cores"`
}

func newPhaseReport(rec *recorder, elapsed, user, sys time.Duration, missed int64) *phaseReport {
	rec.flush()
	secs := elapsed.Seconds()
	pr := &phaseReport{
		Seconds: secs,
		Missed:  max(missed, 0),
		ClientCPU: cpuReport{
			UserSeconds: user.Seconds(),
			SysSeconds:  sys.Seconds(),
			Cores:       (user + sys).Seconds() / secs,
		},
	}
	us := func(ns int64) float64 { return float64(ns) / float64(time.Microsecond) }
	for op := range numOps {
		t := rec.total[op]
		o := opReport{Op: op.String(), OK: t.hist.TotalCount(), Errors: t.errs}
		o.Ops = o.OK + t.failed()
		if o.Ops == 0 {
			continue
		}
		o.Throughput = float64(o.OK) / secs
		o.LatencyUS = latencyReport{
			P50:  us(t.hist.ValueAtQuantile(50)),
			P95:  us(t.hist.ValueAtQuantile(95)),
			P99:  us(t.hist.ValueAtQuantile(99)),
			P999: us(t.hist.ValueAtQuantile(99.9)),
			Max:  us(t.hist.Max()),
			Mean: t.hist.Mean() / float64(time.Microsecond),
		}
		pr.Ops += o.Ops
		pr.OK += o.OK
		pr.Errors += o.Ops - o.OK
		pr.Operations = append(pr.Operations, o)
	}
	pr.Throughput = float64(pr.OK) / secs
	return pr
}

// fmtLatency prints ns with three significant digits and a unit.
func fmtLatency(ns float64) string {
	switch {
	case ns < 1e6:
		return strconv.FormatFloat(ns/1e3, 'f', 0, 64) + "µs"
	case ns < 1e9:
		return strconv.FormatFloat(ns/1e6, 'f', 2, 64) + "ms"
	}
	return strconv.FormatFloat(ns/1e9, 'f', 2, 64) + "s"
}

func printBench(w io.Writer, rep *benchReport) error {
	loop := "closed loop"
	if rep.Rate > 0 {
		loop = fmt.Sprintf("open loop at %g ops/s", rep.Rate)
	}
	fmt.Fprintf(w, "workload %s (%s), %d clients over %d connections per node, %d keys, %d-byte values, %s, %s writes, %s reads, %s\n",
		rep.Workload, rep.Mix, rep.Clients, rep.Connections, rep.Keys, rep.ValueSize,
		rep.Distribution, rep.WriteConsistency, rep.ReadConsistency, loop)
	for _, p := range []struct {
		name string
		r    *phaseReport
	}{{"load", rep.Load}, {"run", rep.Run}} {
		if p.r == nil {
			continue
		}
		fmt.Fprintf(w, "\n%s: %.1f s, %d ops, %.0f ops/s, %d errors, client CPU %.2f cores of %d",
			p.name, p.r.Seconds, p.r.Ops, p.r.Throughput, p.r.Errors, p.r.ClientCPU.Cores, rep.NumCPU)
		if p.r.Missed > 0 {
			fmt.Fprintf(w, ", RATE NOT KEPT: %d due ops never started", p.r.Missed)
		}
		fmt.Fprintln(w)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprint(tw, "OP\tOPS/S\tOK\tP50\tP95\tP99\tP99.9\tMAX\tERRORS\t\n")
		for _, o := range p.r.Operations {
			l := o.LatencyUS
			fmt.Fprintf(tw, "%s\t%.0f\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t\n", o.Op, o.Throughput, o.OK,
				fmtLatency(l.P50*1e3), fmtLatency(l.P95*1e3), fmtLatency(l.P99*1e3),
				fmtLatency(l.P999*1e3), fmtLatency(l.Max*1e3), fmtErrors(o.Errors))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return nil
}

// fmtErrors prints counts by code, most frequent first: "Unavailable=3".
func fmtErrors(errs map[string]int64) string {
	if len(errs) == 0 {
		return "0"
	}
	codes := make([]string, 0, len(errs))
	for c := range errs {
		codes = append(codes, c)
	}
	sort.Slice(codes, func(i, j int) bool {
		if errs[codes[i]] != errs[codes[j]] {
			return errs[codes[i]] > errs[codes[j]]
		}
		return codes[i] < codes[j]
	})
	parts := make([]string, len(codes))
	for i, c := range codes {
		parts[i] = c + "=" + strconv.FormatInt(errs[c], 10)
	}
	return strings.Join(parts, " ")
}
