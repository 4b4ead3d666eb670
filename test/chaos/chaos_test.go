// Package chaos is a Jepsen-style fault-injection campaign against real
// kvnode processes on loopback: clients record every operation while a
// nemesis kills, restarts and pauses nodes; afterwards the history of strong
// writes and quorum reads is checked for linearizability with Porcupine, and
// acknowledged writes are counted against the final state.
//
//	go test ./test/chaos -run Chaos -v -chaos.duration 60s [-chaos.seed N] [-chaos.json out.json]
//
// Every schedule is a function of its seed; a failing seed is added to
// testdata/seeds.txt, which every run replays first.
package chaos

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ringkv/ringkv/client"
	"github.com/ringkv/ringkv/internal/testing/kvmodel"
	"github.com/ringkv/ringkv/internal/testing/proccluster"
	pb "github.com/ringkv/ringkv/proto/ringkvpb"
)

var (
	duration = flag.Duration("chaos.duration", 0, "length of each campaign (0: skip; make chaos-short and make chaos set it)")
	seedFlag = flag.Uint64("chaos.seed", 0, "seed of the extra campaign (0: random)")
	jsonOut  = flag.String("chaos.json", "", "write the summaries as JSON to this file")
	short    = flag.Bool("chaos.regressions-only", false, "replay only testdata/seeds.txt")
	nodes    = flag.Int("chaos.nodes", 3, "kvnode processes (3 or 5)")
	docker   = flag.Bool("chaos.docker", false, "run against deploy/docker-compose.yml (3 nodes) instead of processes")
)

var kvnodeBin string

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "ringkv-chaos")
	if err != nil {
		panic(err)
	}
	if kvnodeBin, err = proccluster.Build(dir, "chaos"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// TestChaos replays the regression seeds, then one more campaign with
// -chaos.seed or a random seed.
func TestChaos(t *testing.T) {
	if *duration == 0 {
		t.Skip("no -chaos.duration: run `make chaos-short` or `make chaos`")
	}
	seeds, err := regressionSeeds()
	if err != nil {
		t.Fatal(err)
	}
	if !*short {
		s := *seedFlag
		if s == 0 {
			s = rand.Uint64()
		}
		seeds = append(seeds, s)
	}
	var summaries []*summary
	for _, seed := range seeds {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			s := campaign(t, seed, *duration)
			summaries = append(summaries, s)
			t.Log("\n" + s.table())
			if !s.Linearizable || s.StrongLost > 0 || !s.Live {
				t.Errorf("seed %d failed: add it to test/chaos/testdata/seeds.txt once fixed", seed)
			}
		})
	}
	if *jsonOut != "" {
		b, _ := json.MarshalIndent(summaries, "", "  ")
		if err := os.WriteFile(*jsonOut, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func regressionSeeds() ([]uint64, error) {
	f, err := os.Open(filepath.Join("testdata", "seeds.txt"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var seeds []uint64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		s, err := strconv.ParseUint(strings.Fields(line)[0], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("seeds.txt: %q: %w", line, err)
		}
		seeds = append(seeds, s)
	}
	return seeds, sc.Err()
}

// summary is a campaign's verdict.
type summary struct {
	Seed           uint64            `json:"seed"`
	Duration       string            `json:"duration"`
	Ops            map[string]int    `json:"operations"` // "put ok", "get unknown", ...
	Faults         map[string]int    `json:"faults"`
	Linearizable   bool              `json:"linearizable"`
	Visualization  string            `json:"visualization,omitempty"`
	StrongChecked  int               `json:"strong_writes_acknowledged"`
	StrongLost     int               `json:"strong_writes_lost"`
	FastAcked      int               `json:"fast_writes_acknowledged"`
	FastDiverged   int               `json:"fast_writes_diverged"`
	Live           bool              `json:"live_after_heal"`
	HealTime       string            `json:"heal_to_all_partitions_writable"`
	LongestOutage  map[string]string `json:"longest_unavailability_per_fault"`
	mu             sync.Mutex
	outageByFault  map[string]time.Duration
	lastSuccessful time.Time
	currentFault   string
}

func (s *summary) count(what string) {
	s.mu.Lock()
	s.Ops[what]++
	s.mu.Unlock()
}

// success notes a completed operation: the gap since the previous success
// counts as unavailability of the fault in force.
func (s *summary) success(at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if gap := at.Sub(s.lastSuccessful); s.currentFault != "" && gap > s.outageByFault[s.currentFault] {
		s.outageByFault[s.currentFault] = gap
	}
	if at.After(s.lastSuccessful) {
		s.lastSuccessful = at
	}
}

func (s *summary) table() string {
	var b strings.Builder
	fmt.Fprintf(&b, "seed %d, %s\n", s.Seed, s.Duration)
	keys := func(m map[string]int) []string {
		var k []string
		for x := range m {
			k = append(k, x)
		}
		sort.Strings(k)
		return k
	}
	for _, k := range keys(s.Ops) {
		fmt.Fprintf(&b, "  ops   %-26s %6d\n", k, s.Ops[k])
	}
	for _, k := range keys(s.Faults) {
		fmt.Fprintf(&b, "  fault %-26s %6d  longest unavailability %s\n", k, s.Faults[k], s.LongestOutage[k])
	}
	fmt.Fprintf(&b, "  linearizable (strong writes, quorum reads): %v\n", s.Linearizable)
	fmt.Fprintf(&b, "  acknowledged strong writes lost: %d of %d\n", s.StrongLost, s.StrongChecked)
	fmt.Fprintf(&b, "  fast writes diverged (lost or overwritten by divergence): %d of %d\n", s.FastDiverged, s.FastAcked)
	fmt.Fprintf(&b, "  live after heal: %v (all partitions writable after %s)", s.Live, s.HealTime)
	return b.String()
}

// op is one recorded operation.
type op struct {
	in     kvmodel.Input
	out    kvmodel.Output
	call   int64
	ret    int64
	client int
}

// outcome classifies an error: ok, failed (certainly not applied) or
// unknown. Failed is proven only by an answer that says so (NotPrimary,
// InvalidArgument) or by a connection that was never made (the node was
// down); a timeout, or a connection lost after sending, is unknown.
// strongKV makes a strong client's calls: unary calls to one node, or
// through the Go client.
type strongKV struct {
	node      pb.KVClient
	gc        *client.Client
	viaClient bool
}

func (k strongKV) put(ctx context.Context, key, value string) (uint64, error) {
	if k.viaClient {
		r, err := k.gc.Put(ctx, []byte(key), []byte(value))
		return r.Version, err
	}
	r, err := k.node.Put(ctx, &pb.PutRequest{Key: []byte(key), Value: []byte(value)})
	return r.GetVersion(), err
}

func (k strongKV) del(ctx context.Context, key string) (uint64, error) {
	if k.viaClient {
		r, err := k.gc.Delete(ctx, []byte(key))
		return r.Version, err
	}
	r, err := k.node.Delete(ctx, &pb.DeleteRequest{Key: []byte(key)})
	return r.GetVersion(), err
}

// get reads key with a quorum read; an absent key is a successful read.
func (k strongKV) get(ctx context.Context, key string) (kvmodel.Output, error) {
	if k.viaClient {
		it, err := k.gc.Get(ctx, []byte(key), client.Quorum)
		if errors.Is(err, client.ErrNotFound) {
			return kvmodel.Output{}, nil
		}
		return kvmodel.Output{Value: string(it.Value), Found: err == nil}, err
	}
	r, err := k.node.Get(ctx, &pb.GetRequest{Key: []byte(key), Consistency: pb.ReadConsistency_READ_CONSISTENCY_QUORUM})
	return kvmodel.Output{Value: string(r.GetValue()), Found: err == nil}, err
}

func outcome(err error) string {
	switch code := status.Code(err); {
	case err == nil, code == codes.NotFound:
		return "ok"
	case code == codes.FailedPrecondition, code == codes.InvalidArgument:
		return "failed"
	case code == codes.Unavailable && strings.Contains(err.Error(), "while dialing"):
		return "failed"
	}
	return "unknown"
}

// write is an acknowledged write: its key and the version it was given.
type write struct {
	key     string
	version uint64
}

func campaign(t *testing.T, seed uint64, d time.Duration) *summary {
	rng := rand.New(rand.NewPCG(seed, 0x6368616f73))
	s := &summary{Seed: seed, Duration: d.String(), Ops: map[string]int{}, Faults: map[string]int{},
		LongestOutage: map[string]string{}, outageByFault: map[string]time.Duration{}, lastSuccessful: time.Now()}
	var c target
	if *docker {
		c = startDocker(t)
	} else {
		c = procTarget{proccluster.Start(t, kvnodeBin, proccluster.Options{Nodes: *nodes, Partitions: 4,
			Watch: func(id, line string) {
				if strings.Contains(line, "[ERROR]") && !strings.Contains(line, "failed to") {
					t.Logf("[%s] %s", id, line)
				}
			}})}
	}
	start := time.Now()
	now := func() int64 { return int64(time.Since(start)) }

	var hmu sync.Mutex
	var history []op
	var acked []write // acknowledged strong writes
	var fastWrites []write

	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	// Strong clients call a node of their choice with unary calls; with
	// kvnode processes, two more use the Go client, which sends each call
	// to the key's primary on its shared Batch stream to that node.
	const strongClients, keys = 5, 6
	clients := strongClients
	var gc *client.Client
	if a, ok := c.(interface{ Addrs() []string }); ok {
		var err error
		if gc, err = client.New(context.Background(), a.Addrs(), client.WithMaxAttempts(5)); err != nil {
			t.Fatal(err)
		}
		defer gc.Close()
		clients += 2
	}
	for cl := range clients {
		crng := rand.New(rand.NewPCG(seed, uint64(cl)+1))
		viaClient := cl >= strongClients
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; time.Now().Before(deadline); n++ {
				time.Sleep(time.Duration(10+crng.IntN(20)) * time.Millisecond)
				i := crng.IntN(c.Size())
				if !viaClient && !c.Up(i) {
					continue
				}
				kv := strongKV{c.KV(i), gc, viaClient}
				key := fmt.Sprintf("k%d", crng.IntN(keys))
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				call := now()
				var o op
				var err error
				var version uint64
				switch x := crng.IntN(10); {
				case x < 4:
					o.in = kvmodel.Input{Op: "put", Key: key, Value: fmt.Sprintf("c%d-%d", cl, n)}
					version, err = kv.put(ctx, key, o.in.Value)
				case x < 5:
					o.in = kvmodel.Input{Op: "del", Key: key}
					version, err = kv.del(ctx, key)
				default:
					o.in = kvmodel.Input{Op: "get", Key: key}
					o.out, err = kv.get(ctx, key)
				}
				cancel()
				res := outcome(err)
				if viaClient {
					s.count("client " + o.in.Op + " " + res)
				} else {
					s.count(o.in.Op + " " + res)
				}
				o.call, o.ret, o.client = call, now(), cl
				switch {
				case res == "ok":
					s.success(time.Now())
				case res == "unknown" && o.in.Op != "get":
					o.ret = math.MaxInt64
				default:
					continue
				}
				hmu.Lock()
				history = append(history, o)
				if res == "ok" && o.in.Op != "get" {
					acked = append(acked, write{key, version})
				}
				hmu.Unlock()
			}
		}()
	}
	// Fast writes go to their own keys: they may diverge, so they stay out
	// of the linearizability check.
	wg.Add(1)
	go func() {
		defer wg.Done()
		frng := rand.New(rand.NewPCG(seed, 99))
		for n := 0; time.Now().Before(deadline); n++ {
			time.Sleep(time.Duration(10+frng.IntN(20)) * time.Millisecond)
			i := frng.IntN(c.Size())
			if !c.Up(i) {
				continue
			}
			key := fmt.Sprintf("f%d", frng.IntN(4))
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if frng.IntN(2) == 0 {
				r, err := c.KV(i).Put(ctx, &pb.PutRequest{Key: []byte(key), Value: []byte(fmt.Sprint(n)), Consistency: pb.WriteConsistency_WRITE_CONSISTENCY_FAST})
				s.count("fast put " + outcome(err))
				if err == nil {
					hmu.Lock()
					fastWrites = append(fastWrites, write{key, r.GetVersion()})
					hmu.Unlock()
				}
			} else {
				_, err := c.KV(i).Get(ctx, &pb.GetRequest{Key: []byte(key)})
				s.count("local get " + outcome(err))
			}
			cancel()
		}
	}()

	nemesis(t, c, rng, s, deadline)
	wg.Wait()
	heal(t, c, s)

	// Final quorum reads join the history; they also give the final versions.
	final := map[string]uint64{}
	for k := range keys {
		key := fmt.Sprintf("k%d", k)
		call := now()
		r, err := finalRead(c, key)
		if err != nil && status.Code(err) != codes.NotFound {
			t.Errorf("final read of %s: %v", key, err)
			continue
		}
		history = append(history, op{in: kvmodel.Input{Op: "get", Key: key}, out: kvmodel.Output{Value: string(r.GetValue()), Found: err == nil},
			call: call, ret: now(), client: strongClients})
		final[key] = r.GetVersion()
	}

	// A deleted key reads NotFound without its tombstone's version; its
	// writes are judged by the linearizability check, which includes the
	// final reads.
	s.StrongChecked = len(acked)
	for _, a := range acked {
		if final[a.key] != 0 && final[a.key] < a.version {
			s.StrongLost++
			t.Errorf("%s: acknowledged version %d, final version %d", a.key, a.version, final[a.key])
		}
	}
	finalFast := map[string]uint64{}
	for k := range 4 {
		key := fmt.Sprintf("f%d", k)
		if r, err := finalRead(c, key); err == nil {
			finalFast[key] = r.GetVersion()
		}
	}
	// A fast write diverged if the final version is below its own, or if
	// another acknowledged fast write was given the same version of the key
	// (two primaries numbered from the same state: at most one survives).
	s.FastAcked = len(fastWrites)
	sameVersion := map[write]int{}
	for _, a := range fastWrites {
		sameVersion[a]++
		if finalFast[a.key] < a.version || sameVersion[a] > 1 {
			s.FastDiverged++
		}
	}

	ops := make([]porcupine.Operation, len(history))
	for i, o := range history {
		ops[i] = porcupine.Operation{ClientId: o.client, Input: o.in, Call: o.call, Output: o.out, Return: o.ret}
	}
	res, info := porcupine.CheckOperationsVerbose(kvmodel.Model, ops, 2*time.Minute)
	s.Linearizable = res == porcupine.Ok
	if res != porcupine.Ok {
		s.Visualization = filepath.Join(os.TempDir(), fmt.Sprintf("ringkv-chaos-%d.html", seed))
		if err := porcupine.VisualizePath(kvmodel.Model, info, s.Visualization); err != nil {
			t.Log(err)
		}
		t.Errorf("linearizability check %s; visualization: %s", res, s.Visualization)
	}
	for f, d := range s.outageByFault {
		s.LongestOutage[f] = d.Round(time.Millisecond).String()
	}
	return s
}

func finalRead(c target, key string) (*pb.GetResponse, error) {
	var r *pb.GetResponse
	var err error
	for attempt := 0; attempt < 20; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		r, err = c.KV(attempt%c.Size()).Get(ctx, &pb.GetRequest{Key: []byte(key), Consistency: pb.ReadConsistency_READ_CONSISTENCY_QUORUM})
		cancel()
		if err == nil || status.Code(err) == codes.NotFound {
			return r, err
		}
		time.Sleep(200 * time.Millisecond)
	}
	return r, err
}

// nemesis injects one fault at a time until deadline, each for a while,
// then undoes it. Faults a target cannot make are skipped.
func nemesis(t *testing.T, c target, rng *rand.Rand, s *summary, deadline time.Time) {
	setFault := func(f string) {
		s.mu.Lock()
		if _, ok := s.outageByFault[f]; !ok && f != "" {
			s.outageByFault[f] = 0
		}
		s.currentFault = f
		s.lastSuccessful = time.Now()
		s.mu.Unlock()
	}
	for time.Now().Before(deadline) {
		time.Sleep(time.Duration(500+rng.IntN(1500)) * time.Millisecond)
		hold := time.Duration(1000+rng.IntN(2000)) * time.Millisecond
		f := nemeses[rng.IntN(len(nemeses))]
		x := rng.IntN(c.Size())
		if strings.Contains(f, "primary") {
			if l, ok := c.Leaders()[uint32(rng.IntN(c.Partitions()))]; ok {
				x = l
			}
		}
		switch f {
		case "kill -9 random node", "kill -9 a primary":
			s.Faults[f]++
			setFault(f)
			c.Kill(x)
			time.Sleep(hold)
			c.Start(x)
		case "kill -9 a primary with a deep journal":
			// Cut off, a primary goes on acknowledging fast writes until
			// its lease runs out, and none of them can commit: its
			// journal holds them all when it is killed. They come back
			// from the journal once it restarts (divergence, if any, is
			// counted like the isolated primary's).
			if !c.Cut(t, isolating(c, x)) {
				continue
			}
			s.Faults[f]++
			setFault(f)
			time.Sleep(150 * time.Millisecond) // within the 200 ms lease
			c.Kill(x)
			c.Cut(t, nil)
			time.Sleep(hold)
			c.Start(x)
		case "split a partition":
			// The split goes on under the faults that follow: a kill or
			// a cut may land mid-split.
			if c.Partitions() >= maxChaosPartitions || !c.Split(c.Partitions()+1) {
				continue
			}
			s.Faults[f]++
			setFault(f)
			time.Sleep(hold)
		case "pause node (SIGSTOP)":
			s.Faults[f]++
			setFault(f)
			c.Pause(x)
			time.Sleep(hold)
			c.Resume(x)
		case "isolate a primary", "isolate a node", "split minority|majority", "bridge":
			// Two sides that cannot reach each other; for a bridge, x
			// is on neither and reaches both.
			var rest []int
			for i := range c.Size() {
				if i != x {
					rest = append(rest, i)
				}
			}
			rng.Shuffle(len(rest), func(i, j int) { rest[i], rest[j] = rest[j], rest[i] })
			var a, b []int
			switch f {
			case "bridge":
				a, b = rest[:len(rest)/2], rest[len(rest)/2:]
			case "split minority|majority":
				all := append([]int{x}, rest...)
				a, b = all[:(len(all)-1)/2], all[(len(all)-1)/2:]
			default:
				a, b = []int{x}, rest
			}
			cut := map[int][]int{}
			for _, i := range a {
				cut[i] = b
			}
			for _, i := range b {
				cut[i] = a
			}
			if !c.Cut(t, cut) {
				continue
			}
			s.Faults[f]++
			setFault(f)
			time.Sleep(hold)
			c.Cut(t, nil)
		}
		setFault("")
	}
}

var nemeses = []string{"kill -9 random node", "kill -9 a primary", "kill -9 a primary with a deep journal", "pause node (SIGSTOP)",
	"isolate a primary", "isolate a node", "split minority|majority", "bridge", "split a partition"}

// isolating is the cut that isolates node x from all the others.
func isolating(c target, x int) map[int][]int {
	cut := map[int][]int{}
	for i := range c.Size() {
		if i != x {
			cut[x] = append(cut[x], i)
			cut[i] = []int{x}
		}
	}
	return cut
}

// maxChaosPartitions stops the split nemesis: each split adds a Raft
// group to every node of a loaded 2-core machine.
const maxChaosPartitions = 32

// heal restarts and resumes every node and measures how long until every
// partition accepts a strong write.
func heal(t *testing.T, c target, s *summary) {
	healed := time.Now()
	c.Cut(t, nil)
	for i := range c.Size() {
		if !c.Up(i) {
			c.Start(i)
		}
		c.Resume(i)
	}
	c.WaitPrimaries()
	s.Live = true
	for part := range c.Partitions() {
		key := keyInPartition(c, uint32(part))
		ok := false
		for attempt := 0; attempt < 50 && !ok; attempt++ {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := c.KV(attempt%c.Size()).Put(ctx, &pb.PutRequest{Key: []byte(key), Value: []byte("live")})
			cancel()
			ok = err == nil
			if !ok {
				time.Sleep(200 * time.Millisecond)
			}
		}
		if !ok {
			s.Live = false
			t.Errorf("partition %d: no strong write succeeded after heal", part)
		}
	}
	s.HealTime = time.Since(healed).Round(time.Millisecond).String()
}

// keyInPartition finds a key of partition p.
func keyInPartition(c target, p uint32) string {
	r := c.Ring()
	for i := 0; ; i++ {
		key := fmt.Sprintf("live-%d", i)
		if uint32(r.Lookup([]byte(key))) == p {
			return key
		}
	}
}
