package node_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ringkv/ringkv/internal/testing/testcluster"
	"github.com/ringkv/ringkv/node"
	pb "github.com/ringkv/ringkv/proto/ringkvpb"
)

// retryNotPrimary calls f until it answers other than NotPrimary, as the
// client does: a request that found no primary (an election under way, as
// 300 ms Raft timing holds now and then on a loaded machine) was not
// applied, so sending it again is safe. Any other answer, Unavailable
// included, is f's last.
func retryNotPrimary(t *testing.T, f func() error) error {
	t.Helper()
	var err error
	waitFor(t, 30*time.Second, "an answer other than NotPrimary", func() (bool, string) {
		err = f()
		return pb.NotPrimaryOf(err) == nil, fmt.Sprint(err)
	})
	return err
}

// TestEveryModeThroughEveryNode: every write and read mode, sent to every
// node, forwarded when that node is not the key's primary. A request that
// met an election is sent again (retryNotPrimary).
func TestEveryModeThroughEveryNode(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	ctx := context.Background()
	writes := []pb.WriteConsistency{pb.WriteConsistency_WRITE_CONSISTENCY_STRONG, pb.WriteConsistency_WRITE_CONSISTENCY_FAST, pb.WriteConsistency_WRITE_CONSISTENCY_UNSPECIFIED}
	reads := []pb.ReadConsistency{pb.ReadConsistency_READ_CONSISTENCY_QUORUM, pb.ReadConsistency_READ_CONSISTENCY_LOCAL}
	for i := range c.Nodes {
		kv := pb.NewKVClient(c.Conn(i))
		for _, w := range writes {
			for k := range 8 {
				key := []byte(fmt.Sprintf("n%d/%v/%d\x00\xff", i, w, k))
				val := append([]byte{0, 0xff}, key...)
				var put *pb.PutResponse
				err := retryNotPrimary(t, func() (err error) {
					put, err = kv.Put(ctx, &pb.PutRequest{Key: key, Value: val, Consistency: w})
					return err
				})
				if err != nil {
					t.Fatalf("node %d put %v: %v", i, w, err)
				}
				for _, r := range reads {
					// Read through another node: the request is forwarded.
					other := pb.NewKVClient(c.Conn((i + 1) % len(c.Nodes)))
					var got *pb.GetResponse
					err := retryNotPrimary(t, func() (err error) {
						got, err = other.Get(ctx, &pb.GetRequest{Key: key, Consistency: r})
						return err
					})
					if w == pb.WriteConsistency_WRITE_CONSISTENCY_FAST && r == pb.ReadConsistency_READ_CONSISTENCY_QUORUM && status.Code(err) == codes.NotFound {
						continue // not yet committed: a quorum read need not see an uncommitted fast write
					}
					if err != nil || !bytes.Equal(got.Value, val) || got.Version != put.Version {
						t.Fatalf("node %d get %v after %v put: %v %v", i, r, w, got, err)
					}
				}
				var del *pb.DeleteResponse
				err = retryNotPrimary(t, func() (err error) {
					del, err = kv.Delete(ctx, &pb.DeleteRequest{Key: key, Consistency: w})
					return err
				})
				if err != nil || del.Version != put.Version+1 {
					t.Fatalf("delete: %v %v", del, err)
				}
			}
		}
	}
}

func TestBadInputIsInvalidArgument(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	kv := pb.NewKVClient(c.Conn(0))
	ctx := context.Background()
	tests := []struct {
		name string
		call func() error
		want string
	}{
		{"empty key", func() error { _, err := kv.Put(ctx, &pb.PutRequest{Value: []byte("v")}); return err }, "key"},
		{"oversize key", func() error {
			_, err := kv.Put(ctx, &pb.PutRequest{Key: bytes.Repeat([]byte("k"), 4097)})
			return err
		}, "4096"},
		{"oversize value", func() error {
			_, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("k"), Value: make([]byte, 1<<20+1)})
			return err
		}, "value"},
		{"unknown write consistency", func() error {
			_, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("k"), Consistency: 7})
			return err
		}, "consistency"},
		{"unknown read consistency", func() error {
			_, err := kv.Get(ctx, &pb.GetRequest{Key: []byte("k"), Consistency: 9})
			return err
		}, "consistency"},
		{"empty key get", func() error { _, err := kv.Get(ctx, &pb.GetRequest{}); return err }, "key"},
		{"empty key delete", func() error { _, err := kv.Delete(ctx, &pb.DeleteRequest{}); return err }, "key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), tc.want) {
				t.Fatalf("got %v, want InvalidArgument mentioning %q", err, tc.want)
			}
		})
	}
	if err := retryNotPrimary(t, func() error {
		_, err := kv.Get(ctx, &pb.GetRequest{Key: []byte("k"), Consistency: pb.ReadConsistency_READ_CONSISTENCY_QUORUM})
		return err
	}); status.Code(err) != codes.NotFound {
		t.Fatalf("bad input wrote something: %v", err)
	}
}

func TestParsePeers(t *testing.T) {
	tests := []struct {
		in      string
		n       int
		wantErr string
	}{
		{"n1=127.0.0.1:7001,n2=127.0.0.1:7002,n3=127.0.0.1:7003", 3, ""},
		{"", 0, ""},
		{"n1", 0, "ID=HOST:PORT"},
		{"n1=nohost", 0, "address"},
		{"n1=a:1,n1=b:2", 0, "twice"},
	}
	for _, tc := range tests {
		got, err := node.ParsePeers(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%q: %v, want error with %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || len(got) != tc.n {
			t.Errorf("%q: %v %v", tc.in, got, err)
		}
	}
}

// TestPrimariesSpreadEvenly checks that leadership settles on each
// partition's preferred primary, which the placement spreads evenly.
func TestPrimariesSpreadEvenly(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Partitions: 8, Tweak: func(cfg *node.Config) {
		cfg.BalanceInterval = 200 * time.Millisecond
	}})
	asg := c.Nodes[0].View().Placement()
	deadline := time.Now().Add(60 * time.Second)
	for {
		counts, misplaced := map[string]int{}, 0
		for _, n := range c.Nodes {
			for _, p := range n.Partitions() {
				if n.Replica(p).IsPrimary() {
					counts[n.ID()]++
					if string(asg.Primary(p)) != n.ID() {
						misplaced++
					}
				}
			}
		}
		if misplaced == 0 && len(counts) == 3 {
			for id, k := range counts {
				if k < 2 || k > 3 {
					t.Fatalf("%s leads %d of 8 partitions, want 2 or 3", id, k)
				}
			}
			t.Logf("primaries per node: %v", counts)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 60s %d partitions are led by a node other than their preferred primary (%v)", misplaced, counts)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestStartFailsCleanly(t *testing.T) {
	tests := []struct {
		name  string
		peers []node.Peer
		want  string
	}{
		{"one node", []node.Peer{{ID: "n1", Addr: "127.0.0.1:1"}}, "at least 3"},
		{"self missing", []node.Peer{{ID: "a", Addr: "127.0.0.1:1"}, {ID: "b", Addr: "127.0.0.1:2"}, {ID: "c", Addr: "127.0.0.1:3"}}, "does not list"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n, err := node.Start(node.Config{ID: "n1", Listen: "127.0.0.1:0", DataDir: t.TempDir(), Peers: tc.peers})
			if err == nil || n != nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Start = %v, %v; want nil and an error with %q", n, err, tc.want)
			}
		})
	}
	// A listen address in use fails Start after the WAL and the gRPC
	// server exist but before anything serves: the cleanup must not wait
	// for a server that never ran (it once did, forever).
	t.Run("address in use", func(t *testing.T) {
		busy, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer busy.Close()
		addr := busy.Addr().String()
		peers := []node.Peer{{ID: "n1", Addr: addr}, {ID: "n2", Addr: "127.0.0.1:1"}, {ID: "n3", Addr: "127.0.0.1:2"}}
		done := make(chan error, 1)
		go func() {
			n, err := node.Start(node.Config{ID: "n1", Listen: addr, DataDir: t.TempDir(), Peers: peers})
			if n != nil {
				n.Close()
			}
			done <- err
		}()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), "address already in use") {
				t.Fatalf("Start on a busy address: %v, want an error naming it", err)
			}
		case <-time.After(time.Minute):
			t.Fatal("Start on a busy address did not return within a minute")
		}
	})
}

func TestForeignClusterRefused(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	// A node whose --peers name two members of the running cluster as the
	// members of a new one.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	peers := []node.Peer{{ID: "x", Addr: lis.Addr().String()}, {ID: "n1", Addr: c.Nodes[0].Addr()}, {ID: "n2", Addr: c.Nodes[1].Addr()}}
	n, err := node.Start(node.Config{ID: "x", Listen: lis.Addr().String(), Listener: lis, DataDir: t.TempDir(), Peers: peers})
	if err == nil {
		n.Close()
		t.Fatal("a node pointed at another cluster's members started")
	}
	if !strings.Contains(err.Error(), "belongs to cluster") {
		t.Fatalf("refused with %v, want an error naming the other cluster", err)
	}

	// Raft RPCs that do not carry the cluster's id are refused too.
	raftc := pb.NewRaftClient(c.Conn(0))
	for _, md := range []metadata.MD{nil, metadata.Pairs("ringkv-cluster-id", "0123456789abcdef")} {
		ctx := metadata.NewOutgoingContext(context.Background(), md)
		_, err := raftc.RequestVote(ctx, &pb.RequestVoteRequest{Partition: 0})
		if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "cluster id mismatch") {
			t.Errorf("RequestVote with metadata %v: %v, want PermissionDenied", md, err)
		}
	}
}

func TestPprofOnlyWhenAsked(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Metrics: true, Tweak: func(cfg *node.Config) {
		cfg.Pprof = cfg.ID == "n1"
	}})
	for i, want := range []int{http.StatusOK, http.StatusNotFound} {
		resp, err := http.Get("http://" + c.Nodes[i].MetricsAddr() + "/debug/pprof/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("node %d: /debug/pprof/ answered %d, want %d", i, resp.StatusCode, want)
		}
	}
}

// TestCloseDrainsBatchStreams: a stopping node ends its open Batch streams
// with Unavailable and the drained trailer (docs/design.md, graceful
// shutdown), so clients resend what it did not answer; without the drain
// the stream would be cut off with no trailer once gRPC gave up waiting.
func TestCloseDrainsBatchStreams(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Partitions: 4})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	stream, err := pb.NewKVClient(c.Conn(0)).Batch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// A served request proves the stream is open on the server before it stops.
	key := []byte("drain")
	if err := stream.Send(&pb.BatchRequest{Requests: []*pb.Request{{Id: 1, Op: &pb.Request_Get{Get: &pb.GetRequest{Key: key}}}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	c.StopNode(0)
	_, err = stream.Recv()
	if status.Code(err) != codes.Unavailable || len(stream.Trailer().Get(pb.BatchDrainedTrailer)) == 0 {
		t.Fatalf("stream ended with %v, trailer %v; want Unavailable and %s", err, stream.Trailer(), pb.BatchDrainedTrailer)
	}
}
