package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/ringkv/ringkv/cluster"
	"github.com/ringkv/ringkv/internal/connpool"
	"github.com/ringkv/ringkv/internal/testing/testcluster"
	"github.com/ringkv/ringkv/internal/testing/wait"
	"github.com/ringkv/ringkv/node"
	pb "github.com/ringkv/ringkv/proto/ringkvpb"
)

// fastMembership makes the metadata leader act on joins, leaves and moves
// as often as node's membership tests do. Failure detection is slower than
// theirs: these tests need none, and on a loaded machine a node silent for
// a few seconds must not be declared down and have its replicas replaced.
func fastMembership(cfg *node.Config) {
	cfg.Timeouts = cluster.Timeouts{SuspectAfter: 3 * time.Second, DeadAfter: 15 * time.Second, ReplaceAfter: time.Minute}
	cfg.ManageInterval = 100 * time.Millisecond
	cfg.BalanceInterval = 500 * time.Millisecond
}

// moveTimeout bounds one join or leave --wait: on a loaded 2-core machine a
// node's replicas take tens of seconds to move.
const moveTimeout = "5m"

// expect checks an exit code, that stdout contains each of wantStdout and
// stderr wantStderr (empty: stderr must be empty).
func expect(t *testing.T, got result, wantCode int, wantStdout []string, wantStderr string) {
	t.Helper()
	if got.code != wantCode {
		t.Fatalf("exit %d, want %d; stdout %q stderr %q", got.code, wantCode, got.stdout, got.stderr)
	}
	for _, s := range wantStdout {
		if !strings.Contains(got.stdout, s) {
			t.Fatalf("stdout %q, want it to contain %q", got.stdout, s)
		}
	}
	if wantStderr == "" && got.stderr != "" || !strings.Contains(got.stderr, wantStderr) {
		t.Fatalf("stderr %q, want it to contain %q", got.stderr, wantStderr)
	}
}

// waitSettledStatus polls status --json until it shows a settled cluster
// of exactly wantNodes (see settledProblem): right after a move a partition
// may be between primaries, and on a loaded machine a node may briefly be
// suspect.
func waitSettledStatus(t *testing.T, addr string, wantNodes ...string) {
	t.Helper()
	wait.For(t, 60*time.Second, "status --json shows a settled cluster", func() (bool, string) {
		r := kvctl(nil, "--addr", addr, "status", "--json")
		if r.code != 0 {
			return false, fmt.Sprintf("%+v", r)
		}
		var rep statusReport
		if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
			t.Fatalf("status --json printed %q: %v", r.stdout, err)
		}
		if why := settledProblem(rep, r.stdout, wantNodes); why != "" {
			return false, why + " in\n" + r.stdout
		}
		return true, ""
	})
}

// settledProblem says what keeps a status report from showing a settled
// cluster of wantNodes, "" if nothing: the nodes are all up and hold
// partitions, every partition has a primary, three replicas on its target
// and no learner, and the per-node counts add up.
func settledProblem(rep statusReport, out string, wantNodes []string) string {
	var ids []string
	partitions, primaries := 0, 0
	for _, n := range rep.Nodes {
		ids = append(ids, n.ID)
		partitions += n.Partitions
		primaries += n.Primaries
		if n.State != "up" || n.Error != "" || n.Partitions == 0 {
			return fmt.Sprintf("node %+v, want up, reachable, holding partitions", n)
		}
	}
	if !slices.Equal(ids, wantNodes) {
		return fmt.Sprintf("nodes %v, want %v", ids, wantNodes)
	}
	for _, p := range rep.Partitions {
		if p.Primary == "" || p.Moving || len(p.Learners) != 0 || len(p.Target) != 3 || len(p.Replicas) != 3 {
			return fmt.Sprintf("partition %+v, want a primary, 3 replicas on its target of 3 and no learner", p)
		}
	}
	if rep.MovesInFlight != 0 || primaries != len(rep.Partitions) || partitions != 3*len(rep.Partitions) {
		return fmt.Sprintf("moves in flight %d, primaries %d, partitions held %d; want 0, %d, %d",
			rep.MovesInFlight, primaries, partitions, len(rep.Partitions), 3*len(rep.Partitions))
	}
	for _, field := range []string{`"learners": []`, `"target": [`, `"moving": false`, `"moves_in_flight": 0`, `"state": "up"`, `"primaries": `} {
		if !strings.Contains(out, field) {
			return "no " + field
		}
	}
	return ""
}

// checkProgress checks the lines a --wait printed without a terminal: one
// per change, then the settled line.
func checkProgress(t *testing.T, stdout string) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	for i, l := range lines[1:] {
		last := i == len(lines)-2
		switch {
		case last && !strings.HasPrefix(l, "settled: "),
			!last && !strings.HasPrefix(l, "moving replicas: ") && !strings.HasPrefix(l, "waiting: "),
			l == lines[i]:
			t.Fatalf("progress line %d %q: want a changed progress line, the last one settled:\n%s", i+1, l, stdout)
		}
	}
}

// TestJoinStatusLeave grows a cluster by a node, shrinks it by another, and
// is refused a leave below three nodes; the steps build on each other.
func TestJoinStatusLeave(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Partitions: 8, Tweak: fastMembership})
	i := c.AddNode()
	n4, n4Addr := c.Nodes[i].ID(), c.Nodes[i].Addr()
	n1Addr := c.Addrs()[0]
	if r := kvctl(nil, "--addr", n1Addr, "put", "k", "v"); r.code != 0 {
		t.Fatalf("put: %+v", r)
	}

	steps := []struct {
		name  string
		args  []string
		check func(t *testing.T, r result)
	}{
		{"join --wait", []string{"--addr", c.Addrs()[1], "join", n4, n4Addr, "--wait", "--timeout", moveTimeout}, func(t *testing.T, r result) {
			expect(t, r, 0, []string{n4 + " joined at epoch ", "\nsettled: " + n4 + " up with "}, "")
			checkProgress(t, r.stdout)
			wait.For(t, 30*time.Second, n4+" hosts replicas", func() (bool, string) {
				return len(c.Nodes[i].Partitions()) > 0, "it hosts none"
			})
		}},
		{"status after join", []string{"--addr", n1Addr, "status"}, func(t *testing.T, r result) {
			expect(t, r, 0, []string{"NODE  ", "STATE", "PRIMARIES", n4 + "  ", "\nmoves in flight: "}, "")
			waitSettledStatus(t, n1Addr, "n1", "n2", "n3", n4)
		}},
		{"join again is idempotent", []string{"--addr", n1Addr, "join", n4, n4Addr}, func(t *testing.T, r result) {
			expect(t, r, 0, []string{n4 + " joined at epoch "}, "")
			if strings.Count(r.stdout, "\n") != 1 {
				t.Fatalf("join without --wait printed %q, want one line", r.stdout)
			}
		}},
		// Asking the leaving node itself: the wait must go on reading the
		// map from the others once it is removed.
		{"leave --wait", []string{"--addr", n1Addr, "leave", "n1", "--wait", "--timeout", moveTimeout}, func(t *testing.T, r result) {
			expect(t, r, 0, []string{"n1 leaving at epoch ", "\nsettled: n1 removed, no partition moving"}, "")
			checkProgress(t, r.stdout)
			waitSettledStatus(t, n4Addr, "n2", "n3", n4)
		}},
		{"leave refused below 3 nodes", []string{"--addr", n4Addr, "leave", "n2", "--wait"}, func(t *testing.T, r result) {
			expect(t, r, 3, nil, "kvctl: leave n2 via "+n4Addr+": refused: node n2 cannot leave: 2 nodes would remain")
			if r.stdout != "" || strings.Count(r.stderr, "\n") != 1 {
				t.Fatalf("stdout %q stderr %q, want nothing and one line", r.stdout, r.stderr)
			}
		}},
		{"leave of a stranger", []string{"--addr", n4Addr, "leave", "n9"}, func(t *testing.T, r result) {
			expect(t, r, 3, nil, "NotFound: id: node n9 is not a member")
		}},
		{"join of a removed id", []string{"--addr", n4Addr, "join", "n1", n1Addr}, func(t *testing.T, r result) {
			expect(t, r, 3, nil, "a removed id cannot join again")
		}},
	}
	for _, st := range steps {
		if !t.Run(st.name, func(t *testing.T) {
			r := kvctl(nil, st.args...)
			t.Logf("kvctl %s:\n%s%s", strings.Join(st.args, " "), r.stdout, r.stderr)
			st.check(t, r)
		}) {
			return
		}
	}
}

// signalWriter collects output and closes seen once it contains want.
type signalWriter struct {
	mu   sync.Mutex
	buf  strings.Builder
	want string
	seen chan struct{}
}

func (w *signalWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	had := strings.Contains(w.buf.String(), w.want)
	w.buf.Write(p)
	if !had && strings.Contains(w.buf.String(), w.want) {
		close(w.seen)
	}
	return len(p), nil
}

// TestJoinWaitInterrupted interrupts a join --wait as Ctrl-C does: the
// command stops waiting and says so, and the join completes anyway.
func TestJoinWaitInterrupted(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Partitions: 8, Tweak: fastMembership})
	i := c.AddNode()
	n4 := c.Nodes[i].ID()
	// The signal is sent once the command printed its first progress, so
	// its handler is in place; the moves that follow take seconds.
	out := &signalWriter{want: "\nmoving replicas: ", seen: make(chan struct{})}
	var errOut strings.Builder
	code := make(chan int)
	go func() {
		code <- run([]string{"--addr", c.Addrs()[0], "join", n4, c.Nodes[i].Addr(), "--wait"}, nil, out, &errOut)
	}()
	select {
	case <-out.seen:
	case got := <-code:
		t.Fatalf("join --wait ended before it was interrupted: exit %d, stdout %q, stderr %q", got, out.buf.String(), errOut.String())
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	got := <-code
	t.Logf("stdout:\n%s\nstderr:\n%s", out.buf.String(), errOut.String())
	if got != exitFailure || !strings.Contains(errOut.String(), "stopped waiting (interrupted); the cluster goes on moving replicas, follow it with kvctl status; last seen: moving replicas: ") {
		t.Fatalf("exit %d, stderr %q; want 3 and a stop message", got, errOut.String())
	}
	wait.For(t, 2*time.Minute, n4+" holds replicas after the interrupted wait", func() (bool, string) {
		return len(c.Nodes[i].Partitions()) > 0, "it hosts none"
	})
}

// TestWaitStopsWithContext waits for a node that never joins: the wait
// ends with the context and reports what it last read.
func TestWaitStopsWithContext(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	pool := connpool.New(grpc.WithTransportCredentials(insecure.NewCredentials()))
	defer pool.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var out strings.Builder
	down := closedAddr(t)
	w := &waiter{pool: pool, id: "n9", addrs: []string{down, c.Addrs()[0]}}
	err := w.run(ctx, newProgress(&out))
	// The poll that the context cut short may add a line of its own, but
	// it is not what the error reports.
	want := "moving replicas: 0 of 8 partitions moving, node n9 removed, 0 partitions on n9"
	if err == nil || err.Error() != want || !strings.HasPrefix(out.String(), want+"\n") {
		t.Fatalf("run = %v, printed %q; want error %q, printed once", err, out.String(), want)
	}
	members := slices.Clone(w.addrs[:len(w.addrs)-1])
	slices.Sort(members)
	want3 := slices.Sorted(slices.Values(c.Addrs()))
	if !slices.Equal(members, want3) || w.addrs[len(w.addrs)-1] != down {
		t.Fatalf("addresses to ask next %v, want the members %v, then %s", w.addrs, c.Addrs(), down)
	}
}

// TestStatusOfAMove builds the status of a cluster caught mid-move, which
// the in-process clusters pass through too quickly to observe reliably.
func TestStatusOfAMove(t *testing.T) {
	m := &pb.ClusterMapResponse{
		Partitions: 2,
		Epoch:      9,
		Nodes: []*pb.NodeInfo{
			{Id: "n1", Address: "h1:1", State: "up"}, {Id: "n2", Address: "h2:1", State: "up"},
			{Id: "n3", Address: "h3:1", State: "leaving"}, {Id: "n4", Address: "h4:1", State: "up"},
		},
		PartitionMap: []*pb.PartitionMap{
			{Partition: 0, Replicas: []string{"n1", "n2", "n3"}, Learners: []string{"n4"}, Target: []string{"n1", "n2", "n4"}, Moving: true},
			{Partition: 1, Replicas: []string{"n2", "n1", "n4"}, Target: []string{"n1", "n2", "n4"}},
		},
	}
	ps := func(p uint32, st pb.RaftState, applied uint64) *pb.PartitionStatus {
		return &pb.PartitionStatus{Partition: p, State: st, Term: 2, AppliedIndex: applied, CommitIndex: applied, LastLogIndex: applied}
	}
	leader, follower := pb.RaftState_RAFT_STATE_LEADER, pb.RaftState_RAFT_STATE_FOLLOWER
	statuses := map[string]*pb.StatusResponse{
		"n1": {EngineDiskBytes: 3 << 20, Partitions: []*pb.PartitionStatus{ps(0, leader, 40), ps(1, follower, 7)}},
		"n2": {EngineDiskBytes: 3 << 20, Partitions: []*pb.PartitionStatus{ps(0, follower, 40), ps(1, leader, 7)}},
		"n4": {EngineDiskBytes: 1 << 19, Partitions: []*pb.PartitionStatus{ps(0, follower, 12), ps(1, follower, 7)}},
	}
	lagOf := map[lagKey]*lag{{0, "n4"}: {entries: 28}}
	rep := buildStatus(m, statuses, map[string]string{"n3": "connection refused"}, lagOf)

	type counts struct {
		state                 string
		partitions, primaries int
		disk                  uint64
		err                   string
	}
	wantNodes := map[string]counts{"n1": {"up", 2, 1, 3 << 20, ""}, "n2": {"up", 2, 1, 3 << 20, ""},
		"n3": {"leaving", 1, 0, 0, "connection refused"}, "n4": {"up", 2, 0, 1 << 19, ""}}
	for _, n := range rep.Nodes {
		if got := (counts{n.State, n.Partitions, n.Primaries, n.EngineDiskBytes, n.Error}); got != wantNodes[n.ID] {
			t.Errorf("node %s: %+v, want %+v", n.ID, got, wantNodes[n.ID])
		}
	}
	p0, p1 := rep.Partitions[0], rep.Partitions[1]
	if rep.MovesInFlight != 1 || !p0.Moving || p1.Moving || p0.Primary != "n1" || p1.Primary != "n2" {
		t.Errorf("moves %d, partition 0 moving %v primary %s, partition 1 moving %v primary %s; want 1, true n1, false n2",
			rep.MovesInFlight, p0.Moving, p0.Primary, p1.Moving, p1.Primary)
	}
	if len(p0.Learners) != 1 || p0.Learners[0].Node != "n4" || p0.Learners[0].AppliedIndex != 12 || *p0.Learners[0].LagEntries != 28 {
		t.Errorf("partition 0 learners %+v, want n4 at applied index 12, 28 entries behind", p0.Learners)
	}
	if p0.Replicas[2].State != "unreachable" || !slices.Equal(p0.Target, []string{"n1", "n2", "n4"}) {
		t.Errorf("partition 0 replicas %+v target %v", p0.Replicas, p0.Target)
	}

	var text strings.Builder
	if err := printStatus(&text, rep); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"n1    h1:1     up       2           1          3.0 MiB      ok\n",
		"n3    h3:1     leaving  1           0          -            unreachable: connection refused\n",
		"n4    h4:1     up       2           0          0.5 MiB      ok\n",
		"0          n1       n1=leader/2/40  n2=follower/2/40  n3=unreachable/0/0  learner n4=follower/2/12 lag 28  moving to n1,n2,n4\n",
		"1          n2       n2=leader/2/7  n1=follower/2/7  n4=follower/2/7\n",
		"\nmoves in flight: 1\n",
	} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text status lacks %q:\n%s", want, text.String())
		}
	}
}
