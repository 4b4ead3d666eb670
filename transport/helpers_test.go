package transport

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
)

// waitTimeout bounds every wait on a condition. It is sized for a loaded
// 2-core machine running the race detector; a healthy run needs a fraction.
const waitTimeout = 60 * time.Second

// testNode is one in-process "kvnode": a gRPC server on 127.0.0.1 and the
// transport Node registered on it.
type testNode struct {
	id   raft.ServerID
	addr raft.ServerAddress
	node *Node
}

// startNode serves a new Node on a free loopback port until the test ends.
func startNode(t testing.TB, id string, opts Options, srvOpts ...grpc.ServerOption) *testNode {
	t.Helper()
	return serveNode(t, listen(t), id, opts, srvOpts...)
}

// listen opens a free loopback port, so a test knows a node's address
// before building its options.
func listen(t testing.TB) net.Listener {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return lis
}

// serveNode serves a new Node on lis until the test ends.
func serveNode(t testing.TB, lis net.Listener, id string, opts Options, srvOpts ...grpc.ServerOption) *testNode {
	t.Helper()
	addr := raft.ServerAddress(lis.Addr().String())
	n, err := NewNode(addr, opts)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(srvOpts...)
	n.Register(srv)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Stop()
		if err := <-served; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			t.Errorf("serve %s: %v", addr, err)
		}
	})
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("close node %s: %v", addr, err)
		}
	})
	return &testNode{id: raft.ServerID(id), addr: addr, node: n}
}

func (tn *testNode) group(t testing.TB, partition uint32) *Group {
	t.Helper()
	g, err := tn.node.Transport(partition)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Close() })
	return g
}

// serve answers every RPC arriving on g's consumer with answer until the
// test ends.
func serve(t testing.TB, g *Group, answer func(raft.RPC)) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case rpc := <-g.Consumer():
				answer(rpc)
			case <-ctx.Done():
				return
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
}

// within runs fn and fails the test if it has not returned after
// waitTimeout: the property checked is "does not hang", not a latency.
func within[T any](t testing.TB, what string, fn func() T) T {
	t.Helper()
	done := make(chan T, 1)
	go func() { done <- fn() }()
	select {
	case v := <-done:
		return v
	case <-time.After(waitTimeout):
		t.Fatalf("%s did not return within %v", what, waitTimeout)
		panic("unreachable")
	}
}

// waitFor polls cond until it holds or waitTimeout passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", waitTimeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func heartbeat(term uint64, leader raft.ServerAddress) *raft.AppendEntriesRequest {
	return &raft.AppendEntriesRequest{
		RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, Addr: []byte(leader)},
		Term:      term,
	}
}
