package node_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ringkv/ringkv/internal/testing/testcluster"
	"github.com/ringkv/ringkv/node"
	pb "github.com/ringkv/ringkv/proto/ringkvpb"
	"github.com/ringkv/ringkv/raftgroup"
	"github.com/ringkv/ringkv/shard"
)

// BenchmarkStrongPut64 compares strong-write throughput of a 3-node cluster
// (16 partitions, 64 concurrent clients, 100-byte values) with Raft logs in
// the node's shared WAL against one raft-boltdb file per partition. Clients
// send each key straight to its partition's primary.
//
//	go test ./node -run '^$' -bench StrongPut64 -benchtime 20000x
func BenchmarkStrongPut64(b *testing.B) {
	for _, backend := range []shard.LogBackend{shard.LogWAL, shard.LogBoltDB} {
		b.Run("log="+string(backend), func(b *testing.B) {
			c := testcluster.Start(b, testcluster.Options{Partitions: 16, Tweak: func(cfg *node.Config) {
				cfg.RaftLog = backend
				cfg.WALSegmentSize = 0
				cfg.Raft = raftgroup.Timing{HeartbeatTimeout: time.Second, ElectionTimeout: time.Second, LeaderLeaseTimeout: time.Second, CommitTimeout: 50 * time.Millisecond}
			}})
			kvs := make([]pb.KVClient, len(c.Nodes))
			for i := range c.Nodes {
				kvs[i] = pb.NewKVClient(c.Conn(i))
			}
			primaryOf := func(key []byte) pb.KVClient {
				p := c.Nodes[0].Lookup(key)
				for i, n := range c.Nodes {
					if n.Replica(p).IsPrimary() {
						return kvs[i]
					}
				}
				return kvs[0]
			}
			value := make([]byte, 100)
			const clients = 64
			var next, failed atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for w := range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := next.Add(1)
						if i > int64(b.N) {
							return
						}
						key := []byte(fmt.Sprintf("k%d-%d", w, i))
						if _, err := primaryOf(key).Put(context.Background(), &pb.PutRequest{Key: key, Value: value}); err != nil {
							failed.Add(1)
						}
					}
				}()
			}
			wg.Wait()
			b.ReportMetric(float64(int64(b.N)-failed.Load())/time.Since(start).Seconds(), "writes/s")
			b.ReportMetric(float64(failed.Load()), "errors")
		})
	}
}
