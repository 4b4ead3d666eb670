package node_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ringkv/ringkv/client"
	"github.com/ringkv/ringkv/cluster"
	"github.com/ringkv/ringkv/internal/testing/ackcheck"
	"github.com/ringkv/ringkv/internal/testing/testcluster"
	"github.com/ringkv/ringkv/node"
	pb "github.com/ringkv/ringkv/proto/ringkvpb"
	"github.com/ringkv/ringkv/ring"
)

func fastMembership(cfg *node.Config) {
	cfg.Timeouts = cluster.Timeouts{SuspectAfter: time.Second, DeadAfter: 2 * time.Second, ReplaceAfter: 4 * time.Second}
	cfg.ManageInterval = 100 * time.Millisecond
	cfg.BalanceInterval = 500 * time.Millisecond
}

// settled reports whether node n's view has every partition on its target
// and the given member absent or present.
func settled(n *node.Node) (bool, string) {
	v := n.View()
	if v == nil {
		return false, "no view"
	}
	for p := range ring.PartitionID(v.Partitions) {
		if v.Moving(p) {
			return false, fmt.Sprintf("epoch %d: partition %d moving: config %v, target %v", v.Epoch, p, v.Config[p], v.Placement().Replicas(p))
		}
	}
	return true, ""
}

// minVoters samples every partition's Raft configuration on its primary,
// and as the metadata records it on every node.
func minVoters(nodes []*node.Node) int {
	least := 99
	for _, n := range nodes {
		v := n.View()
		if v == nil {
			continue
		}
		for p := range v.Partitions {
			k := 0
			for _, sv := range v.Config[p] {
				if sv.Voter {
					k++
				}
			}
			least = min(least, k)
		}
		for _, p := range n.Partitions() {
			r := n.Replica(p)
			if r == nil || !r.IsPrimary() {
				continue
			}
			least = min(least, len(r.Status().Voters))
		}
	}
	return least
}

// metadataLeader waits until node 0 names a metadata leader and returns
// its id and index in c.Nodes.
func metadataLeader(t *testing.T, c *testcluster.Cluster) (string, int) {
	t.Helper()
	var leader string
	waitFor(t, 60*time.Second, "a metadata leader", func() (bool, string) {
		leader = metadataLeaderSeenBy(c, 0)
		return leader != "", "none yet"
	})
	return leader, slices.IndexFunc(c.Nodes, func(n *node.Node) bool { return n.ID() == leader })
}

// metadataLeaderSeenBy is the metadata leader node i names, or "".
func metadataLeaderSeenBy(c *testcluster.Cluster, i int) string {
	st, err := pb.NewAdminClient(c.Conn(i)).Status(context.Background(), &pb.StatusRequest{})
	if err != nil {
		return ""
	}
	return st.GetMetadataLeader()
}

// retryUnavailable calls f until it answers other than Unavailable, as
// kvctl does while a young cluster's metadata group elects its leader.
func retryUnavailable(t *testing.T, f func() error) error {
	t.Helper()
	var err error
	waitFor(t, 30*time.Second, "an answer other than Unavailable", func() (bool, string) {
		err = f()
		return status.Code(err) != codes.Unavailable, fmt.Sprint(err)
	})
	return err
}

func TestJoinAndLeaveUnderWrites(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Partitions: 8, Tweak: fastMembership})
	cl, err := client.New(context.Background(), c.Addrs())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	w := ackcheck.Start(cl, 4)
	sampling := make(chan struct{})
	least := make(chan int, 1)
	added := make(chan *node.Node, 2)
	nodes := slices.Clone(c.Nodes)
	go func() {
		m := 99
		for {
			select {
			case <-sampling:
				least <- m
				return
			case n := <-added:
				nodes = append(nodes, n)
			case <-time.After(20 * time.Millisecond):
				m = min(m, minVoters(nodes))
			}
		}
	}()
	admin := pb.NewAdminClient(c.Conn(1))
	ctx := context.Background()
	for _, grow := range []int{4, 5} {
		i := c.AddNode()
		if i != grow-1 {
			t.Fatalf("AddNode = %d", i)
		}
		id := c.Nodes[i].ID()
		added <- c.Nodes[i]
		for range 2 { // idempotent
			if err := retryUnavailable(t, func() error {
				_, err := admin.Join(ctx, &pb.JoinRequest{Id: id, Address: c.Nodes[i].Addr()})
				return err
			}); err != nil {
				t.Fatalf("join %s: %v", id, err)
			}
		}
		waitFor(t, 90*time.Second, id+" holds replicas and moves finish", func() (bool, string) {
			if ok, why := settled(c.Nodes[0]); !ok {
				return false, why
			}
			return len(c.Nodes[i].Partitions()) > 0, fmt.Sprintf("%s hosts %v", id, c.Nodes[i].Partitions())
		})
	}
	for _, leave := range []string{"n1", "n2"} {
		if err := retryUnavailable(t, func() error {
			_, err := admin.Leave(ctx, &pb.LeaveRequest{Id: leave})
			return err
		}); err != nil {
			t.Fatalf("leave %s: %v", leave, err)
		}
	}
	err = retryUnavailable(t, func() error {
		_, err := admin.Leave(ctx, &pb.LeaveRequest{Id: "n3"})
		return err
	})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("a leave that would leave 2 nodes: %v, want FailedPrecondition", err)
	}
	t.Logf("refused: %v", err)
	waitFor(t, 120*time.Second, "n1 and n2 removed", func() (bool, string) {
		v := c.Nodes[2].View()
		if v.Member("n1") != nil || v.Member("n2") != nil {
			return false, fmt.Sprintf("epoch %d members %v", v.Epoch, v.Members)
		}
		return settled(c.Nodes[2])
	})
	close(sampling)
	if m := <-least; m < 3 {
		t.Errorf("a partition had %d voters at a sampled instant", m)
	}
	waitFor(t, 30*time.Second, "n1 and n2 hold nothing", func() (bool, string) {
		return len(c.Nodes[0].Partitions())+len(c.Nodes[1].Partitions()) == 0,
			fmt.Sprintf("n1 %v n2 %v", c.Nodes[0].Partitions(), c.Nodes[1].Partitions())
	})
	w.Finish(t)
}

// TestDownNodeDroppedFromRouting stops a node of four: once it is down,
// no node's cluster map names it as any partition's primary, and clients
// keep writing to every partition.
func TestDownNodeDroppedFromRouting(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Nodes: 4, Partitions: 8, Tweak: func(cfg *node.Config) {
		fastMembership(cfg)
		cfg.Timeouts.ReplaceAfter = time.Hour
	}})
	c.StopNode(3)
	waitFor(t, 60*time.Second, "n4 down in every view", func() (bool, string) {
		for _, n := range c.Nodes[:3] {
			if m := n.View().Member("n4"); m == nil || m.State != cluster.Down {
				return false, fmt.Sprintf("%s sees n4 as %+v", n.ID(), m)
			}
		}
		return true, ""
	})
	for i := range 3 {
		m, err := pb.NewAdminClient(c.Conn(i)).ClusterMap(context.Background(), &pb.ClusterMapRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for _, pm := range m.GetPartitionMap() {
			if pm.GetPrimaryId() == "n4" || pm.GetPrimaryAddr() == "" {
				t.Errorf("n%d's map routes partition %d to %q at %q", i+1, pm.GetPartition(), pm.GetPrimaryId(), pm.GetPrimaryAddr())
			}
		}
	}
	cl, err := client.New(context.Background(), c.Addrs())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	r, _ := ring.New(8)
	for p, k := 0, 0; p < 8; k++ {
		key := fmt.Appendf(nil, "k%d", k)
		if int(r.Lookup(key)) != p {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		_, err := cl.Put(ctx, key, key, client.Strong)
		cancel()
		if err != nil {
			t.Fatalf("partition %d with n4 down: %v", p, err)
		}
		p++
	}
}

// TestJoinRefusesAnAddressTheNodeDoesNotAdvertise: the cluster would reach
// the node at an address its Raft groups do not announce.
func TestJoinRefusesAnAddressTheNodeDoesNotAdvertise(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Partitions: 4, Tweak: fastMembership})
	i := c.AddNode()
	// The same listener, under a name the node does not announce.
	other := strings.Replace(c.Nodes[i].Addr(), "127.0.0.1", "localhost", 1)
	err := retryUnavailable(t, func() error {
		_, err := pb.NewAdminClient(c.Conn(0)).Join(context.Background(), &pb.JoinRequest{Id: c.Nodes[i].ID(), Address: other})
		return err
	})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "advertise") {
		t.Fatalf("join at a wrong address: %v, want FailedPrecondition naming the advertised address", err)
	}
	if v := c.Nodes[0].View(); v.Member(c.Nodes[i].ID()) != nil {
		t.Fatalf("the refused node became a member: %+v", v.Members)
	}
}

// TestMetadataLeaderLeaves: the node that runs the moves is the one
// leaving. It must hand leadership over before it is removed — once
// removed, every peer refuses it — and then learn that it was removed.
func TestMetadataLeaderLeaves(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Nodes: 4, Partitions: 8, Tweak: fastMembership})
	leader, i := metadataLeader(t, c)
	stay := c.Nodes[(i+1)%4]
	if err := retryUnavailable(t, func() error {
		_, err := pb.NewAdminClient(c.Conn(i)).Leave(context.Background(), &pb.LeaveRequest{Id: leader})
		return err
	}); err != nil {
		t.Fatalf("leave %s: %v", leader, err)
	}
	select {
	case err := <-c.Nodes[i].Fatal():
		t.Logf("%s: %v", leader, err)
	case <-time.After(120 * time.Second):
		v := stay.View()
		t.Fatalf("%s was not told it was removed; %s sees epoch %d, members %v, removed %v", leader, stay.ID(), v.Epoch, v.Members, v.Removed)
	}
	waitFor(t, 60*time.Second, leader+" removed and moves finished", func() (bool, string) {
		v := stay.View()
		if !v.IsRemoved(leader) || len(v.Members) != 3 {
			return false, fmt.Sprintf("epoch %d members %v", v.Epoch, v.Members)
		}
		return settled(stay)
	})
}

// TestStopHandsMetadataLeadershipOver: a metadata leader that stops hands
// leadership over first, so joins and moves go on under the next leader at
// once rather than after the followers' heartbeat timeout (5 s here; the
// bound below is half of it).
func TestStopHandsMetadataLeadershipOver(t *testing.T) {
	const heartbeat = 5 * time.Second
	c := testcluster.Start(t, testcluster.Options{Partitions: 4, Tweak: func(cfg *node.Config) {
		cfg.Raft.HeartbeatTimeout, cfg.Raft.ElectionTimeout = heartbeat, heartbeat
	}})
	leader, i := metadataLeader(t, c)
	c.StopNode(i)
	stopped := time.Now()
	waitFor(t, 60*time.Second, "a new metadata leader", func() (bool, string) {
		for j := range c.Nodes {
			if j != i {
				if l := metadataLeaderSeenBy(c, j); l != "" && l != leader {
					return true, ""
				}
			}
		}
		return false, "none yet"
	})
	if took := time.Since(stopped); took > heartbeat/2 {
		t.Fatalf("a new metadata leader %v after %s stopped; a handover takes a round trip, an election at least %v", took, leader, heartbeat)
	}
}

// TestStartDropsStrayReplicas: a node restarted with the data of a replica
// its view no longer places on it deletes that data, and leaves alone what
// is not a replica's — never mistaking it for partition 0's.
func TestStartDropsStrayReplicas(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Nodes: 4, Partitions: 8})
	// A node that hosts partition 0 and not some other partition.
	i, stray := -1, -1
	for j, n := range c.Nodes {
		v := n.View()
		for p := range v.Partitions {
			if i < 0 && v.Hosts(n.ID(), 0) && !v.Hosts(n.ID(), ring.PartitionID(p)) {
				i, stray = j, p
			}
		}
	}
	if i < 0 {
		t.Fatal("no node hosts partition 0 and misses another: every node hosts every partition?")
	}
	c.StopNode(i)
	parts := filepath.Join(c.DataDir(i), "partitions")
	for _, f := range []string{fmt.Sprintf("%04d/leftover", stray), "notes/readme", "0000/marker"} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(parts, f)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(parts, f), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	c.RestartNode(i)
	c.WaitReady()
	for f, want := range map[string]bool{fmt.Sprintf("%04d", stray): false, "notes/readme": true, "0000/marker": true} {
		if _, err := os.Stat(filepath.Join(parts, f)); (err == nil) != want {
			t.Errorf("%s after restart: %v, want present %v", f, err, want)
		}
	}
}
