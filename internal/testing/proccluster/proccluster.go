// Package proccluster runs a cluster of real kvnode processes on loopback
// for tests that kill, pause and restart them. Every process listens on a
// free 127.0.0.1 port, is bounded by the test, and is killed when it ends.
package proccluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/ringkv/ringkv/internal/testing/wait"
	pb "github.com/ringkv/ringkv/proto/ringkvpb"
)

// Build compiles kvnode into dir (with the given build tags) and returns the
// binary's path.
func Build(dir string, tags ...string) (string, error) {
	bin := filepath.Join(dir, "kvnode")
	args := []string{"build", "-o", bin}
	if len(tags) > 0 {
		args = append(args, "-tags", strings.Join(tags, ","))
	}
	cmd := exec.Command("go", append(args, "github.com/ringkv/ringkv/cmd/kvnode")...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("build kvnode: %w", err)
	}
	return bin, nil
}

// Proc is one kvnode process.
type Proc struct {
	ID, Addr, Dir string
	Args          []string
	Conn          *grpc.ClientConn

	mu       sync.Mutex
	cmd      *exec.Cmd
	done     chan struct{}
	exitCode int // of the last run, once done is closed
	// watch sees every stderr line of the process.
	watch func(line string)
}

// Cluster is a set of kvnode processes.
type Cluster struct {
	t          testing.TB
	bin        string
	opts       Options
	Procs      []*Proc
	Partitions int
}

// Options configure a cluster.
type Options struct {
	Nodes      int      // default 3
	Partitions int      // default 8
	Args       []string // extra kvnode flags for every node
	// Watch, if set, sees every stderr line of every process; otherwise
	// lines go to the test log.
	Watch func(id, line string)
}

// Start starts the cluster and waits until every partition has a primary.
func Start(t testing.TB, bin string, opts Options) *Cluster {
	t.Helper()
	if opts.Nodes == 0 {
		opts.Nodes = 3
	}
	if opts.Partitions == 0 {
		opts.Partitions = 8
	}
	c := &Cluster{t: t, bin: bin, opts: opts, Partitions: opts.Partitions}
	// Registered before any process starts, so that a Fatal while starting
	// the others still kills those already running.
	t.Cleanup(func() {
		for _, p := range c.Procs {
			c.Kill(p)
			p.Conn.Close()
		}
	})
	var peers []string
	for i := range opts.Nodes {
		p := c.newProc(i + 1)
		peers = append(peers, p.ID+"="+p.Addr)
	}
	for _, p := range c.Procs {
		p.Args = append(p.Args, "--peers", strings.Join(peers, ","))
		c.Start(p)
	}
	c.WaitPrimaries(nil)
	return c
}

// newProc prepares node n<i> on a free port, without starting it.
func (c *Cluster) newProc(i int) *Proc {
	p := &Proc{ID: fmt.Sprintf("n%d", i), Addr: freeAddr(c.t), Dir: filepath.Join(c.t.TempDir(), "data")}
	// Cleanups run last registered first: this one, registered after the
	// directory's, kills the process before the directory is removed,
	// which a process still writing to it would make fail.
	c.t.Cleanup(func() { c.Kill(p) })
	p.Args = append([]string{"--id", p.ID, "--listen", p.Addr, "--data-dir", p.Dir,
		"--partitions", fmt.Sprint(c.opts.Partitions), "--log-level", "warn",
		"--heartbeat-timeout", "300ms", "--election-timeout", "300ms", "--leader-lease", "300ms"}, c.opts.Args...)
	if c.opts.Watch != nil {
		p.watch = func(line string) { c.opts.Watch(p.ID, line) }
	}
	conn, err := grpc.NewClient(p.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		c.t.Fatal(err)
	}
	p.Conn = conn
	c.Procs = append(c.Procs, p)
	return p
}

// AddProc starts a node with no --peers: it belongs to no cluster and waits
// until Admin.Join adds it. It returns once the node answers Status. The
// test's cleanup kills it.
func (c *Cluster) AddProc() *Proc {
	c.t.Helper()
	p := c.newProc(len(c.Procs) + 1)
	c.Start(p)
	wait.Until(c.t, 30*time.Second, p.ID+" answering", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := pb.NewAdminClient(p.Conn).Status(ctx, &pb.StatusRequest{})
		return err == nil
	})
	return p
}

// WaitExit waits up to d for p's process to end by itself and returns its
// exit status; ok is false if it still runs.
func (c *Cluster) WaitExit(p *Proc, d time.Duration) (code int, ok bool) {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	select {
	case <-done:
		p.mu.Lock()
		defer p.mu.Unlock()
		p.cmd = nil
		return p.exitCode, true
	case <-time.After(d):
		return 0, false
	}
}

// handedOut holds every address freeAddr returned in this process: the
// kernel may give a port that was just closed to the next listener, and two
// nodes must never be handed the same one.
var (
	handedOutMu sync.Mutex
	handedOut   = map[string]bool{}
)

func freeAddr(t testing.TB) string {
	handedOutMu.Lock()
	defer handedOutMu.Unlock()
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		if !handedOut[addr] {
			handedOut[addr] = true
			return addr
		}
	}
}

// Start (re)starts p with its arguments.
func (c *Cluster) Start(p *Proc) {
	p.mu.Lock()
	defer p.mu.Unlock()
	cmd := exec.Command(c.bin, p.Args...)
	cmd.Stderr = &lineWriter{fn: func(line string) {
		if p.watch != nil {
			p.watch(line)
		} else {
			c.t.Logf("[%s] %s", p.ID, line)
		}
	}}
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		// Read only after done is closed, which orders this write first
		// (Kill holds mu while it waits for done).
		p.exitCode = cmd.ProcessState.ExitCode()
		close(done)
	}()
	p.cmd, p.done = cmd, done
}

// Running reports whether p's process is up (it may be paused).
func (p *Proc) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil
}

// Kill sends SIGKILL (after SIGCONT, in case it is paused) and waits.
func (c *Cluster) Kill(p *Proc) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGCONT)
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	p.cmd = nil
}

// Stop sends SIGTERM and waits up to 30 s for a clean exit, then kills.
func (c *Cluster) Stop(p *Proc) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		c.t.Errorf("%s did not stop on SIGTERM within 30s", p.ID)
	}
	c.Kill(p)
}

// Signal sends sig to p if it runs (SIGSTOP and SIGCONT pause and resume it).
func (c *Cluster) Signal(p *Proc, sig syscall.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		p.cmd.Process.Signal(sig)
	}
}

// Addrs lists every node's address, for a client's seeds.
func (c *Cluster) Addrs() []string {
	var addrs []string
	for _, p := range c.Procs {
		addrs = append(addrs, p.Addr)
	}
	return addrs
}

// KV is a KV client for p.
func (p *Proc) KV() pb.KVClient { return pb.NewKVClient(p.Conn) }

// Status returns every running node's Status, skipping skip and nodes that
// do not answer within a second.
func (c *Cluster) Status(skip *Proc) map[string]*pb.StatusResponse {
	out := map[string]*pb.StatusResponse{}
	for _, p := range c.Procs {
		if p == skip || !p.Running() {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		st, err := pb.NewAdminClient(p.Conn).Status(ctx, &pb.StatusRequest{})
		cancel()
		if err == nil {
			out[p.ID] = st
		}
	}
	return out
}

// Map returns the cluster map of highest epoch among the running nodes
// that answer within a second, or nil if none does.
func (c *Cluster) Map() *pb.ClusterMapResponse {
	var best *pb.ClusterMapResponse
	for _, p := range c.Procs {
		if !p.Running() {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		m, err := pb.NewAdminClient(p.Conn).ClusterMap(ctx, &pb.ClusterMapRequest{})
		cancel()
		if err == nil && (best == nil || m.GetEpoch() > best.GetEpoch()) {
			best = m
		}
	}
	return best
}

// PartitionCount is the partition count of the latest map (Map), which
// splits grow; the count the cluster was created with if no node answers.
func (c *Cluster) PartitionCount() int {
	if m := c.Map(); m != nil {
		return int(m.GetPartitions())
	}
	return c.Partitions
}

// Split asks a running node to have the cluster split towards n
// partitions (Admin.Split); the splits go on after it returns.
func (c *Cluster) Split(n int) error {
	var err error = errors.New("no running node")
	for _, p := range c.Procs {
		if !p.Running() {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err = pb.NewAdminClient(p.Conn).Split(ctx, &pb.SplitRequest{Partitions: uint32(n)})
		cancel()
		if err == nil {
			return nil
		}
	}
	return err
}

// Leaders maps each partition to the node that reports leading it.
func (c *Cluster) Leaders(skip *Proc) map[uint32]string {
	leaders := map[uint32]string{}
	for id, st := range c.Status(skip) {
		for _, ps := range st.Partitions {
			if ps.State == pb.RaftState_RAFT_STATE_LEADER {
				leaders[ps.Partition] = id
			}
		}
	}
	return leaders
}

// WaitPrimaries waits up to a minute until every partition has a leader
// among the running nodes other than skip.
func (c *Cluster) WaitPrimaries(skip *Proc) {
	c.t.Helper()
	wait.Until(c.t, time.Minute, "a primary for every partition", func() bool {
		return len(c.Leaders(skip)) >= c.PartitionCount()
	})
}

// WaitSameApplied waits up to d until every running node answers Status
// and, for every partition, at least min(3, running nodes) replicas report
// one applied index; it returns that index per partition. Writes must have
// stopped, or the indexes may never meet.
func (c *Cluster) WaitSameApplied(d time.Duration) map[uint32]uint64 {
	c.t.Helper()
	var applied map[uint32]uint64
	wait.For(c.t, d, "every partition's replicas at one applied index", func() (bool, string) {
		running := 0
		for _, p := range c.Procs {
			if p.Running() {
				running++
			}
		}
		sts := c.Status(nil)
		if len(sts) < running {
			return false, fmt.Sprintf("%d of %d running nodes answer Status", len(sts), running)
		}
		byPart := map[uint32][]uint64{}
		for _, st := range sts {
			for _, ps := range st.Partitions {
				byPart[ps.Partition] = append(byPart[ps.Partition], ps.AppliedIndex)
			}
		}
		applied = map[uint32]uint64{}
		for part := range uint32(c.PartitionCount()) {
			idx := byPart[part]
			if len(idx) < min(3, running) || slices.Min(idx) != slices.Max(idx) {
				return false, fmt.Sprintf("partition %d: applied indexes %v", part, idx)
			}
			applied[part] = idx[0]
		}
		return true, ""
	})
	return applied
}

// WaitCaughtUp waits up to d until each of p's replicas has applied the
// commit index its partition's leader reported when the wait began (or
// when the partition first had a leader since). A restarted node answers
// Status before it has opened every replica: in a cluster of up to three
// nodes, each of which hosts every partition, the wait also covers
// replicas p does not report yet; in a larger one, only those it reports.
func (c *Cluster) WaitCaughtUp(p *Proc, d time.Duration) {
	c.t.Helper()
	target := map[uint32]uint64{}
	wait.For(c.t, d, p.ID+" caught up with its leaders", func() (bool, string) {
		sts := c.Status(nil)
		mine, ok := sts[p.ID]
		if !ok {
			return false, p.ID + " does not answer Status"
		}
		if n := len(mine.Partitions); n == 0 || len(c.Procs) <= 3 && n < c.Partitions {
			return false, fmt.Sprintf("%s reports %d of %d partitions", p.ID, n, c.Partitions)
		}
		for _, st := range sts {
			for _, ps := range st.Partitions {
				if _, seen := target[ps.Partition]; !seen && ps.State == pb.RaftState_RAFT_STATE_LEADER {
					target[ps.Partition] = ps.CommitIndex
				}
			}
		}
		for _, ps := range mine.Partitions {
			want, seen := target[ps.Partition]
			if !seen {
				return false, fmt.Sprintf("partition %d has no leader", ps.Partition)
			}
			if ps.AppliedIndex < want {
				return false, fmt.Sprintf("partition %d applied %d of %d", ps.Partition, ps.AppliedIndex, want)
			}
		}
		return true, ""
	})
}

// ByID returns the process with the given id.
func (c *Cluster) ByID(id string) *Proc {
	for _, p := range c.Procs {
		if p.ID == id {
			return p
		}
	}
	c.t.Fatalf("no node %s", id)
	return nil
}

// lineWriter calls fn with each complete line written to it.
type lineWriter struct {
	mu  sync.Mutex
	buf []byte
	fn  func(string)
}

func (w *lineWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, b...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			return len(b), nil
		}
		w.fn(string(w.buf[:i]))
		w.buf = w.buf[i+1:]
	}
}
