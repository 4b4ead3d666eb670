// Package e2e runs real kvnode processes on loopback and breaks them:
// kill -9, restarts, catch-up.
package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	pb "github.com/ringkv/ringkv/proto/ringkvpb"
)

var kvnodeBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ringkv-e2e")
	if err != nil {
		panic(err)
	}
	kvnodeBin = filepath.Join(dir, "kvnode")
	build := exec.Command("go", "build", "-o", kvnodeBin, "github.com/ringkv/ringkv/cmd/kvnode")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build kvnode:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is one kvnode process.
type proc struct {
	id, addr, dir string
	args          []string
	cmd           *exec.Cmd
	done          chan struct{}
	conn          *grpc.ClientConn
	installed     atomic.Int64
}

type cluster struct {
	t     *testing.T
	procs []*proc
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startCluster starts three kvnodes with extra flags; they are killed when
// the test ends.
func startCluster(t *testing.T, extra ...string) *cluster {
	c := &cluster{t: t}
	var peers []string
	for i := range 3 {
		p := &proc{id: fmt.Sprintf("n%d", i+1), addr: freeAddr(t), dir: filepath.Join(t.TempDir(), "data")}
		peers = append(peers, p.id+"="+p.addr)
		c.procs = append(c.procs, p)
	}
	for _, p := range c.procs {
		p.args = append([]string{"--id", p.id, "--listen", p.addr, "--data-dir", p.dir,
			"--peers", strings.Join(peers, ","), "--partitions", "8", "--log-level", "warn",
			"--heartbeat-timeout", "300ms", "--election-timeout", "300ms", "--leader-lease", "300ms"}, extra...)
		conn, err := grpc.NewClient(p.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		p.conn = conn
		c.start(p)
	}
	t.Cleanup(func() {
		for _, p := range c.procs {
			c.kill(p)
			p.conn.Close()
		}
	})
	c.waitPrimaries(nil)
	return c
}

func (c *cluster) start(p *proc) {
	p.cmd = exec.Command(kvnodeBin, p.args...)
	p.cmd.Stderr = &prefixWriter{t: c.t, prefix: p.id, installed: &p.installed}
	if err := p.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	p.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) {
		cmd.Wait()
		close(done)
	}(p.cmd, p.done)
}

func (c *cluster) kill(p *proc) {
	if p.cmd == nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	p.cmd = nil
}

func (c *cluster) stop(p *proc) {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		c.t.Errorf("%s did not stop on SIGTERM within 30s", p.id)
	}
	c.kill(p)
}

type prefixWriter struct {
	t         *testing.T
	prefix    string
	installed *atomic.Int64 // counts "Installed remote snapshot" lines
}

func (w *prefixWriter) Write(b []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		if strings.Contains(line, "Installed remote snapshot") {
			w.installed.Add(1)
			continue
		}
		w.t.Logf("[%s] %s", w.prefix, line)
	}
	return len(b), nil
}

func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// status returns every running node's Status.
func (c *cluster) status(skip *proc) map[string]*pb.StatusResponse {
	out := map[string]*pb.StatusResponse{}
	for _, p := range c.procs {
		if p == skip || p.cmd == nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		st, err := pb.NewAdminClient(p.conn).Status(ctx, &pb.StatusRequest{})
		cancel()
		if err == nil {
			out[p.id] = st
		}
	}
	return out
}

// waitPrimaries waits until every partition has a leader among the running
// nodes (other than skip).
func (c *cluster) waitPrimaries(skip *proc) {
	c.t.Helper()
	eventually(c.t, 60*time.Second, "a primary for every partition", func() bool {
		leaders := map[uint32]bool{}
		for _, st := range c.status(skip) {
			for _, ps := range st.Partitions {
				if ps.State == pb.RaftState_RAFT_STATE_LEADER {
					leaders[ps.Partition] = true
				}
			}
		}
		return len(leaders) == 8
	})
}

func (c *cluster) kv(p *proc) pb.KVClient { return pb.NewKVClient(p.conn) }

func (c *cluster) byID(id string) *proc {
	for _, p := range c.procs {
		if p.id == id {
			return p
		}
	}
	c.t.Fatalf("no node %s", id)
	return nil
}

// TestKill9PrimaryUnderStrongWrites kills the primary of a partition with
// SIGKILL while clients write; every acknowledged strong write must be
// readable afterwards with a quorum read.
func TestKill9PrimaryUnderStrongWrites(t *testing.T) {
	c := startCluster(t)
	st := c.status(nil)["n1"]
	var victim *proc
	var part uint32
	for _, ps := range st.Partitions {
		if ps.LeaderId != "" {
			victim, part = c.byID(ps.LeaderId), ps.Partition
			break
		}
	}
	survivors := []*proc{}
	for _, p := range c.procs {
		if p != victim {
			survivors = append(survivors, p)
		}
	}

	var mu sync.Mutex
	acked := map[string]string{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				key, val := fmt.Sprintf("w%d-%d", w, i), fmt.Sprintf("v%d", rand.Int())
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, err := c.kv(survivors[i%2]).Put(ctx, &pb.PutRequest{Key: []byte(key), Value: []byte(val)})
				cancel()
				if err == nil {
					mu.Lock()
					acked[key] = val
					mu.Unlock()
				}
			}
		}()
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
	eventually(t, 30*time.Second, "writes before the kill", func() bool { return count() > 200 })

	killedAt := time.Now()
	c.kill(victim)
	var failover time.Duration
	eventually(t, 30*time.Second, "a new primary for partition of the victim", func() bool {
		for _, st := range c.status(victim) {
			for _, ps := range st.Partitions {
				if ps.Partition == part && ps.State == pb.RaftState_RAFT_STATE_LEADER {
					failover = time.Since(killedAt)
					return true
				}
			}
		}
		return false
	})
	t.Logf("partition %d: new primary %v after kill -9 of %s", part, failover, victim.id)
	before := count()
	eventually(t, 30*time.Second, "writes after the kill", func() bool { return count() > before+200 })
	close(stop)
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	lost := 0
	for key, val := range acked {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		got, err := c.kv(survivors[0]).Get(ctx, &pb.GetRequest{Key: []byte(key), Consistency: pb.ReadConsistency_READ_CONSISTENCY_QUORUM})
		cancel()
		if err != nil || string(got.Value) != val {
			lost++
			if lost < 5 {
				t.Errorf("acknowledged %s=%s: read %v %v", key, val, got, err)
			}
		}
	}
	t.Logf("%d acknowledged strong writes checked, %d lost", len(acked), lost)
	if lost > 0 {
		t.Fatalf("%d acknowledged strong writes lost", lost)
	}
}

// TestRestartedNodeCatchesUp stops a node, writes 10 000 keys, restarts it:
// with a compacted log it catches up through snapshot install, and every
// partition's replicas end at the same applied index.
func TestRestartedNodeCatchesUp(t *testing.T) {
	c := startCluster(t, "--snapshot-threshold", "256", "--trailing-logs", "64", "--snapshot-interval", "200ms")
	down := c.procs[2]
	c.stop(down)
	c.waitPrimaries(down)

	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < 10000; i += 16 {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				_, err := c.kv(c.procs[i%2]).Put(ctx, &pb.PutRequest{Key: []byte(fmt.Sprintf("key%05d", i)), Value: []byte("v")})
				cancel()
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("write with one node down: %v", err)
	}

	// At info level the restarted node logs each snapshot it installs.
	down.args = append(down.args, "--log-level", "info")
	restarted := time.Now()
	c.start(down)
	eventually(t, 90*time.Second, "every partition's replicas at the same applied index", func() bool {
		sts := c.status(nil)
		if len(sts) != 3 {
			return false
		}
		for part := range uint32(8) {
			var idx []uint64
			for _, st := range sts {
				for _, ps := range st.Partitions {
					if ps.Partition == part {
						idx = append(idx, ps.AppliedIndex)
					}
				}
			}
			if len(idx) != 3 || idx[0] != idx[1] || idx[1] != idx[2] || idx[0] < 10000/8/2 {
				return false
			}
		}
		return true
	})
	t.Logf("restarted node caught up in %v", time.Since(restarted))
	// The leaders compacted their logs far past what the stopped node had,
	// so it can only have caught up by installing their snapshots.
	if n := down.installed.Load(); n == 0 {
		t.Fatalf("restarted node installed no snapshot")
	} else {
		t.Logf("restarted node installed %d snapshots", n)
	}
	for _, key := range []string{"key00000", "key05000", "key09999"} {
		got, err := c.kv(down).Get(context.Background(), &pb.GetRequest{Key: []byte(key), Consistency: pb.ReadConsistency_READ_CONSISTENCY_QUORUM})
		if err != nil || string(got.Value) != "v" {
			t.Fatalf("%s through restarted node: %v %v", key, got, err)
		}
	}
	if _, err := c.kv(down).Get(context.Background(), &pb.GetRequest{Key: []byte("absent")}); status.Code(err) != codes.NotFound {
		t.Fatalf("absent key: %v", err)
	}
}
