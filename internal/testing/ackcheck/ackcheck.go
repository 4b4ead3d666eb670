// Package ackcheck drives strong writes from several clients during a test
// and then checks that every acknowledged one reads back with a quorum read:
// the durability check of tests that move, kill and restart nodes.
//
// Each key is written by one writer, one write at a time, so what a key
// holds in the end is known: the value and version of its last acknowledged
// write, versions growing from write to write. A write whose outcome is
// unknown (it failed: it may or may not have been applied) ends its key,
// which is written no more and may then hold that write's value at a
// greater version. With Options.CountVersions, a key's version must also
// count its writes: every acknowledged write carries the version after the
// previous one, so a write applied twice under two versions shows.
package ackcheck

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/status"

	"github.com/ringkv/ringkv/client"
)

// Options shape the writes of StartWith. Start(c, n) is
// StartWith(c, Options{Writers: n}).
type Options struct {
	// Writers is the number of concurrent writers, each with keys of its
	// own.
	Writers int
	// Keys, if positive, is how many keys each writer keeps and writes in
	// turn, over and over, so that every key is overwritten many times; a
	// key ended by a failed write is replaced by a fresh one. Zero gives
	// every write a fresh key.
	Keys int
	// MinValue and MaxValue, if MaxValue is positive, bound the size of each
	// value (pseudo-random bytes, which do not compress); otherwise values
	// are short strings.
	MinValue, MaxValue int
	// Seed makes the value sizes and bytes reproducible.
	Seed uint64
	// CountVersions requires a key's versions to count its writes: 1, 2, 3
	// and so on. A primary that proposes a write and sees the proposal
	// refused before it reaches the log (a leadership transfer under way)
	// may skip the version it gave it, so a test asking for this must keep
	// leadership where it is (kvnode --balance-interval -1s, no SIGTERM while
	// writing).
	CountVersions bool
}

// Expect is what a key may hold once the writers have stopped.
type Expect struct {
	// Acked is the number of acknowledged writes of the key.
	Acked uint64
	// Version and Value are those of the last acknowledged write.
	Version uint64
	Value   []byte
	// Unknown says the key's last write failed: it may have been applied,
	// and then the key holds UnknownValue at a version after Version (the
	// next one, with Counted).
	Unknown      bool
	UnknownValue []byte
	// Counted says versions count writes (Options.CountVersions).
	Counted bool
}

// Check says whether a read of the key that found (value, version), or found
// nothing, is what the writes allow.
func (e Expect) Check(found bool, value []byte, version uint64) error {
	unknownOK := e.Unknown && bytes.Equal(value, e.UnknownValue) &&
		(version == e.Version+1 || !e.Counted && version > e.Version)
	switch {
	case !found && e.Acked == 0:
		return nil
	case !found:
		return fmt.Errorf("not found, want version %d (%d acknowledged writes)", e.Version, e.Acked)
	case e.Acked > 0 && version == e.Version && bytes.Equal(value, e.Value), unknownOK:
		return nil
	}
	what := "a value of no acknowledged last write"
	switch {
	case e.Acked > 0 && bytes.Equal(value, e.Value):
		what = "the value of its last acknowledged write"
	case e.Unknown && bytes.Equal(value, e.UnknownValue):
		what = "the value of its failed last write"
	}
	want := fmt.Sprintf("version %d", e.Version)
	if e.Unknown {
		want += " or, holding the value of its failed last write, a later one"
		if e.Counted {
			want = fmt.Sprintf("version %d or, holding the value of its failed last write, %d", e.Version, e.Version+1)
		}
	}
	return fmt.Errorf("version %d holding %s (%d bytes), want %s (%d acknowledged writes)", version, what, len(value), want, e.Acked)
}

// Writers keeps strong writes going and remembers the acknowledged ones.
type Writers struct {
	c      *client.Client
	opts   Options
	mu     sync.Mutex
	keys   map[string]*Expect
	acked  int
	errors map[string]int // by gRPC code
	// misnumbered lists the keys whose acknowledged writes were given
	// versions that do not grow (or, with CountVersions, do not count).
	misnumbered []string
	stop        chan struct{}
	wg          sync.WaitGroup
}

// Start starts n writers on c, each writing every write to a fresh key of
// its own, with short values.
func Start(c *client.Client, n int) *Writers { return StartWith(c, Options{Writers: n}) }

// StartWith starts opts.Writers writers on c.
func StartWith(c *client.Client, opts Options) *Writers {
	w := &Writers{c: c, opts: opts, keys: map[string]*Expect{}, errors: map[string]int{}, stop: make(chan struct{})}
	for i := range opts.Writers {
		w.wg.Add(1)
		go w.write(i)
	}
	return w
}

func (w *Writers) write(i int) {
	defer w.wg.Done()
	rng := rand.New(rand.NewPCG(w.opts.Seed, uint64(i)))
	fresh := 0
	newKey := func() string {
		fresh++
		return fmt.Sprintf("w%d/%d", i, fresh-1)
	}
	keys := make([]string, max(w.opts.Keys, 1))
	for k := range keys {
		keys[k] = newKey()
	}
	for n := 0; ; n++ {
		select {
		case <-w.stop:
			return
		default:
		}
		slot := n % len(keys)
		key := keys[slot]
		val := []byte(fmt.Sprintf("v%d", n))
		if w.opts.MaxValue > 0 {
			val = make([]byte, w.opts.MinValue+rng.IntN(w.opts.MaxValue-w.opts.MinValue+1))
			for j := range val {
				val[j] = byte(rng.Uint32())
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		res, err := w.c.Put(ctx, []byte(key), val, client.Strong)
		cancel()
		w.mu.Lock()
		e := w.keys[key]
		if e == nil {
			e = &Expect{Counted: w.opts.CountVersions}
			w.keys[key] = e
		}
		if err == nil {
			e.Acked++
			if res.Version <= e.Version || w.opts.CountVersions && res.Version != e.Acked {
				w.misnumbered = append(w.misnumbered, fmt.Sprintf("%s: acknowledged write %d was given version %d, after version %d", key, e.Acked, res.Version, e.Version))
			}
			e.Version, e.Value = res.Version, val
			w.acked++
		} else {
			e.Unknown, e.UnknownValue = true, val
			w.errors[status.Code(err).String()]++
		}
		w.mu.Unlock()
		if err != nil || w.opts.Keys == 0 {
			keys[slot] = newKey()
		}
	}
}

// Acked is the number of writes acknowledged so far.
func (w *Writers) Acked() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.acked
}

// Stop stops the writers and waits for them; Finish calls it.
func (w *Writers) Stop() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	w.wg.Wait()
}

// Expected returns what every key written may hold; call it after Stop.
func (w *Writers) Expected() map[string]Expect {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make(map[string]Expect, len(w.keys))
	for k, e := range w.keys {
		out[k] = *e
	}
	return out
}

// Finish stops the writers and reads every key written back with a quorum
// read, failing t if a key misses its last acknowledged write or holds it at
// another version, or acknowledged writes of a key were given versions that
// do not grow (with CountVersions: do not count them).
func (w *Writers) Finish(t testing.TB) {
	t.Helper()
	w.Stop()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.acked == 0 {
		t.Fatal("no write was acknowledged")
	}
	for _, m := range w.misnumbered[:min(len(w.misnumbered), 5)] {
		t.Errorf("misnumbered: %s", m)
	}
	if len(w.misnumbered) > 0 {
		t.Fatalf("%d acknowledged writes were given versions out of sequence", len(w.misnumbered))
	}
	keys := make([]string, 0, len(w.keys))
	unknown := 0
	for k, e := range w.keys {
		keys = append(keys, k)
		if e.Unknown {
			unknown++
		}
	}
	sort.Strings(keys)
	var (
		errMu  sync.Mutex
		failed []string
		wg     sync.WaitGroup
		next   = make(chan string)
	)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range next {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				it, err := w.c.Get(ctx, []byte(k), client.Quorum)
				cancel()
				found := err == nil
				if errors.Is(err, client.ErrNotFound) {
					err = nil
				}
				if err == nil {
					err = w.keys[k].Check(found, it.Value, it.Version)
				}
				if err != nil {
					errMu.Lock()
					failed = append(failed, fmt.Sprintf("%s: %v", k, err))
					errMu.Unlock()
				}
			}
		}()
	}
	for _, k := range keys {
		next <- k
	}
	close(next)
	wg.Wait()
	sort.Strings(failed)
	for _, f := range failed[:min(len(failed), 5)] {
		t.Errorf("quorum read of %s", f)
	}
	if len(failed) > 0 {
		t.Fatalf("%d of %d keys read back wrong", len(failed), len(keys))
	}
	versions := "growing versions"
	if w.opts.CountVersions {
		versions = "versions counting their writes"
	}
	t.Logf("%d acknowledged strong writes to %d keys, with %s, all read back with quorum reads (%d keys ended by a write of unknown outcome); failed writes by code: %v",
		w.acked, len(keys), versions, unknown, w.errors)
}
