package transport

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/ringkv/ringkv/proto/ringkvpb"
)

// countFSM counts applied commands. Its snapshot is the count followed by
// padding bytes in a position-dependent pattern, which Restore verifies, so
// a lost, repeated or reordered chunk fails the restore.
type countFSM struct {
	padding int

	mu         sync.Mutex
	count      uint64
	restores   int
	restoreErr error
}

func (f *countFSM) Apply(*raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.count++
	return f.count
}

func (f *countFSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return countSnapshot{count: f.count, padding: f.padding}, nil
}

func (f *countFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	err := f.restore(rc)
	f.mu.Lock()
	defer f.mu.Unlock()
	if err != nil {
		f.restoreErr = err
	}
	return err
}

func (f *countFSM) restore(r io.Reader) error {
	var count uint64
	if err := binary.Read(r, binary.BigEndian, &count); err != nil {
		return fmt.Errorf("reading count: %w", err)
	}
	got := make([]byte, padBlock)
	n := 0
	for {
		k, err := io.ReadFull(r, got)
		if k > 0 && !bytes.Equal(got[:k], padding(n, k)) {
			return fmt.Errorf("padding bytes %d to %d differ", n, n+k)
		}
		n += k
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return err
		}
	}
	if n != f.padding {
		return fmt.Errorf("padding is %d bytes, want %d", n, f.padding)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.count = count
	f.restores++
	return nil
}

func (f *countFSM) state() (count uint64, restores int, restoreErr error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.count, f.restores, f.restoreErr
}

const padBlock = 64 << 10

// padding returns the n padding bytes that start at offset off; byte i of
// the padding depends on i's position within and across 1 MiB chunks.
func padding(off, n int) []byte {
	b := make([]byte, n)
	for j := range b {
		i := off + j
		b[j] = byte(i) ^ byte(i>>11) ^ byte(i>>20)
	}
	return b
}

type countSnapshot struct {
	count   uint64
	padding int
}

func (s countSnapshot) Persist(sink raft.SnapshotSink) error {
	err := binary.Write(sink, binary.BigEndian, s.count)
	for off := 0; err == nil && off < s.padding; off += padBlock {
		_, err = sink.Write(padding(off, min(padBlock, s.padding-off)))
	}
	if err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (countSnapshot) Release() {}

// msgCounter counts, per gRPC method, the streams opened on a server and
// the messages received on them.
type msgCounter struct {
	mu            sync.Mutex
	streams, msgs map[string]int
}

func (c *msgCounter) add(m *map[string]int, method string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if *m == nil {
		*m = make(map[string]int)
	}
	(*m)[method]++
}

func (c *msgCounter) get(method string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.msgs[method]
}

func (c *msgCounter) streamsOf(method string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.streams[method]
}

func (c *msgCounter) serverOption() grpc.ServerOption {
	return grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		c.add(&c.streams, info.FullMethod)
		return handler(srv, &countingStream{ServerStream: ss, counter: c, method: info.FullMethod})
	})
}

type countingStream struct {
	grpc.ServerStream
	counter *msgCounter
	method  string
}

func (s *countingStream) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	if err == nil {
		s.counter.add(&s.counter.msgs, s.method)
	}
	return err
}

// raftConfig has short timeouts so elections are quick, but long enough for
// a loaded 2-core machine running the race detector.
func raftConfig(id raft.ServerID) *raft.Config {
	c := raft.DefaultConfig()
	c.LocalID = id
	c.HeartbeatTimeout = 500 * time.Millisecond
	c.ElectionTimeout = 500 * time.Millisecond
	c.LeaderLeaseTimeout = 250 * time.Millisecond
	// Snapshots only when a test asks for one.
	c.SnapshotThreshold = 1 << 40
	c.SnapshotInterval = time.Hour
	c.Logger = hclog.New(&hclog.LoggerOptions{Name: "raft-" + string(id), Level: hclog.Error, Output: os.Stderr})
	return c
}

func voters(nodes []*testNode) []raft.Server {
	servers := make([]raft.Server, len(nodes))
	for i, n := range nodes {
		servers[i] = raft.Server{Suffrage: raft.Voter, ID: n.id, Address: n.addr}
	}
	return servers
}

// startRaft runs one raft replica of partition on tn with in-memory stores,
// bootstrapped with servers, until the test ends.
func startRaft(t *testing.T, tn *testNode, partition uint32, fsm raft.FSM, servers []raft.Server, tweak func(*raft.Config)) *raft.Raft {
	t.Helper()
	g := tn.group(t, partition)
	conf := raftConfig(tn.id)
	if tweak != nil {
		tweak(conf)
	}
	logs := raft.NewInmemStore()
	snaps := raft.NewInmemSnapshotStore()
	if err := raft.BootstrapCluster(conf, logs, logs, snaps, g, raft.Configuration{Servers: servers}); err != nil {
		t.Fatal(err)
	}
	r, err := raft.NewRaft(conf, fsm, logs, logs, snaps, g)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Shutdown().Error(); err != nil {
			t.Errorf("raft %s partition %d shutdown: %v", tn.id, partition, err)
		}
	})
	return r
}

func waitLeader(t *testing.T, rafts []*raft.Raft) *raft.Raft {
	t.Helper()
	var leader *raft.Raft
	waitFor(t, "a leader", func() bool {
		for _, r := range rafts {
			if r.State() == raft.Leader {
				leader = r
				return true
			}
		}
		return false
	})
	return leader
}

// applyN commits n commands through whichever replica leads, retrying across
// leader changes. A retried command may have committed too, so callers wait
// for at least n.
func applyN(t *testing.T, rafts []*raft.Raft, n int) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for applied := 0; applied < n; {
		if time.Now().After(deadline) {
			t.Fatalf("applied %d of %d commands within %v", applied, n, waitTimeout)
		}
		if err := waitLeader(t, rafts).Apply([]byte("+1"), 5*time.Second).Error(); err != nil {
			continue
		}
		applied++
	}
}

func waitCount(t *testing.T, what string, fsms []*countFSM, atLeast uint64) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%s to apply %d commands", what, atLeast), func() bool {
		for _, f := range fsms {
			if c, _, _ := f.state(); c < atLeast {
				return false
			}
		}
		return true
	})
}

// TestRaftGroupsShareTransport runs several 3-member raft groups over three
// nodes' shared transports, then shuts one replica down and checks that the
// other groups, on the same connections, keep committing.
func TestRaftGroupsShareTransport(t *testing.T) {
	const partitions = 4
	var counter msgCounter
	type follower struct {
		partition uint32
		addr      raft.ServerAddress
	}
	var lagMu sync.Mutex
	lastLog := make(map[follower]uint64)
	opts := Options{OnAppendResponse: func(r AppendResponse) {
		lagMu.Lock()
		defer lagMu.Unlock()
		k := follower{r.Partition, r.Addr}
		lastLog[k] = max(lastLog[k], r.LastLog)
	}}
	nodes := []*testNode{
		startNode(t, "n0", opts, counter.serverOption()),
		startNode(t, "n1", opts, counter.serverOption()),
		startNode(t, "n2", opts, counter.serverOption()),
	}
	rafts := make([][]*raft.Raft, partitions)
	fsms := make([][]*countFSM, partitions)
	for p := range uint32(partitions) {
		for _, n := range nodes {
			f := &countFSM{}
			fsms[p] = append(fsms[p], f)
			rafts[p] = append(rafts[p], startRaft(t, n, p, f, voters(nodes), nil))
		}
	}

	for p := range partitions {
		applyN(t, rafts[p], 50)
	}
	for p := range partitions {
		waitCount(t, fmt.Sprintf("partition %d", p), fsms[p], 50)
	}
	if got := counter.get(pb.Raft_AppendEntriesPipeline_FullMethodName); got == 0 {
		t.Error("no AppendEntries went through a pipeline")
	}
	// The observer lets a leader see how far each follower got.
	for p := range uint32(partitions) {
		waitFor(t, fmt.Sprintf("observed follower progress of partition %d", p), func() bool {
			leader := waitLeader(t, rafts[p])
			_, leaderID := leader.LeaderWithID()
			lagMu.Lock()
			defer lagMu.Unlock()
			for _, n := range nodes {
				if n.id != leaderID && lastLog[follower{p, n.addr}] < leader.LastIndex() {
					return false
				}
			}
			return true
		})
	}

	// Shut down partition 0's replica on n0: its Group closes, the node's
	// server and connections stay.
	if err := rafts[0][0].Shutdown().Error(); err != nil {
		t.Fatal(err)
	}
	stopped, _, _ := fsms[0][0].state()
	for p := range partitions {
		if p == 0 {
			applyN(t, rafts[0][1:], 20)
			waitCount(t, "partition 0 without n0", fsms[0][1:], 70)
			continue
		}
		applyN(t, rafts[p], 20)
		waitCount(t, fmt.Sprintf("partition %d", p), fsms[p], 70)
	}
	if c, _, _ := fsms[0][0].state(); c != stopped {
		t.Errorf("shut down replica went on applying: %d commands, %d at shutdown", c, stopped)
	}
}

// isolator cuts one node off: RPCs from or to it fail at once, as in a
// network partition, and so do messages on streams opened before the cut
// (raft's pipeline would otherwise keep the follower in contact). It counts
// the RPCs and stream messages the isolated node attempts.
type isolator struct {
	mu       sync.Mutex
	isolated raft.ServerAddress
	attempts map[string]int
}

func (p *isolator) set(addr raft.ServerAddress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.isolated = addr
	p.attempts = make(map[string]int)
}

func (p *isolator) attempted(method string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.attempts[method]
}

func (p *isolator) cut(from, to raft.ServerAddress, method string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.isolated == "" || (from != p.isolated && to != p.isolated) {
		return nil
	}
	if from == p.isolated {
		p.attempts[method]++
	}
	return status.Error(codes.Unavailable, "test: network partition")
}

func (p *isolator) dialOptions(from raft.ServerAddress) []grpc.DialOption {
	unary := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if err := p.cut(from, raft.ServerAddress(cc.Target()), method); err != nil {
			return err
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	stream := func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		to := raft.ServerAddress(cc.Target())
		if err := p.cut(from, to, method); err != nil {
			return nil, err
		}
		cs, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil {
			return nil, err
		}
		return &cutStream{ClientStream: cs, send: func() error { return p.cut(from, to, method) }}, nil
	}
	return []grpc.DialOption{grpc.WithChainUnaryInterceptor(unary), grpc.WithChainStreamInterceptor(stream)}
}

type cutStream struct {
	grpc.ClientStream
	send func() error
}

func (s *cutStream) SendMsg(m any) error {
	if err := s.send(); err != nil {
		return err
	}
	return s.ClientStream.SendMsg(m)
}

// TestPreVote isolates a follower until it has tried to get elected twice.
// With pre-vote, which needs the transport's RequestPreVote, it never raises
// its term, so on rejoining it cannot depose the leader; without pre-vote
// every attempt raises it.
func TestPreVote(t *testing.T) {
	tests := []struct {
		name     string
		disabled bool
		method   string
	}{
		{"enabled", false, pb.Raft_RequestPreVote_FullMethodName},
		{"disabled", true, pb.Raft_RequestVote_FullMethodName},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var cut isolator
			var nodes []*testNode
			for i := range 3 {
				lis := listen(t)
				opts := Options{DialOptions: cut.dialOptions(raft.ServerAddress(lis.Addr().String()))}
				nodes = append(nodes, serveNode(t, lis, fmt.Sprintf("n%d", i), opts))
			}
			var rafts []*raft.Raft
			var fsms []*countFSM
			for _, n := range nodes {
				f := &countFSM{}
				fsms = append(fsms, f)
				rafts = append(rafts, startRaft(t, n, 1, f, voters(nodes), func(c *raft.Config) {
					c.PreVoteDisabled = tt.disabled
				}))
			}
			applyN(t, rafts, 1)
			waitCount(t, "all replicas", fsms, 1)

			leader := waitLeader(t, rafts)
			f := 0
			for rafts[f] == leader {
				f++
			}
			termBefore := rafts[f].CurrentTerm()
			cut.set(nodes[f].addr)
			waitFor(t, "two election attempts by the isolated node", func() bool {
				return cut.attempted(tt.method) >= 2*(len(nodes)-1)
			})
			isolatedTerm := rafts[f].CurrentTerm()
			cut.set("")

			if bumped := isolatedTerm > termBefore; bumped != tt.disabled {
				t.Errorf("isolated node's term went from %d to %d; pre-vote disabled: %v", termBefore, isolatedTerm, tt.disabled)
			}
			// Either way the node rejoins and the group keeps committing.
			applyN(t, rafts, 1)
			waitCount(t, "all replicas after the partition healed", fsms, 2)
		})
	}
}

// TestInstallSnapshotOverMessageLimit brings a replica that missed the log up
// to date from a snapshot larger than gRPC's default 4 MiB message limit
// (the servers keep that default).
func TestInstallSnapshotOverMessageLimit(t *testing.T) {
	const (
		partition = 7
		padding   = 8 << 20
		commands  = 20
	)
	var counter msgCounter
	nodes := []*testNode{
		startNode(t, "n0", Options{}, counter.serverOption()),
		startNode(t, "n1", Options{}, counter.serverOption()),
		startNode(t, "n2", Options{}, counter.serverOption()),
	}
	compactAll := func(c *raft.Config) { c.TrailingLogs = 0 }
	fsms := []*countFSM{{padding: padding}, {padding: padding}, {padding: padding}}
	// n2 does not host the partition yet; the leader's RPCs to it fail
	// with ErrUnknownPartition meanwhile.
	rafts := []*raft.Raft{
		startRaft(t, nodes[0], partition, fsms[0], voters(nodes), compactAll),
		startRaft(t, nodes[1], partition, fsms[1], voters(nodes), compactAll),
	}
	applyN(t, rafts, commands)
	waitCount(t, "n0 and n1", fsms[:2], commands)
	for _, r := range rafts {
		if err := r.Snapshot().Error(); err != nil {
			t.Fatal(err)
		}
	}

	rafts = append(rafts, startRaft(t, nodes[2], partition, fsms[2], voters(nodes), compactAll))
	waitFor(t, "n2 to restore the snapshot", func() bool {
		_, restores, err := fsms[2].state()
		if err != nil {
			t.Fatalf("restore on n2: %v", err)
		}
		return restores > 0
	})
	if count, _, _ := fsms[2].state(); count < commands {
		t.Errorf("n2 restored count %d, want at least %d", count, commands)
	}
	// The request, then at least padding/chunk data messages.
	if got, want := counter.get(pb.Raft_InstallSnapshot_FullMethodName), 1+padding/DefaultSnapshotChunkSize; got < want {
		t.Errorf("InstallSnapshot carried %d messages, want at least %d", got, want)
	}
	// Replication continues from the snapshot.
	applyN(t, rafts, 1)
	waitCount(t, "all replicas", fsms, commands+1)
}
