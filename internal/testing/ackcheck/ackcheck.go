// Package ackcheck drives strong writes from several clients during a test
// and then checks that every acknowledged one reads back with a quorum read:
// the durability check of tests that move, kill and restart nodes.
package ackcheck

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/status"

	"github.com/ringkv/ringkv/client"
)

// Writers keeps strong writes going and remembers the acknowledged ones.
type Writers struct {
	c      *client.Client
	mu     sync.Mutex
	acked  map[string]string
	errors map[string]int // by gRPC code
	stop   chan struct{}
	wg     sync.WaitGroup
}

// Start starts n writers on c, each writing keys of its own.
func Start(c *client.Client, n int) *Writers {
	w := &Writers{c: c, acked: map[string]string{}, errors: map[string]int{}, stop: make(chan struct{})}
	for i := range n {
		w.wg.Add(1)
		go w.write(i)
	}
	return w
}

func (w *Writers) write(i int) {
	defer w.wg.Done()
	for k := 0; ; k++ {
		select {
		case <-w.stop:
			return
		default:
		}
		key, val := fmt.Sprintf("w%d/%d", i, k), fmt.Sprintf("v%d", k)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := w.c.Put(ctx, []byte(key), []byte(val), client.Strong)
		cancel()
		w.mu.Lock()
		if err == nil {
			w.acked[key] = val
		} else {
			w.errors[status.Code(err).String()]++
		}
		w.mu.Unlock()
	}
}

// Acked is the number of writes acknowledged so far.
func (w *Writers) Acked() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acked)
}

// Finish stops the writers and reads every acknowledged write back with a
// quorum read, failing t on the first that is missing or different.
func (w *Writers) Finish(t testing.TB) {
	t.Helper()
	close(w.stop)
	w.wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.acked) == 0 {
		t.Fatal("no write was acknowledged")
	}
	for k, v := range w.acked {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		it, err := w.c.Get(ctx, []byte(k), client.Quorum)
		cancel()
		if err != nil || string(it.Value) != v {
			t.Fatalf("acknowledged %s=%s: read %q, %v", k, v, it.Value, err)
		}
	}
	t.Logf("%d acknowledged strong writes all read back with quorum reads; failed writes by code: %v", len(w.acked), w.errors)
}
