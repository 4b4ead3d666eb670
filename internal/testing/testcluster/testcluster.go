// Package testcluster starts an in-process ringkv cluster on loopback for
// tests: every node is a full node.Node with its own data dir and a real gRPC
// listener on a free 127.0.0.1 port.
package testcluster

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/ringkv/ringkv/internal/testing/wait"
	"github.com/ringkv/ringkv/node"
	"github.com/ringkv/ringkv/raftgroup"
)

// Cluster is a set of running nodes.
type Cluster struct {
	t     testing.TB
	Nodes []*node.Node
	cfgs  []node.Config
}

// Options tune the cluster; zero values give 3 nodes, 8 partitions and
// short Raft timeouts.
type Options struct {
	Nodes      int
	Partitions int
	// Metrics serves every node's /metrics, /healthz and /readyz on a free
	// 127.0.0.1 port, kept across RestartNode (Node.MetricsAddr).
	Metrics bool
	Tweak   func(*node.Config)
}

// Start starts a cluster and waits until every partition has a primary. It
// is stopped when the test ends.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if opts.Nodes == 0 {
		opts.Nodes = 3
	}
	if opts.Partitions == 0 {
		opts.Partitions = 8
	}
	dir := t.TempDir()
	c := &Cluster{t: t}
	lis := listen(t, opts.Nodes)
	var mlis []net.Listener
	if opts.Metrics {
		mlis = listen(t, opts.Nodes)
	}
	var peers []node.Peer
	for i, l := range lis {
		peers = append(peers, node.Peer{ID: fmt.Sprintf("n%d", i+1), Addr: l.Addr().String()})
	}
	for i, p := range peers {
		cfg := node.Config{
			ID:         p.ID,
			Listen:     p.Addr,
			DataDir:    filepath.Join(dir, p.ID),
			Peers:      peers,
			Partitions: opts.Partitions,
			Logger:     hclog.New(&hclog.LoggerOptions{Name: p.ID, Level: hclog.Warn}),
			Raft: raftgroup.Timing{
				HeartbeatTimeout:   300 * time.Millisecond,
				ElectionTimeout:    300 * time.Millisecond,
				LeaderLeaseTimeout: 300 * time.Millisecond,
				CommitTimeout:      20 * time.Millisecond,
			},
			// Primaries stay where elections put them unless a test
			// balances them.
			BalanceInterval: -1,
			OpTimeout:       3 * time.Second,
			WALSegmentSize:  4 << 20,
		}
		if opts.Metrics {
			cfg.MetricsAddr = mlis[i].Addr().String()
		}
		if opts.Tweak != nil {
			opts.Tweak(&cfg)
		}
		c.cfgs = append(c.cfgs, cfg)
		cfg.Listener = lis[i]
		if opts.Metrics {
			cfg.MetricsListener = mlis[i]
		}
		n, err := node.Start(cfg)
		if err != nil {
			t.Fatal(err)
		}
		c.Nodes = append(c.Nodes, n)
	}
	t.Cleanup(c.Stop)
	c.WaitReady()
	return c
}

// AddNode starts a node that belongs to no cluster yet, as kvnode does
// without --peers, and returns its index; Admin.Join adds it.
func (c *Cluster) AddNode() int {
	c.t.Helper()
	i := len(c.Nodes)
	cfg := c.cfgs[0]
	cfg.ID = fmt.Sprintf("n%d", i+1)
	cfg.Peers = nil
	cfg.DataDir = filepath.Join(filepath.Dir(cfg.DataDir), cfg.ID)
	cfg.Logger = hclog.New(&hclog.LoggerOptions{Name: cfg.ID, Level: hclog.Warn})
	lis := listen(c.t, 1)[0]
	cfg.Listen = lis.Addr().String()
	cfg.MetricsAddr, cfg.MetricsListener = "", nil
	c.cfgs = append(c.cfgs, cfg)
	cfg.Listener = lis
	n, err := node.Start(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	c.Nodes = append(c.Nodes, n)
	return i
}

// listen opens n listeners on free loopback ports.
func listen(t testing.TB, n int) []net.Listener {
	t.Helper()
	out := make([]net.Listener, n)
	for i := range out {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		out[i] = l
	}
	return out
}

// WaitReady waits until every partition of every running node knows a
// primary.
func (c *Cluster) WaitReady() {
	c.t.Helper()
	wait.For(c.t, 30*time.Second, "a primary for every partition", func() (bool, string) {
		for _, n := range c.Nodes {
			if n == nil {
				continue
			}
			for _, p := range n.Partitions() {
				// A replica moved off the node meanwhile is nil.
				if r := n.Replica(p); r != nil {
					if id, _ := r.Leader(); id == "" {
						return false, fmt.Sprintf("partition %d on %s knows no primary", p, n.ID())
					}
				}
			}
		}
		return true, ""
	})
}

// Addrs lists the running nodes' gRPC addresses.
func (c *Cluster) Addrs() []string {
	var out []string
	for _, n := range c.Nodes {
		if n != nil {
			out = append(out, n.Addr())
		}
	}
	return out
}

// Conn dials node i; the connection is closed when the test ends.
func (c *Cluster) Conn(i int) *grpc.ClientConn {
	c.t.Helper()
	conn, err := grpc.NewClient(c.cfgs[i].Listen, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { conn.Close() })
	return conn
}

// DataDir is node i's data directory.
func (c *Cluster) DataDir(i int) string { return c.cfgs[i].DataDir }

// StopNode stops node i gracefully.
func (c *Cluster) StopNode(i int) {
	if c.Nodes[i] != nil {
		c.Nodes[i].Close()
		c.Nodes[i] = nil
	}
}

// RestartNode starts node i again on its data dir and address.
func (c *Cluster) RestartNode(i int) {
	c.t.Helper()
	c.StopNode(i)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// A node with an initialized data dir ignores --peers: give it a list
	// that would not even describe a cluster, so every restart checks that.
	cfg := c.cfgs[i]
	cfg.Peers = []node.Peer{{ID: "not-a-member", Addr: "127.0.0.1:1"}}
	var n *node.Node
	var err error
	// The old listener's port is free again once its server stopped; retry
	// briefly in case the kernel has not released it yet.
	for n, err = node.Start(cfg); err != nil; n, err = node.Start(cfg) {
		if ctx.Err() != nil {
			c.t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.Nodes[i] = n
}

// Stop stops every node.
func (c *Cluster) Stop() {
	for i := range c.Nodes {
		c.StopNode(i)
	}
}
