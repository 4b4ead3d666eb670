package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ringkv/ringkv/client"
	"github.com/ringkv/ringkv/internal/testing/ackcheck"
	"github.com/ringkv/ringkv/internal/testing/proccluster"
	pb "github.com/ringkv/ringkv/proto/ringkvpb"
)

// membershipArgs shorten failure detection so tests run in seconds.
func membershipArgs(replaceAfter string) []string {
	return []string{"--suspect-after", "1s", "--dead-after", "2s", "--replace-after", replaceAfter, "--balance-interval", "500ms"}
}

// settled reports whether no partition is moving and every node in want is
// a member and up (and no other node is a member).
func settled(m *pb.ClusterMapResponse, want ...string) (bool, string) {
	if m == nil {
		return false, "no cluster map"
	}
	members := map[string]string{}
	for _, n := range m.GetNodes() {
		members[n.GetId()] = n.GetState()
	}
	if len(members) != len(want) {
		return false, fmt.Sprintf("epoch %d: members %v, want %v", m.GetEpoch(), members, want)
	}
	for _, id := range want {
		if members[id] != "up" {
			return false, fmt.Sprintf("epoch %d: members %v, want %v up", m.GetEpoch(), members, want)
		}
	}
	held := map[string]int{}
	for _, pm := range m.GetPartitionMap() {
		if pm.GetMoving() {
			return false, fmt.Sprintf("epoch %d: partition %d moving: replicas %v learners %v target %v",
				m.GetEpoch(), pm.GetPartition(), pm.GetReplicas(), pm.GetLearners(), pm.GetTarget())
		}
		for _, id := range pm.GetReplicas() {
			held[id]++
		}
	}
	// A node just up is placed a round later: settled means it holds
	// replicas too.
	for _, id := range want {
		if held[id] == 0 {
			return false, fmt.Sprintf("epoch %d: %s holds no replica yet", m.GetEpoch(), id)
		}
	}
	return true, ""
}

func waitSettled(t *testing.T, c *proccluster.Cluster, d time.Duration, want ...string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, why := settled(c.Map(), want...)
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster not settled on %v after %v: %s", want, d, why)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// voterSampler records the fewest voters any partition had in the Raft
// configuration the metadata recorded, sampled until stopped.
type voterSampler struct {
	stop chan struct{}
	done chan int
}

func sampleVoters(c *proccluster.Cluster, mu *sync.Mutex) *voterSampler {
	s := &voterSampler{stop: make(chan struct{}), done: make(chan int, 1)}
	go func() {
		least := 99
		for {
			select {
			case <-s.stop:
				s.done <- least
				return
			case <-time.After(50 * time.Millisecond):
			}
			mu.Lock()
			m := c.Map()
			mu.Unlock()
			for _, pm := range m.GetPartitionMap() {
				least = min(least, len(pm.GetReplicas()))
			}
		}
	}()
	return s
}

func (s *voterSampler) min() int {
	close(s.stop)
	return <-s.done
}

// TestGrowAndShrinkUnderWrites grows a cluster 3 → 4 → 5 with join and
// shrinks it to 3 with leave while clients write: every acknowledged write
// survives, no partition is ever seen with fewer than 3 voters, the nodes
// that left exit, and replicas and primaries end spread evenly.
func TestGrowAndShrinkUnderWrites(t *testing.T) {
	var procsMu sync.Mutex
	c := proccluster.Start(t, kvnodeBin, proccluster.Options{Args: membershipArgs("10m")})
	cl := newClient(t, c)
	w := ackcheck.Start(cl, 4)
	voters := sampleVoters(c, &procsMu)
	admin := pb.NewAdminClient(c.Procs[2].Conn)
	ctx := context.Background()
	members := []string{"n1", "n2", "n3"}
	for range 2 {
		procsMu.Lock()
		p := c.AddProc()
		procsMu.Unlock()
		if _, err := admin.Join(ctx, &pb.JoinRequest{Id: p.ID, Address: p.Addr}); err != nil {
			t.Fatalf("join %s: %v", p.ID, err)
		}
		members = append(members, p.ID)
		start := time.Now()
		waitSettled(t, c, 3*time.Minute, members...)
		t.Logf("joined %s: replicas moved in %v (%d writes acknowledged so far)", p.ID, time.Since(start).Round(time.Millisecond), w.Acked())
	}
	start := time.Now()
	for _, id := range []string{"n1", "n2"} {
		if _, err := admin.Leave(ctx, &pb.LeaveRequest{Id: id}); err != nil {
			t.Fatalf("leave %s: %v", id, err)
		}
	}
	if _, err := admin.Leave(ctx, &pb.LeaveRequest{Id: "n3"}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("leave of a third node of five: %v, want FailedPrecondition", err)
	}
	waitSettled(t, c, 3*time.Minute, "n3", "n4", "n5")
	t.Logf("n1 and n2 left: replicas moved in %v", time.Since(start).Round(time.Millisecond))
	for _, id := range []string{"n1", "n2"} {
		code, ok := c.WaitExit(c.ByID(id), time.Minute)
		if !ok || code != 4 {
			t.Errorf("%s after leaving: exited %v with status %d, want exit status 4", id, ok, code)
		}
	}
	if m := voters.min(); m < 3 {
		t.Errorf("a partition was seen with %d voters", m)
	}
	w.Finish(t)
	checkSpread(t, c, "n3", "n4", "n5")
}

// checkSpread waits until replicas and primaries per node are within one of
// even.
func checkSpread(t *testing.T, c *proccluster.Cluster, nodes ...string) {
	t.Helper()
	var detail string
	eventually(t, time.Minute, "replicas and primaries spread within ±1 of even", func() bool {
		replicas, primaries := map[string]int{}, map[string]int{}
		for id, st := range c.Status(nil) {
			for _, ps := range st.GetPartitions() {
				replicas[id]++
				if ps.GetState() == pb.RaftState_RAFT_STATE_LEADER {
					primaries[id]++
				}
			}
		}
		detail = fmt.Sprintf("replicas %v primaries %v", replicas, primaries)
		even := func(count map[string]int, total int) bool {
			lo, hi := total/len(nodes), (total+len(nodes)-1)/len(nodes)
			sum := 0
			for _, id := range nodes {
				if count[id] < lo-1 || count[id] > hi+1 {
					return false
				}
				sum += count[id]
			}
			return sum == total
		}
		n := c.PartitionCount() // splits may have grown it
		return even(replicas, 3*n) && even(primaries, n)
	})
	t.Logf("spread: %s", detail)
}

// TestKill9PastReplaceAfter kills a node of a four-node cluster and keeps
// it down past --replace-after: its replicas are re-created on the three
// survivors, and when it comes back it is refused and exits.
func TestKill9PastReplaceAfter(t *testing.T) {
	c := proccluster.Start(t, kvnodeBin, proccluster.Options{Nodes: 4, Args: membershipArgs("4s")})
	cl, err := client.New(context.Background(), []string{c.Procs[0].Addr, c.Procs[1].Addr, c.Procs[2].Addr})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	w := ackcheck.Start(cl, 2)
	victim := c.ByID("n4")
	killed := time.Now()
	c.Kill(victim)
	waitSettled(t, c, 3*time.Minute, "n1", "n2", "n3")
	t.Logf("n4's replicas re-created on the survivors %v after kill -9 (replace-after 4s)", time.Since(killed).Round(time.Millisecond))
	m := c.Map()
	for _, pm := range m.GetPartitionMap() {
		if len(pm.GetReplicas()) != 3 {
			t.Fatalf("partition %d has replicas %v", pm.GetPartition(), pm.GetReplicas())
		}
	}
	c.Start(victim)
	code, ok := c.WaitExit(victim, time.Minute)
	if !ok || code != 4 {
		t.Fatalf("the replaced node came back: exited %v with status %d, want a refusal (exit status 4)", ok, code)
	}
	if ok, why := settled(c.Map(), "n1", "n2", "n3"); !ok {
		t.Fatalf("after the replaced node's return: %s", why)
	}
	w.Finish(t)
}

// TestKillMetadataLeaderMidJoin kills the node coordinating a join (the
// metadata leader) while replicas move to the new node: the next leader
// finishes the move.
func TestKillMetadataLeaderMidJoin(t *testing.T) {
	c := proccluster.Start(t, kvnodeBin, proccluster.Options{Args: append(membershipArgs("10m"), "--max-moves", "1")})
	cl := newClient(t, c)
	w := ackcheck.Start(cl, 2)
	p := c.AddProc()
	if _, err := pb.NewAdminClient(c.Procs[0].Conn).Join(context.Background(), &pb.JoinRequest{Id: p.ID, Address: p.Addr}); err != nil {
		t.Fatal(err)
	}
	var leader string
	eventually(t, time.Minute, "a replica move under way", func() bool {
		st := c.Status(p)
		for _, s := range st {
			leader = s.GetMetadataLeader()
		}
		m := c.Map()
		for _, pm := range m.GetPartitionMap() {
			if pm.GetMoving() {
				return leader != "" && leader != p.ID
			}
		}
		return false
	})
	t.Logf("killing the metadata leader %s mid-move", leader)
	c.Kill(c.ByID(leader))
	var next string
	eventually(t, time.Minute, "a new metadata leader", func() bool {
		for _, s := range c.Status(nil) {
			if l := s.GetMetadataLeader(); l != "" && l != leader {
				next = l
				return true
			}
		}
		return false
	})
	t.Logf("new metadata leader %s; restarting %s", next, leader)
	// Moves onto the killed node wait until it is up again.
	c.Start(c.ByID(leader))
	waitSettled(t, c, 3*time.Minute, "n1", "n2", "n3", "n4")
	for id, s := range c.Status(nil) {
		t.Logf("%s: metadata leader %s, epoch %d", id, s.GetMetadataLeader(), s.GetEpoch())
	}
	if st := c.Status(nil)[p.ID]; len(st.GetPartitions()) == 0 {
		t.Fatalf("%s holds no partition after the join finished", p.ID)
	}
	w.Finish(t)
}

// TestCreateClusterOfEachSize creates clusters of 3, 5, 6 and 7 nodes, each
// node started with the same --peers as a new user would: every node
// serves (past five, the metadata group's extra members join it as
// non-voters instead of failing to bootstrap it), every partition has
// three replicas and a primary, and a write through each node reads back
// through every node.
func TestCreateClusterOfEachSize(t *testing.T) {
	for _, n := range []int{3, 5, 6, 7} {
		t.Run(fmt.Sprintf("nodes=%d", n), func(t *testing.T) {
			c := proccluster.Start(t, kvnodeBin, proccluster.Options{Nodes: n})
			var ids []string
			for _, p := range c.Procs {
				ids = append(ids, p.ID)
			}
			waitSettled(t, c, 2*time.Minute, ids...)
			for _, pm := range c.Map().GetPartitionMap() {
				if len(pm.GetReplicas()) != 3 {
					t.Fatalf("partition %d has replicas %v", pm.GetPartition(), pm.GetReplicas())
				}
			}
			clients := map[string]*client.Client{}
			for _, p := range c.Procs {
				if !p.Running() {
					t.Fatalf("%s exited", p.ID)
				}
				cl, err := client.New(context.Background(), []string{p.Addr})
				if err != nil {
					t.Fatal(err)
				}
				defer cl.Close()
				clients[p.ID] = cl
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			for _, p := range c.Procs {
				key := []byte("written-through-" + p.ID)
				if _, err := clients[p.ID].Put(ctx, key, key, client.Strong); err != nil {
					t.Fatalf("put through %s: %v", p.ID, err)
				}
				for _, q := range c.Procs {
					if got, err := clients[q.ID].Get(ctx, key, client.Quorum); err != nil || string(got.Value) != string(key) {
						t.Fatalf("get of %s through %s: %q, %v", key, q.ID, got.Value, err)
					}
				}
			}
		})
	}
}

// TestMetadataVotersReplacedAsTheyDie: a seven-node cluster (five voters in
// the metadata group, n1–n5, and two non-voters) loses three voters one
// after another, each long before --replace-after: each down voter gives
// its vote to a non-voter, so the group keeps a quorum of live voters and
// records the third death too. Without the hand-over the third kill would
// leave two live voters of five, and no change could be recorded again.
func TestMetadataVotersReplacedAsTheyDie(t *testing.T) {
	var mu sync.Mutex
	var lines []string
	watch := func(id, line string) {
		mu.Lock()
		defer mu.Unlock()
		if strings.Contains(line, "metadata group") {
			lines = append(lines, id+": "+line)
		}
	}
	c := proccluster.Start(t, kvnodeBin, proccluster.Options{Nodes: 7, Watch: watch,
		Args: append(membershipArgs("10m"), "--log-level", "info")})
	logged := func(what, member string) bool {
		mu.Lock()
		defer mu.Unlock()
		for _, l := range lines {
			if strings.Contains(l, what) && strings.Contains(l, "member="+member) {
				return true
			}
		}
		return false
	}
	t.Cleanup(func() {
		if t.Failed() {
			mu.Lock()
			defer mu.Unlock()
			for _, l := range lines {
				t.Log(l)
			}
		}
	})
	for i, victim := range []string{"n1", "n2", "n3"} {
		c.Kill(c.ByID(victim))
		eventually(t, 2*time.Minute, victim+" recorded down", func() bool {
			for _, n := range c.Map().GetNodes() {
				if n.GetId() == victim {
					return n.GetState() == "down"
				}
			}
			return false
		})
		if standby := []string{"n6", "n7"}; i < len(standby) {
			eventually(t, time.Minute, victim+"'s vote handed to "+standby[i], func() bool {
				return logged("a down voter gives its vote", victim) && logged("promoting a member", standby[i])
			})
		}
	}
}
