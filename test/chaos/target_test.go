package chaos

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/ringkv/ringkv/internal/testing/proccluster"
	"github.com/ringkv/ringkv/internal/testing/wait"
	pb "github.com/ringkv/ringkv/proto/ringkvpb"
	"github.com/ringkv/ringkv/ring"
)

// target is what a campaign runs against, nodes numbered from 0: kvnode
// processes on loopback, or the docker compose cluster.
type target interface {
	Size() int
	// Ring is the cluster's ring as its latest map has it: splits grow it.
	Ring() *ring.Ring
	Partitions() int
	// Split asks the cluster to split towards n partitions; false if the
	// target cannot.
	Split(n int) bool
	KV(i int) pb.KVClient
	// Up reports whether node i runs (it may be paused).
	Up(i int) bool
	Kill(i int)
	Start(i int)
	Pause(i int)
	Resume(i int)
	// Cut makes each node unable to reach the nodes listed for it; nil
	// heals. It reports false for a shape the target cannot make.
	Cut(t *testing.T, cut map[int][]int) bool
	// Leaders maps each partition to the node that reports leading it.
	Leaders() map[uint32]int
	WaitPrimaries()
}

// procTarget is kvnode processes built with -tags chaos; network faults go
// through the nodes' Chaos service.
type procTarget struct{ c *proccluster.Cluster }

func (p procTarget) Size() int        { return len(p.c.Procs) }
func (p procTarget) Partitions() int  { return p.Ring().Partitions() }
func (p procTarget) Split(n int) bool { return p.c.Split(n) == nil }

func (p procTarget) Ring() *ring.Ring {
	initial, n := p.c.Partitions, p.c.Partitions
	if m := p.c.Map(); m != nil {
		initial, n = int(m.GetInitialPartitions()), int(m.GetPartitions())
	}
	r, err := ring.Grown(initial, n)
	if err != nil {
		panic(err)
	}
	return r
}
func (p procTarget) KV(i int) pb.KVClient { return p.c.Procs[i].KV() }
func (p procTarget) Up(i int) bool        { return p.c.Procs[i].Running() }
func (p procTarget) Kill(i int)           { p.c.Kill(p.c.Procs[i]) }
func (p procTarget) Start(i int)          { p.c.Start(p.c.Procs[i]) }
func (p procTarget) Pause(i int)          { p.c.Signal(p.c.Procs[i], syscall.SIGSTOP) }
func (p procTarget) Resume(i int)         { p.c.Signal(p.c.Procs[i], syscall.SIGCONT) }
func (p procTarget) WaitPrimaries()       { p.c.WaitPrimaries(nil) }

// Addrs lists the nodes' addresses, for the Go client.
func (p procTarget) Addrs() []string { return p.c.Addrs() }

func (p procTarget) Leaders() map[uint32]int {
	out := map[uint32]int{}
	for part, id := range p.c.Leaders(nil) {
		for i, q := range p.c.Procs {
			if q.ID == id {
				out[part] = i
			}
		}
	}
	return out
}

func (p procTarget) Cut(t *testing.T, cut map[int][]int) bool {
	for i, q := range p.c.Procs {
		if !q.Running() {
			continue
		}
		req := &pb.PartitionRequest{}
		for _, j := range cut[i] {
			req.BlockedAddrs = append(req.BlockedAddrs, p.c.Procs[j].Addr)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := pb.NewChaosClient(q.Conn).Partition(ctx, req)
		cancel()
		if err != nil && status.Code(err) != codes.Unavailable {
			t.Errorf("partition %s: %v", q.ID, err)
		}
	}
	return true
}

// dockerTarget is deploy/docker-compose.yml under a project of its own:
// docker kill/start, pause/unpause, and network disconnect/connect (which
// can only cut one node off from all the others).
type dockerTarget struct {
	t       *testing.T
	compose []string
	project string
	ids     []string // container ids of n1..n3
	conns   []*grpc.ClientConn
	mu      sync.Mutex
	up      []bool
	cutOff  map[int]bool
	paused  map[int]bool
	parts   int
}

func composeCommand() ([]string, error) {
	if exec.Command("docker", "compose", "version").Run() == nil {
		return []string{"docker", "compose"}, nil
	}
	if _, err := exec.LookPath("docker-compose"); err == nil {
		return []string{"docker-compose"}, nil
	}
	return nil, fmt.Errorf("neither 'docker compose' nor 'docker-compose' is installed")
}

func startDocker(t *testing.T) *dockerTarget {
	if err := exec.Command("docker", "info").Run(); err != nil {
		t.Skipf("-chaos.docker: no Docker engine answers: %v", err)
	}
	compose, err := composeCommand()
	if err != nil {
		t.Skipf("-chaos.docker: %v", err)
	}
	build := exec.Command("../../scripts/build-image.sh")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		t.Fatalf("build image: %v", err)
	}
	d := &dockerTarget{t: t, compose: compose, project: fmt.Sprintf("ringkv-chaos-%d", os.Getpid()), cutOff: map[int]bool{}, paused: map[int]bool{}}
	t.Cleanup(func() {
		for _, c := range d.conns {
			c.Close()
		}
		d.run("down", "-v", "--timeout", "5")
	})
	if out, err := d.composeOut("up", "-d"); err != nil {
		t.Fatalf("compose up: %v\n%s", err, out)
	}
	for _, n := range []string{"n1", "n2", "n3"} {
		out, err := d.composeOut("ps", "-q", n)
		if err != nil || strings.TrimSpace(out) == "" {
			t.Fatalf("compose ps %s: %v %s", n, err, out)
		}
		id := strings.TrimSpace(out)
		ip, err := exec.Command("docker", "inspect", "-f",
			fmt.Sprintf(`{{(index .NetworkSettings.Networks "%s_ringkv").IPAddress}}`, d.project), id).Output()
		if err != nil {
			t.Fatalf("inspect %s: %v", n, err)
		}
		conn, err := grpc.NewClient(net.JoinHostPort(strings.TrimSpace(string(ip)), "7001"), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		d.ids, d.conns, d.up = append(d.ids, id), append(d.conns, conn), append(d.up, true)
	}
	wait.Until(t, 2*time.Minute, "the cluster map", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		m, err := pb.NewAdminClient(d.conns[0]).ClusterMap(ctx, &pb.ClusterMapRequest{})
		d.parts = int(m.GetPartitions())
		return err == nil
	})
	d.WaitPrimaries()
	return d
}

func (d *dockerTarget) composeOut(args ...string) (string, error) {
	cmd := exec.Command(d.compose[0], append(append(d.compose[1:], "-p", d.project, "-f", "../../deploy/docker-compose.yml"), args...)...)
	cmd.Env = append(os.Environ(), "RINGKV_CLIENT_PORT=", "RINGKV_LOG_LEVEL=warn")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (d *dockerTarget) run(args ...string) {
	if out, err := d.composeOut(args...); err != nil {
		d.t.Logf("compose %v: %v\n%s", args, err, out)
	}
}

func (d *dockerTarget) docker(args ...string) {
	if out, err := exec.Command("docker", args...).CombinedOutput(); err != nil {
		d.t.Logf("docker %v: %v\n%s", args, err, out)
	}
}

func (d *dockerTarget) Size() int       { return len(d.ids) }
func (d *dockerTarget) Partitions() int { return d.parts }

// Split is not offered: the docker campaign keeps its partitions.
func (d *dockerTarget) Split(int) bool { return false }

func (d *dockerTarget) Ring() *ring.Ring {
	r, err := ring.New(d.parts)
	if err != nil {
		panic(err)
	}
	return r
}
func (d *dockerTarget) KV(i int) pb.KVClient { return pb.NewKVClient(d.conns[i]) }

func (d *dockerTarget) Up(i int) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.up[i]
}

func (d *dockerTarget) setUp(i int, up bool) {
	d.mu.Lock()
	d.up[i] = up
	d.mu.Unlock()
}

func (d *dockerTarget) Kill(i int)  { d.docker("kill", d.ids[i]); d.setUp(i, false) }
func (d *dockerTarget) Start(i int) { d.docker("start", d.ids[i]); d.setUp(i, true) }
func (d *dockerTarget) Pause(i int) {
	d.docker("pause", d.ids[i])
	d.mu.Lock()
	d.paused[i] = true
	d.mu.Unlock()
}

func (d *dockerTarget) Resume(i int) {
	d.mu.Lock()
	paused := d.paused[i]
	delete(d.paused, i)
	d.mu.Unlock()
	if paused {
		d.docker("unpause", d.ids[i])
	}
}

// Cut supports healing and cutting one node off from all others.
func (d *dockerTarget) Cut(_ *testing.T, cut map[int][]int) bool {
	if cut == nil {
		for i := range d.ids {
			if d.cutOff[i] {
				d.docker("network", "connect", "--alias", fmt.Sprintf("n%d", i+1), d.project+"_ringkv", d.ids[i])
				delete(d.cutOff, i)
			}
		}
		return true
	}
	for i, others := range cut {
		if len(others) == d.Size()-1 {
			d.docker("network", "disconnect", d.project+"_ringkv", d.ids[i])
			d.cutOff[i] = true
			return true
		}
	}
	return false
}

func (d *dockerTarget) Leaders() map[uint32]int {
	out := map[uint32]int{}
	for i, c := range d.conns {
		if !d.Up(i) {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		st, err := pb.NewAdminClient(c).Status(ctx, &pb.StatusRequest{})
		cancel()
		if err != nil {
			continue
		}
		for _, ps := range st.Partitions {
			if ps.State == pb.RaftState_RAFT_STATE_LEADER {
				out[ps.Partition] = i
			}
		}
	}
	return out
}

func (d *dockerTarget) WaitPrimaries() {
	d.t.Helper()
	wait.Until(d.t, 2*time.Minute, "a primary for every partition", func() bool {
		return len(d.Leaders()) == d.Partitions()
	})
}
