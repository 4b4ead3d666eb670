package chaos

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ringkv/ringkv/internal/testing/proccluster"
	pb "github.com/ringkv/ringkv/proto/ringkvpb"
)

// TestKill9DuringDeepJournal: a primary cut off from its followers goes on
// acknowledging fast writes until its lease runs out, and none of them can
// commit, so its journal holds them all when it is killed with SIGKILL.
// The others elect a new primary meanwhile. Once the killed node is back,
// it re-offers its journal: every fast write it acknowledged is readable
// with a quorum read, at the version it was acknowledged with (no one else
// wrote those keys).
func TestKill9DuringDeepJournal(t *testing.T) {
	c := procTarget{proccluster.Start(t, kvnodeBin, proccluster.Options{Partitions: 4})}
	c.WaitPrimaries()
	x, ok := c.Leaders()[0]
	if !ok {
		t.Fatal("partition 0 has no primary")
	}
	r := c.Ring()
	var keys []string
	for i := 0; len(keys) < 4000; i++ {
		if key := fmt.Sprint("deep-", i); r.Lookup([]byte(key)) == 0 {
			keys = append(keys, key)
		}
	}
	c.Cut(t, isolating(c, x))

	var mu sync.Mutex
	acked := map[string]uint64{}
	var wg sync.WaitGroup
	const writers = 8
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(keys); i += writers {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				resp, err := c.KV(x).Put(ctx, &pb.PutRequest{Key: []byte(keys[i]), Value: []byte(keys[i]), Consistency: pb.WriteConsistency_WRITE_CONSISTENCY_FAST})
				cancel()
				if err != nil {
					return // the lease ran out
				}
				mu.Lock()
				acked[keys[i]] = resp.GetVersion()
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(acked) < 20 {
		t.Fatalf("the cut-off primary acknowledged %d fast writes; the test needs 20", len(acked))
	}
	c.Kill(x)
	c.Cut(t, nil)
	c.Start(x)
	c.WaitPrimaries()
	// The restarted node delivers its journal in the background: a key
	// missing now may arrive, within the deadline.
	lost := 0
	deadline := time.Now().Add(60 * time.Second)
	for key, version := range acked {
		for {
			got, err := finalRead(c, key)
			if err == nil && got.GetVersion() == version && string(got.GetValue()) == key {
				break
			}
			if time.Now().After(deadline) {
				lost++
				if lost <= 5 {
					t.Errorf("acknowledged fast write %s v%d: read v%d %q, %v", key, version, got.GetVersion(), got.GetValue(), err)
				}
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	t.Logf("%d fast writes acknowledged by the cut-off primary before its lease ran out, %d lost", len(acked), lost)
}
