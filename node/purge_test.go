package node_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ringkv/ringkv/internal/testing/testcluster"
	"github.com/ringkv/ringkv/node"
	pb "github.com/ringkv/ringkv/proto/ringkvpb"
)

// TestTombstonesPurged: with a short TombstoneTTL, the control loop of a
// deleted key's primary has the tombstone purged on every replica (the
// ringkv_tombstones gauge shows it, then returns to 0 everywhere), and the
// key's next write starts again at version 1 (docs/design.md, "Versions and
// conflicts").
func TestTombstonesPurged(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Metrics: true, Tweak: func(cfg *node.Config) {
		cfg.TombstoneTTL = 2 * time.Second
	}})
	ctx := context.Background()
	kv := pb.NewKVClient(c.Conn(0))
	key := []byte("purged")
	var resp *pb.PutResponse
	if err := retryNotPrimary(t, func() (err error) {
		resp, err = kv.Put(ctx, &pb.PutRequest{Key: key, Value: []byte("v")})
		return err
	}); err != nil || resp.GetVersion() != 1 {
		t.Fatalf("put: %v, %v", resp, err)
	}
	var del *pb.DeleteResponse
	if err := retryNotPrimary(t, func() (err error) {
		del, err = kv.Delete(ctx, &pb.DeleteRequest{Key: key})
		return err
	}); err != nil || del.GetVersion() != 2 {
		t.Fatalf("delete: %v, %v", del, err)
	}
	tombstones := func() (int, string) {
		n, all := series(t, c, "ringkv_tombstones", func(_ map[string]string, v float64) bool { return v > 0 })
		return n, strings.Join(all, " ")
	}
	// The primary applied the delete before acknowledging it, and it is
	// younger than the TTL.
	if n, all := tombstones(); n == 0 {
		t.Fatalf("no replica counts the tombstone right after the delete: %s", all)
	}
	waitFor(t, 30*time.Second, "the tombstone purged on every replica", func() (bool, string) {
		n, all := tombstones()
		return n == 0, all
	})
	if err := retryNotPrimary(t, func() (err error) {
		resp, err = kv.Put(ctx, &pb.PutRequest{Key: key, Value: []byte("again")})
		return err
	}); err != nil || resp.GetVersion() != 1 {
		t.Fatalf("put after the purge: %v, %v; want version 1", resp, err)
	}
}
