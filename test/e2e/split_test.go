package e2e

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ringkv/ringkv/client"
	"github.com/ringkv/ringkv/internal/testing/ackcheck"
	"github.com/ringkv/ringkv/internal/testing/proccluster"
	"github.com/ringkv/ringkv/internal/testing/wait"
	"github.com/ringkv/ringkv/ring"
)

// splitArgs keep a cluster at the partitions a test gives it: no split for
// its size or its partitions' sizes.
var splitArgs = []string{"--partitions-per-node", "-1", "--split-size", "-1"}

// waitPartitions waits until the newest map has n partitions and none is
// moving.
func waitPartitions(t *testing.T, c *proccluster.Cluster, n int, d time.Duration) {
	t.Helper()
	wait.For(t, d, fmt.Sprintf("%d partitions, none moving", n), func() (bool, string) {
		m := c.Map()
		if m == nil || int(m.GetPartitions()) != n {
			return false, fmt.Sprintf("%d partitions", m.GetPartitions())
		}
		return settled(m, "n1", "n2", "n3")
	})
}

// TestSplitDuringKill9 splits a 3-node cluster from 4 partitions to 8
// while writers write and a node is killed with SIGKILL mid-way and
// restarted, and another right after the splits: every acknowledged write
// reads back, and every partition's replicas, split children included,
// hold byte-identical state.
func TestSplitDuringKill9(t *testing.T) {
	c := proccluster.Start(t, kvnodeBin, proccluster.Options{Partitions: 4, Args: append(membershipArgs("10m"), splitArgs...)})
	cl := newClient(t, c)
	w := ackcheck.StartWith(cl, ackcheck.Options{Writers: 8, Keys: 64})
	defer w.Stop()
	waitWrites(t, w, 300, "before the split")
	if err := c.Split(8); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 60*time.Second, "the first split", func() (bool, string) {
		n := c.Map().GetPartitions()
		return n > 4, fmt.Sprintf("%d partitions", n)
	})
	victim := c.Procs[rand.IntN(len(c.Procs))]
	c.Kill(victim)
	t.Logf("killed %s with the map at %d partitions", victim.ID, c.Map().GetPartitions())
	waitWrites(t, w, 200, "while "+victim.ID+" is down")
	c.Start(victim)
	waitPartitions(t, c, 8, 2*time.Minute)
	// Killed right after the splits, a node loses the parents' split
	// batches, still in its memtable (no engine WAL), but not the
	// children, ingested durably: it restarts with children whose parents
	// replay their splits, and opens them once they have.
	again := c.Procs[0]
	c.Kill(again)
	c.Start(again)
	c.WaitCaughtUp(again, 90*time.Second)
	waitWrites(t, w, 200, "after the splits")
	w.Finish(t)
	checkReplicasEqual(t, c, w)
}

var splitBench = flag.Bool("split.bench", false, "run BenchSplit: measure the write unavailability of splitting partitions (make bench-split)")

// TestBenchSplit measures what a split costs the writers of the partition
// it splits, on real processes: 3 nodes, splitKeys keys loaded, 64 clients
// writing (strong) keys at random, and the cluster split one partition at
// a time from 4 to 8 partitions. For each split it reports the latencies
// of the writes to the splitting partition that overlapped the split
// (from the Admin.Split call to the map with the child, plus a second for
// clients to refresh), and their errors. The target (docs/benchmarks.md)
// is a p99 of at most 500 ms.
func TestBenchSplit(t *testing.T) {
	if !*splitBench {
		t.Skip("a benchmark: make bench-split")
	}
	const (
		splitKeys = 200_000
		valueSize = 100
		clients   = 64
	)
	c := proccluster.Start(t, kvnodeBin, proccluster.Options{Partitions: 4, Args: splitArgs})
	cl := newClient(t, c)
	value := make([]byte, valueSize)
	load := make(chan int)
	var lwg sync.WaitGroup
	for range clients {
		lwg.Add(1)
		go func() {
			defer lwg.Done()
			for i := range load {
				if _, err := cl.Put(context.Background(), fmt.Appendf(nil, "key%08d", i), value, client.Strong); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	start := time.Now()
	for i := range splitKeys {
		load <- i
	}
	close(load)
	lwg.Wait()
	t.Logf("loaded %d keys of %d bytes in %v", splitKeys, valueSize, time.Since(start).Round(time.Millisecond))

	type sample struct {
		at, took time.Duration
		key      []byte
		err      bool
	}
	var mu sync.Mutex
	var samples []sample
	epoch := time.Now()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for {
				select {
				case <-stop:
					return
				default:
				}
				key := fmt.Appendf(nil, "key%08d", rng.IntN(splitKeys))
				t0 := time.Now()
				_, err := cl.Put(context.Background(), key, value, client.Strong)
				s := sample{at: t0.Sub(epoch), took: time.Since(t0), key: key, err: err != nil}
				mu.Lock()
				samples = append(samples, s)
				mu.Unlock()
			}
		}()
	}
	time.Sleep(3 * time.Second) // steady state before the first split: the measurement's baseline, not a wait for a condition
	type window struct {
		parent     ring.PartitionID
		from, to   time.Duration
		partitions int
	}
	var windows []window
	for n := 5; n <= 8; n++ {
		m := c.Map()
		r, err := ring.Grown(int(m.GetInitialPartitions()), int(m.GetPartitions()))
		if err != nil {
			t.Fatal(err)
		}
		parent, _, _ := r.NextSplit()
		from := time.Since(epoch)
		if err := c.Split(n); err != nil {
			t.Fatal(err)
		}
		wait.For(t, time.Minute, fmt.Sprintf("%d partitions", n), func() (bool, string) {
			got := c.Map().GetPartitions()
			return int(got) == n, fmt.Sprintf("%d partitions", got)
		})
		windows = append(windows, window{parent: parent, from: from, to: time.Since(epoch), partitions: n})
		time.Sleep(2 * time.Second) // between splits, as above
	}
	close(stop)
	wg.Wait()

	q := func(d []time.Duration, f float64) time.Duration {
		if len(d) == 0 {
			return 0
		}
		return d[min(len(d)-1, int(f*float64(len(d))))].Round(time.Millisecond)
	}
	fmt.Printf("\n%-10s %-9s %9s %9s %9s %9s %9s %7s\n", "split", "window", "requests", "p50", "p99", "max", "all p99", "errors")
	for _, win := range windows {
		// The parent's keys before this split: those of its range on the
		// ring before it.
		before, err := ring.Grown(4, win.partitions-1)
		if err != nil {
			t.Fatal(err)
		}
		var lat, all []time.Duration
		errs := 0
		for _, s := range samples {
			if s.at+s.took < win.from || s.at > win.to+time.Second {
				continue
			}
			all = append(all, s.took)
			if before.Lookup(s.key) != win.parent {
				continue
			}
			lat = append(lat, s.took)
			if s.err {
				errs++
			}
		}
		slices.Sort(lat)
		slices.Sort(all)
		fmt.Printf("%-10s %-9s %9d %9v %9v %9v %9v %7d\n", fmt.Sprintf("%d->%d", win.parent, win.partitions-1), (win.to - win.from).Round(time.Millisecond),
			len(lat), q(lat, 0.5), q(lat, 0.99), q(lat, 1), q(all, 0.99), errs)
	}
	// The same writers away from every split: what the machine gives
	// without one.
	var base []time.Duration
	errs := 0
	for _, s := range samples {
		if !slices.ContainsFunc(windows, func(w window) bool { return s.at+s.took >= w.from && s.at <= w.to+time.Second }) {
			base = append(base, s.took)
			if s.err {
				errs++
			}
		}
	}
	slices.Sort(base)
	fmt.Printf("%-10s %-9s %9d %9v %9v %9v %9v %7d\n", "no split", "", len(base), q(base, 0.5), q(base, 0.99), q(base, 1), q(base, 0.99), errs)
}
