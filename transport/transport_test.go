package transport

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"

	pb "github.com/ringkv/ringkv/proto/ringkvpb"
)

func TestNewNodeRejectsBadOptions(t *testing.T) {
	tests := []struct {
		name  string
		local raft.ServerAddress
		opts  Options
		field string
	}{
		{"empty address", "", Options{}, "local address"},
		{"negative timeout", "127.0.0.1:1", Options{Timeout: -time.Second}, "Timeout"},
		{"negative in-flight", "127.0.0.1:1", Options{MaxInFlight: -1}, "MaxInFlight"},
		{"negative chunk", "127.0.0.1:1", Options{SnapshotChunkSize: -1}, "SnapshotChunkSize"},
		{"chunk over limit", "127.0.0.1:1", Options{SnapshotChunkSize: MaxSnapshotChunkSize + 1}, "SnapshotChunkSize"},
		{"negative heartbeat window", "127.0.0.1:1", Options{HeartbeatWindow: -1}, "HeartbeatWindow"},
		{"heartbeat window past timeout", "127.0.0.1:1", Options{Timeout: time.Second, HeartbeatWindow: time.Second}, "HeartbeatWindow"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := NewNode(tt.local, tt.opts)
			var oe *OptionError
			if !errors.As(err, &oe) || oe.Field != tt.field {
				t.Fatalf("NewNode = %v, %v; want *OptionError for %s", n, err, tt.field)
			}
			if !strings.Contains(err.Error(), tt.field) {
				t.Errorf("error %q does not name %s", err, tt.field)
			}
		})
	}
}

func TestTransportRegistration(t *testing.T) {
	tn := startNode(t, "a", Options{})
	g, err := tn.node.Transport(1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tn.node.Transport(1); !errors.Is(err, ErrPartitionRegistered) {
		t.Fatalf("second Transport(1) = %v, want ErrPartitionRegistered", err)
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	g2, err := tn.node.Transport(1)
	if err != nil {
		t.Fatalf("Transport(1) after Close = %v", err)
	}
	// A stale Group's Close must not unregister its successor.
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := tn.node.Transport(1); !errors.Is(err, ErrPartitionRegistered) {
		t.Fatalf("Transport(1) after stale Close = %v, want ErrPartitionRegistered", err)
	}
	// Make the node open a connection (to itself), which Close must close.
	serve(t, g2, func(rpc raft.RPC) { rpc.Respond(&raft.TimeoutNowResponse{}, nil) })
	if err := g2.TimeoutNow("a", tn.addr, &raft.TimeoutNowRequest{}, new(raft.TimeoutNowResponse)); err != nil {
		t.Fatal(err)
	}
	conn := tn.node.peers[tn.addr].conn
	if err := tn.node.Close(); err != nil {
		t.Fatal(err)
	}
	if s := conn.GetState(); s != connectivity.Shutdown {
		t.Errorf("connection state after node Close = %v, want Shutdown", s)
	}
	if _, err := tn.node.Transport(2); !errors.Is(err, raft.ErrTransportShutdown) {
		t.Fatalf("Transport after node Close = %v, want raft.ErrTransportShutdown", err)
	}
	if err := g2.AppendEntries("b", tn.addr, heartbeat(1, tn.addr), new(raft.AppendEntriesResponse)); !errors.Is(err, raft.ErrTransportShutdown) {
		t.Fatalf("RPC after node Close = %v, want raft.ErrTransportShutdown", err)
	}
}

// rpcCall invokes one of a Group's outgoing RPCs the way raft does.
type rpcCall struct {
	name string
	call func(g *Group, target raft.ServerAddress) error
}

func rpcCalls(snapshotSize int) []rpcCall {
	return []rpcCall{
		{"AppendEntries", func(g *Group, target raft.ServerAddress) error {
			req := &raft.AppendEntriesRequest{Term: 1, PrevLogEntry: 1, Entries: []*raft.Log{{Index: 2, Term: 1}}}
			return g.AppendEntries("peer", target, req, new(raft.AppendEntriesResponse))
		}},
		{"Heartbeat", func(g *Group, target raft.ServerAddress) error {
			return g.AppendEntries("peer", target, heartbeat(1, g.LocalAddr()), new(raft.AppendEntriesResponse))
		}},
		{"RequestVote", func(g *Group, target raft.ServerAddress) error {
			return g.RequestVote("peer", target, &raft.RequestVoteRequest{Term: 1}, new(raft.RequestVoteResponse))
		}},
		{"RequestPreVote", func(g *Group, target raft.ServerAddress) error {
			return g.RequestPreVote("peer", target, &raft.RequestPreVoteRequest{Term: 1}, new(raft.RequestPreVoteResponse))
		}},
		{"TimeoutNow", func(g *Group, target raft.ServerAddress) error {
			return g.TimeoutNow("peer", target, &raft.TimeoutNowRequest{}, new(raft.TimeoutNowResponse))
		}},
		{"InstallSnapshot", func(g *Group, target raft.ServerAddress) error {
			req := &raft.InstallSnapshotRequest{Term: 1, Size: int64(snapshotSize)}
			return g.InstallSnapshot("peer", target, req, new(raft.InstallSnapshotResponse), bytes.NewReader(make([]byte, snapshotSize)))
		}},
		{"AppendEntriesPipeline", func(g *Group, target raft.ServerAddress) error {
			p, err := g.AppendEntriesPipeline("peer", target)
			if err != nil {
				return err
			}
			defer p.Close()
			f, err := p.AppendEntries(&raft.AppendEntriesRequest{Term: 1}, new(raft.AppendEntriesResponse))
			if err != nil {
				return err
			}
			return f.Error()
		}},
	}
}

// TestUnknownPartitionFailsFast checks that an RPC for a partition the peer
// does not host, or no longer hosts, fails with ErrUnknownPartition instead
// of waiting for a consumer that does not exist.
func TestUnknownPartitionFailsFast(t *testing.T) {
	a := startNode(t, "a", Options{})
	b := startNode(t, "b", Options{})
	closed := b.group(t, 8)
	if err := closed.Close(); err != nil {
		t.Fatal(err)
	}
	for _, partition := range []uint32{7, 8} {
		g := a.group(t, partition)
		// A snapshot over a few chunks: the peer ends the stream while the
		// sender is still sending.
		for _, rc := range rpcCalls(3 * DefaultSnapshotChunkSize) {
			t.Run(fmt.Sprintf("partition %d/%s", partition, rc.name), func(t *testing.T) {
				err := within(t, rc.name, func() error { return rc.call(g, b.addr) })
				if !errors.Is(err, ErrUnknownPartition) {
					t.Fatalf("%s = %v, want ErrUnknownPartition", rc.name, err)
				}
				if want := fmt.Sprintf("partition %d", partition); !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not name %q", err, want)
				}
			})
		}
	}
}

// TestRPCDeadline checks that every RPC gives up after Options.Timeout when
// the peer's raft never answers.
func TestRPCDeadline(t *testing.T) {
	const timeout = 300 * time.Millisecond
	a := startNode(t, "a", Options{Timeout: timeout})
	b := startNode(t, "b", Options{})
	g := a.group(t, 1)
	// Nobody reads b's consumer and no heartbeat handler is set.
	b.group(t, 1)
	// One chunk, so the stream's send side completes and only the answer is
	// waited for.
	for _, rc := range rpcCalls(1024) {
		t.Run(rc.name, func(t *testing.T) {
			err := within(t, rc.name, func() error { return rc.call(g, b.addr) })
			if !errors.Is(err, context.DeadlineExceeded) && status.Code(err) != codes.DeadlineExceeded {
				t.Fatalf("%s = %v, want a deadline error", rc.name, err)
			}
		})
	}
}

// TestGroupCloseCancelsOwnRPCs checks that closing a Group ends each kind of
// blocked outgoing RPC with raft.ErrTransportShutdown, while another Group's
// RPCs over the same connection keep working.
func TestGroupCloseCancelsOwnRPCs(t *testing.T) {
	a := startNode(t, "a", Options{Timeout: time.Hour})
	b := startNode(t, "b", Options{})
	staying := a.group(t, 0)
	serve(t, b.group(t, 0), func(rpc raft.RPC) { rpc.Respond(&raft.RequestVoteResponse{Granted: true}, nil) })

	for i, rc := range rpcCalls(1024) {
		t.Run(rc.name, func(t *testing.T) {
			partition := uint32(i + 1)
			closing := a.group(t, partition)
			held := make(chan struct{}, 1)
			serve(t, b.group(t, partition), func(raft.RPC) { held <- struct{}{} }) // takes the RPC, never answers

			errc := make(chan error, 1)
			go func() { errc <- rc.call(closing, b.addr) }()
			within(t, rc.name+" reaching the peer", func() struct{} { return <-held })
			if err := closing.Close(); err != nil {
				t.Fatal(err)
			}
			err := within(t, "blocked "+rc.name, func() error { return <-errc })
			if !errors.Is(err, raft.ErrTransportShutdown) {
				t.Fatalf("blocked %s after Close = %v, want raft.ErrTransportShutdown", rc.name, err)
			}
			var resp raft.RequestVoteResponse
			if err := staying.RequestVote("b", b.addr, &raft.RequestVoteRequest{Term: 1}, &resp); err != nil || !resp.Granted {
				t.Fatalf("RequestVote on partition 0 after closing partition %d = %v, %+v", partition, err, resp)
			}
		})
	}
}

// TestHeartbeatFastPath checks that heartbeats reach raft's heartbeat handler
// even while the consumer channel is blocked, and that other AppendEntries do
// not take that path.
func TestHeartbeatFastPath(t *testing.T) {
	a := startNode(t, "a", Options{})
	b := startNode(t, "b", Options{})
	g := a.group(t, 1)
	remote := b.group(t, 1)
	remote.SetHeartbeatHandler(func(rpc raft.RPC) {
		rpc.Respond(&raft.AppendEntriesResponse{Term: 1, LastLog: 42, Success: true}, nil)
	})

	var resp raft.AppendEntriesResponse
	err := within(t, "heartbeat", func() error { return g.AppendEntries("b", b.addr, heartbeat(1, a.addr), &resp) })
	if err != nil || resp.LastLog != 42 {
		t.Fatalf("heartbeat = %v, %+v; want the heartbeat handler's answer", err, resp)
	}

	serve(t, remote, func(rpc raft.RPC) {
		rpc.Respond(&raft.AppendEntriesResponse{Term: 1, LastLog: 7, Success: true}, nil)
	})
	req := heartbeat(1, a.addr)
	req.LeaderCommitIndex = 3
	resp = raft.AppendEntriesResponse{}
	if err := g.AppendEntries("b", b.addr, req, &resp); err != nil || resp.LastLog != 7 {
		t.Fatalf("AppendEntries = %v, %+v; want the consumer's answer", err, resp)
	}
}

// pendingHeartbeats is how many heartbeats wait in a's heartbeater for b.
func pendingHeartbeats(a *testNode, b raft.ServerAddress) int {
	h, err := a.node.heartbeater(b)
	if err != nil {
		return -1
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.pending)
}

// slowWindow holds heartbeats back longer than any wait of these tests, so
// a heartbeat that went out did so because something sent it early.
var slowWindow = Options{Timeout: 10 * waitTimeout, HeartbeatWindow: 5 * waitTimeout}

// TestHeartbeatsShareANodeStream: the heartbeats of several groups to one
// peer node wait for each other and travel as one message on one stream;
// each gets its own group's answer, an error included, and an error answer
// leaves the stream up.
func TestHeartbeatsShareANodeStream(t *testing.T) {
	var counts msgCounter
	a := startNode(t, "a", slowWindow)
	b := startNode(t, "b", Options{}, counts.serverOption())
	const groups = 4
	senders := make([]*Group, groups)
	for p := range uint32(groups) {
		senders[p] = a.group(t, p)
		b.group(t, p).SetHeartbeatHandler(func(rpc raft.RPC) {
			if p == 3 {
				rpc.Respond(nil, errors.New("refused by partition 3"))
				return
			}
			rpc.Respond(&raft.AppendEntriesResponse{Term: 1, LastLog: uint64(p), Success: true}, nil)
		})
	}
	errs := make(chan error, groups)
	for p, g := range senders {
		go func() {
			var resp raft.AppendEntriesResponse
			err := g.AppendEntries("b", b.addr, heartbeat(1, a.addr), &resp)
			if err == nil && resp.LastLog != uint64(p) {
				err = fmt.Errorf("partition %d answered %+v", p, resp)
			}
			errs <- err
		}()
	}
	waitFor(t, "every heartbeat waiting", func() bool { return pendingHeartbeats(a, b.addr) == groups })
	done := senders[0].Expedite()
	defer done()
	for range groups {
		if err := within(t, "heartbeat", func() error { return <-errs }); err != nil && !strings.Contains(err.Error(), "refused by partition 3") {
			t.Fatal(err)
		}
	}
	const method = pb.Raft_Heartbeats_FullMethodName
	if s, m := counts.streamsOf(method), counts.get(method); s != 1 || m != 1 {
		t.Fatalf("%d heartbeats made %d streams and %d messages; want 1 and 1", groups, s, m)
	}
	var resp raft.AppendEntriesResponse
	if err := within(t, "heartbeat", func() error { return senders[0].AppendEntries("b", b.addr, heartbeat(1, a.addr), &resp) }); err != nil {
		t.Fatal(err)
	}
	if s := counts.streamsOf(method); s != 1 {
		t.Fatalf("after an error answer: %d streams, want the first one still", s)
	}
}

// TestExpeditedHeartbeatGoesAtOnce: an expedited group's heartbeats do not
// wait for the window; once done, they wait again.
func TestExpeditedHeartbeatGoesAtOnce(t *testing.T) {
	a := startNode(t, "a", slowWindow)
	b := startNode(t, "b", Options{})
	g := a.group(t, 1)
	b.group(t, 1).SetHeartbeatHandler(func(rpc raft.RPC) {
		rpc.Respond(&raft.AppendEntriesResponse{Term: 1, Success: true}, nil)
	})
	beat := func() error {
		return g.AppendEntries("b", b.addr, heartbeat(1, a.addr), new(raft.AppendEntriesResponse))
	}
	done := g.Expedite()
	if err := within(t, "expedited heartbeat", beat); err != nil {
		t.Fatal(err)
	}
	done()
	errc := make(chan error, 1)
	go func() { errc <- beat() }()
	waitFor(t, "the heartbeat waiting", func() bool { return pendingHeartbeats(a, b.addr) == 1 })
	select {
	case err := <-errc:
		t.Fatalf("a heartbeat after done went at once: %v", err)
	default:
	}
}

// TestClosingFailsWaitingHeartbeats: heartbeats waiting for the window
// fail with raft.ErrTransportShutdown when their node closes.
func TestClosingFailsWaitingHeartbeats(t *testing.T) {
	a := startNode(t, "a", slowWindow)
	b := startNode(t, "b", Options{})
	g := a.group(t, 1)
	errc := make(chan error, 1)
	go func() { errc <- g.AppendEntries("b", b.addr, heartbeat(1, a.addr), new(raft.AppendEntriesResponse)) }()
	waitFor(t, "the heartbeat waiting", func() bool { return pendingHeartbeats(a, b.addr) == 1 })
	if err := a.node.Close(); err != nil {
		t.Fatal(err)
	}
	if err := within(t, "heartbeat", func() error { return <-errc }); !errors.Is(err, raft.ErrTransportShutdown) {
		t.Fatalf("heartbeat after Close = %v, want raft.ErrTransportShutdown", err)
	}
}

// TestHeartbeatsRefuseOtherAppends: a Heartbeats batch carries heartbeats
// only; anything else is refused without reaching raft.
func TestHeartbeatsRefuseOtherAppends(t *testing.T) {
	b := startNode(t, "b", Options{})
	b.group(t, 1)
	a := startNode(t, "a", Options{})
	client, err := a.node.client(b.addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	stream, err := client.Heartbeats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	req := heartbeat(1, a.addr)
	req.PrevLogEntry = 5
	if err := stream.Send(&pb.HeartbeatBatch{Heartbeats: []*pb.AppendEntriesRequest{appendEntriesRequestToProto(1, req)}}); err != nil {
		t.Fatal(err)
	}
	out, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if r := out.GetResults(); len(r) != 1 || codes.Code(r[0].GetCode()) != codes.InvalidArgument {
		t.Fatalf("an append in a Heartbeats batch answered %v, want InvalidArgument", r)
	}
}

// TestRaftErrorReachesSender checks that an error raft answers with is the
// sender's error, as with raft.NetworkTransport; raft relies on the text
// "unexpected command" to detect peers without pre-vote.
func TestRaftErrorReachesSender(t *testing.T) {
	a := startNode(t, "a", Options{})
	b := startNode(t, "b", Options{})
	serve(t, b.group(t, 1), func(rpc raft.RPC) { rpc.Respond(nil, errors.New("unexpected command")) })
	err := a.group(t, 1).RequestPreVote("b", b.addr, &raft.RequestPreVoteRequest{Term: 1}, new(raft.RequestPreVoteResponse))
	if err == nil || !strings.Contains(err.Error(), "unexpected command") {
		t.Fatalf("RequestPreVote = %v, want raft's error", err)
	}
}

// TestPipelineInOrder sends many pipelined requests and checks that each
// future carries its own response, in order, and that the observer hook sees
// every response.
func TestPipelineInOrder(t *testing.T) {
	const n = 200
	var observed []AppendResponse
	var mu sync.Mutex
	a := startNode(t, "a", Options{MaxInFlight: 16, OnAppendResponse: func(r AppendResponse) {
		mu.Lock()
		defer mu.Unlock()
		observed = append(observed, r)
	}})
	b := startNode(t, "b", Options{})
	serve(t, b.group(t, 3), func(rpc raft.RPC) {
		req := rpc.Command.(*raft.AppendEntriesRequest)
		rpc.Respond(&raft.AppendEntriesResponse{
			Term:    req.Term,
			LastLog: req.PrevLogEntry + uint64(len(req.Entries)),
			Success: true,
		}, nil)
	})
	p, err := a.group(t, 3).AppendEntriesPipeline("b", b.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	sendErr := make(chan error, 1)
	go func() {
		for i := range uint64(n) {
			req := &raft.AppendEntriesRequest{Term: 1, PrevLogEntry: i, Entries: []*raft.Log{{Index: i + 1, Term: 1}}}
			if _, err := p.AppendEntries(req, new(raft.AppendEntriesResponse)); err != nil {
				sendErr <- err
				return
			}
		}
		sendErr <- nil
	}()
	for i := range uint64(n) {
		f := within(t, "pipeline future", func() raft.AppendFuture { return <-p.Consumer() })
		if err := f.Error(); err != nil {
			t.Fatalf("future %d: %v", i, err)
		}
		if f.Request().PrevLogEntry != i || f.Response().LastLog != i+1 {
			t.Fatalf("future %d: request PrevLogEntry %d, response LastLog %d", i, f.Request().PrevLogEntry, f.Response().LastLog)
		}
	}
	if err := <-sendErr; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(observed) != n {
		t.Fatalf("observer saw %d responses, want %d", len(observed), n)
	}
	last := observed[n-1]
	if last.Partition != 3 || last.ID != "b" || last.Addr != b.addr || last.LastLog != n || !last.Success {
		t.Errorf("last observation %+v", last)
	}
}

// TestPipelineConsumerGone reproduces what raft does when a follower answers
// Success=false: its decoder stops reading Consumer() while its sender keeps
// calling AppendEntries. The sender must get an error, not hang.
func TestPipelineConsumerGone(t *testing.T) {
	a := startNode(t, "a", Options{Timeout: 500 * time.Millisecond})
	b := startNode(t, "b", Options{})
	serve(t, b.group(t, 3), func(rpc raft.RPC) {
		rpc.Respond(&raft.AppendEntriesResponse{Term: 1}, nil)
	})
	p, err := a.group(t, 3).AppendEntriesPipeline("b", b.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	err = within(t, "AppendEntries with no consumer", func() error {
		for i := range uint64(1000) {
			req := &raft.AppendEntriesRequest{Term: 1, PrevLogEntry: i}
			if _, err := p.AppendEntries(req, new(raft.AppendEntriesResponse)); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		t.Fatal("1000 pipelined sends with nobody reading responses all succeeded")
	}
}

func TestPipelineDisabledWithOneInFlight(t *testing.T) {
	a := startNode(t, "a", Options{MaxInFlight: 1})
	if _, err := a.group(t, 1).AppendEntriesPipeline("b", "127.0.0.1:1"); !errors.Is(err, raft.ErrPipelineReplicationNotSupported) {
		t.Fatalf("AppendEntriesPipeline = %v, want raft.ErrPipelineReplicationNotSupported", err)
	}
}

// TestInstallSnapshotChunks streams snapshots of sizes around the chunk size
// and above gRPC's 4 MiB message limit, and checks raft's reader gets exactly
// the bytes sent.
func TestInstallSnapshotChunks(t *testing.T) {
	const chunk = 64 << 10
	a := startNode(t, "a", Options{SnapshotChunkSize: chunk})
	b := startNode(t, "b", Options{})
	var received atomic.Value
	serve(t, b.group(t, 1), func(rpc raft.RPC) {
		req := rpc.Command.(*raft.InstallSnapshotRequest)
		data, err := io.ReadAll(rpc.Reader)
		received.Store(sha256.Sum256(data))
		rpc.Respond(&raft.InstallSnapshotResponse{Term: req.Term, Success: err == nil && int64(len(data)) == req.Size}, err)
	})
	g := a.group(t, 1)
	for _, size := range []int{0, 1, chunk - 1, chunk, chunk + 1, 5<<20 + 3} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			data := make([]byte, size)
			for i := range data {
				data[i] = byte(i ^ i>>8 ^ i>>16)
			}
			var resp raft.InstallSnapshotResponse
			req := &raft.InstallSnapshotRequest{Term: 4, LastLogIndex: 9, Size: int64(size)}
			if err := g.InstallSnapshot("b", b.addr, req, &resp, bytes.NewReader(data)); err != nil {
				t.Fatal(err)
			}
			if !resp.Success || resp.Term != 4 {
				t.Fatalf("response %+v", resp)
			}
			if got := received.Load().([sha256.Size]byte); got != sha256.Sum256(data) {
				t.Fatal("received snapshot differs from the one sent")
			}
		})
	}
}

// TestInstallSnapshotShortStream checks that a stream carrying fewer bytes
// than announced is reported to raft as io.ErrUnexpectedEOF, not as a
// complete snapshot.
func TestInstallSnapshotShortStream(t *testing.T) {
	a := startNode(t, "a", Options{})
	b := startNode(t, "b", Options{})
	readErr := make(chan error, 1)
	serve(t, b.group(t, 1), func(rpc raft.RPC) {
		_, err := io.ReadAll(rpc.Reader)
		readErr <- err
		rpc.Respond(&raft.InstallSnapshotResponse{}, err)
	})
	req := &raft.InstallSnapshotRequest{Term: 1, Size: 1000}
	err := a.group(t, 1).InstallSnapshot("b", b.addr, req, new(raft.InstallSnapshotResponse), bytes.NewReader(make([]byte, 10)))
	if err == nil {
		t.Fatal("InstallSnapshot of a short stream succeeded")
	}
	if rerr := <-readErr; !errors.Is(rerr, io.ErrUnexpectedEOF) {
		t.Fatalf("raft read %v, want io.ErrUnexpectedEOF", rerr)
	}
}

// TestInstallSnapshotReaderOutlivesRPC checks that raft reading a snapshot
// after its RPC gave up gets an error instead of touching the finished
// stream.
func TestInstallSnapshotReaderOutlivesRPC(t *testing.T) {
	a := startNode(t, "a", Options{Timeout: 300 * time.Millisecond})
	handlerDone := make(chan struct{})
	b := startNode(t, "b", Options{}, grpc.ChainStreamInterceptor(
		func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			defer close(handlerDone)
			return handler(srv, ss)
		}))
	release := make(chan struct{})
	lateRead := make(chan error, 1)
	serve(t, b.group(t, 1), func(rpc raft.RPC) {
		// Take the RPC and stall, as a slow raft would; read once the
		// sender has given up.
		<-release
		_, err := io.ReadAll(rpc.Reader)
		lateRead <- err
		rpc.Respond(&raft.InstallSnapshotResponse{}, err)
	})
	req := &raft.InstallSnapshotRequest{Term: 1, Size: 1024}
	err := a.group(t, 1).InstallSnapshot("b", b.addr, req, new(raft.InstallSnapshotResponse), bytes.NewReader(make([]byte, 1024)))
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("InstallSnapshot = %v, want DeadlineExceeded", err)
	}
	within(t, "the InstallSnapshot handler to return", func() struct{} { return <-handlerDone })
	close(release)
	if err := within(t, "late read", func() error { return <-lateRead }); !errors.Is(err, errSnapshotDetached) {
		t.Fatalf("late read = %v, want errSnapshotDetached", err)
	}
}

// TestDialOptionsApplied checks that injected dial options (interceptors,
// here) are used for the peer connections.
func TestDialOptionsApplied(t *testing.T) {
	var calls atomic.Int64
	count := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		calls.Add(1)
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	a := startNode(t, "a", Options{DialOptions: []grpc.DialOption{grpc.WithUnaryInterceptor(count)}})
	b := startNode(t, "b", Options{})
	serve(t, b.group(t, 1), func(rpc raft.RPC) { rpc.Respond(&raft.TimeoutNowResponse{}, nil) })
	if err := a.group(t, 1).TimeoutNow("b", b.addr, &raft.TimeoutNowRequest{}, new(raft.TimeoutNowResponse)); err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 1 {
		t.Fatalf("interceptor saw %d calls, want 1", calls.Load())
	}
}

// TestClosedNodeEndsHeartbeatStreams: once a node's transport is closed,
// the next batch a peer sends ends that peer's stream, so the node's gRPC
// server can stop gracefully instead of waiting on it.
func TestClosedNodeEndsHeartbeatStreams(t *testing.T) {
	var counts msgCounter
	a := startNode(t, "a", Options{})
	b := startNode(t, "b", Options{}, counts.serverOption())
	g := a.group(t, 1)
	b.group(t, 1).SetHeartbeatHandler(func(rpc raft.RPC) {
		rpc.Respond(&raft.AppendEntriesResponse{Term: 1, Success: true}, nil)
	})
	beat := func() error {
		return g.AppendEntries("b", b.addr, heartbeat(1, a.addr), new(raft.AppendEntriesResponse))
	}
	if err := within(t, "heartbeat", beat); err != nil {
		t.Fatal(err)
	}
	if err := b.node.Close(); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := within(t, "heartbeat", beat); status.Code(errors.Unwrap(err)) != codes.Unavailable && !strings.Contains(fmt.Sprint(err), "is closed") {
			t.Fatalf("heartbeat to a closed node = %v, want Unavailable", err)
		}
	}
	if s := counts.streamsOf(pb.Raft_Heartbeats_FullMethodName); s != 2 {
		t.Fatalf("%d streams opened; want 2: the first ended by the close, the second by its first batch", s)
	}
}
