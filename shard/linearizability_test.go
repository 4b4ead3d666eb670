package shard

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/ringkv/ringkv/internal/testing/kvmodel"
)

// history records operations with invocation and completion times.
type history struct {
	mu    sync.Mutex
	start time.Time
	ops   []porcupine.Operation
}

func (h *history) now() int64 { return int64(time.Since(h.start)) }

func (h *history) add(client int, in kvmodel.Input, out kvmodel.Output, call, ret int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ops = append(h.ops, porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret})
}

// TestLinearizableUnderPartitions runs concurrent strong writes and quorum
// reads on a small key space while a nemesis isolates replicas (the primary
// among them) and heals them, then checks the history with Porcupine. A
// write whose outcome is unknown (Unavailable) may take effect at any time
// after its call; a refused one (NotPrimary) never happened.
func TestLinearizableUnderPartitions(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("RINGKV_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("seed %d (rerun with RINGKV_SEED=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, seed))

	g := newGroup(t, func(c *Config) { c.OpTimeout = time.Second })
	g.leader()
	h := &history{start: time.Now()}
	const clients, keys = 6, 4
	duration := 6 * time.Second
	deadline := time.Now().Add(duration)

	primary := func() *Replica {
		for _, id := range g.ids {
			if r := g.reps[id]; r.IsPrimary() {
				return r
			}
		}
		return g.reps[g.ids[0]]
	}

	var wg sync.WaitGroup
	for c := range clients {
		crng := rand.New(rand.NewPCG(seed, uint64(c)+1))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; time.Now().Before(deadline); n++ {
				key := fmt.Sprintf("k%d", crng.IntN(keys))
				r := primary()
				ctx := context.Background()
				call := h.now()
				switch x := crng.IntN(10); {
				case x < 4:
					in := kvmodel.Input{Op: "put", Key: key, Value: fmt.Sprintf("c%d-%d", c, n)}
					_, err := r.Put(ctx, []byte(key), []byte(in.Value), Strong)
					recordWrite(h, c, in, call, err)
				case x < 5:
					in := kvmodel.Input{Op: "del", Key: key}
					_, err := r.Delete(ctx, []byte(key), Strong)
					recordWrite(h, c, in, call, err)
				default:
					it, err := r.Get(ctx, []byte(key), Quorum)
					switch {
					case err == nil:
						h.add(c, kvmodel.Input{Op: "get", Key: key}, kvmodel.Output{Value: string(it.Value), Found: true}, call, h.now())
					case errors.Is(err, ErrNotFound):
						h.add(c, kvmodel.Input{Op: "get", Key: key}, kvmodel.Output{}, call, h.now())
					}
				}
			}
		}()
	}

	faults := 0
	for time.Now().Before(deadline) {
		time.Sleep(time.Duration(300+rng.IntN(500)) * time.Millisecond)
		g.connectAll()
		switch rng.IntN(3) {
		case 0:
			g.isolate(primary().cfg.NodeID)
			faults++
		case 1:
			g.isolate(g.ids[rng.IntN(len(g.ids))])
			faults++
		}
	}
	g.connectAll()
	wg.Wait()

	h.mu.Lock()
	defer h.mu.Unlock()
	res, info := porcupine.CheckOperationsVerbose(kvmodel.Model, h.ops, time.Minute)
	t.Logf("%d operations, %d faults injected: %s", len(h.ops), faults, res)
	if res == porcupine.Illegal {
		path := filepath.Join(os.TempDir(), fmt.Sprintf("ringkv-linearizability-%d.html", seed))
		if err := porcupine.VisualizePath(kvmodel.Model, info, path); err != nil {
			t.Log(err)
		}
		t.Fatalf("history is not linearizable; visualization: %s", path)
	}
	if res != porcupine.Ok {
		t.Fatalf("linearizability check: %s", res)
	}
	g.converged()
}

// recordWrite adds a write to the history: acknowledged writes with their
// completion time, writes of unknown outcome as pending forever, refused
// ones not at all.
func recordWrite(h *history, client int, in kvmodel.Input, call int64, err error) {
	switch {
	case err == nil:
		h.add(client, in, kvmodel.Output{}, call, h.now())
	case errors.Is(err, ErrNotPrimary):
	default:
		h.add(client, in, kvmodel.Output{}, call, math.MaxInt64)
	}
}
