package transport

import (
	"bytes"
	"fmt"
	"io"
	"testing"

	"github.com/hashicorp/raft"
)

// benchPeer returns a Group on one node and the address of a second node
// whose partition-1 consumer answers every RPC the way raft would, cheaply.
func benchPeer(b *testing.B, opts Options) (*Group, raft.ServerAddress) {
	b.Helper()
	a := startNode(b, "a", opts)
	peer := startNode(b, "b", Options{})
	remote := peer.group(b, 1)
	remote.SetHeartbeatHandler(func(rpc raft.RPC) { rpc.Respond(&raft.AppendEntriesResponse{Success: true}, nil) })
	serve(b, remote, func(rpc raft.RPC) {
		switch req := rpc.Command.(type) {
		case *raft.AppendEntriesRequest:
			rpc.Respond(&raft.AppendEntriesResponse{Term: req.Term, LastLog: req.PrevLogEntry + uint64(len(req.Entries)), Success: true}, nil)
		case *raft.InstallSnapshotRequest:
			_, err := io.Copy(io.Discard, rpc.Reader)
			rpc.Respond(&raft.InstallSnapshotResponse{Term: req.Term, Success: err == nil}, err)
		}
	})
	return a.group(b, 1), peer.addr
}

func entries(n, size int) []*raft.Log {
	logs := make([]*raft.Log, n)
	for i := range logs {
		logs[i] = &raft.Log{Index: uint64(i + 1), Term: 1, Data: make([]byte, size)}
	}
	return logs
}

// BenchmarkAppendEntries measures one unary round trip over loopback,
// heartbeats included.
func BenchmarkAppendEntries(b *testing.B) {
	for _, bc := range []struct {
		name string
		req  *raft.AppendEntriesRequest
	}{
		{"heartbeat", heartbeat(1, "127.0.0.1:1")},
		{"1x128B", &raft.AppendEntriesRequest{Term: 1, PrevLogEntry: 1, Entries: entries(1, 128)}},
		{"64x1KiB", &raft.AppendEntriesRequest{Term: 1, PrevLogEntry: 1, Entries: entries(64, 1024)}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			g, peer := benchPeer(b, Options{})
			var resp raft.AppendEntriesResponse
			for b.Loop() {
				if err := g.AppendEntries("b", peer, bc.req, &resp); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkPipeline measures pipelined AppendEntries throughput: one
// goroutine sends, another consumes the futures, as raft does.
func BenchmarkPipeline(b *testing.B) {
	for _, inFlight := range []int{2, 8} {
		for _, batch := range []int{1, 64} {
			b.Run(fmt.Sprintf("inflight=%d/batch=%dx1KiB", inFlight, batch), func(b *testing.B) {
				g, peer := benchPeer(b, Options{MaxInFlight: inFlight})
				p, err := g.AppendEntriesPipeline("b", peer)
				if err != nil {
					b.Fatal(err)
				}
				defer p.Close()
				req := &raft.AppendEntriesRequest{Term: 1, PrevLogEntry: 1, Entries: entries(batch, 1024)}
				b.SetBytes(int64(batch * 1024))
				n := b.N
				consumed := make(chan error, 1)
				go func() {
					for range n {
						if err := (<-p.Consumer()).Error(); err != nil {
							consumed <- err
							return
						}
					}
					consumed <- nil
				}()
				b.ResetTimer()
				for range n {
					if _, err := p.AppendEntries(req, new(raft.AppendEntriesResponse)); err != nil {
						b.Fatal(err)
					}
				}
				if err := <-consumed; err != nil {
					b.Fatal(err)
				}
			})
		}
	}
}

// BenchmarkInstallSnapshot measures streaming an 8 MiB snapshot.
func BenchmarkInstallSnapshot(b *testing.B) {
	const size = 8 << 20
	g, peer := benchPeer(b, Options{})
	data := make([]byte, size)
	req := &raft.InstallSnapshotRequest{Term: 1, Size: size}
	b.SetBytes(size)
	var resp raft.InstallSnapshotResponse
	for b.Loop() {
		if err := g.InstallSnapshot("b", peer, req, &resp, bytes.NewReader(data)); err != nil {
			b.Fatal(err)
		}
	}
}
