package e2e

// Kill -9 tests of the storage engine's wiring (issue 15). A node keeps
// every partition's state in one pebble engine without pebble's WAL,
// relying on the Raft log to replay what a crash takes from its memtable;
// a Raft snapshot is an engine flush plus a marker, turned into a stream
// only for a follower that needs it. These tests kill nodes while the
// engine flushes, compacts, snapshots and ingests received snapshots, and
// check that every acknowledged write is there, that none was applied
// twice, and that the replicas end equal, byte for byte, in the engines on
// disk.
//
// Every schedule is drawn from a seed the test logs; -engine.seed replays
// one (the machine's timing still varies). -engine.long runs the long
// variants.

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ringkv/ringkv/fsm"
	"github.com/ringkv/ringkv/internal/storage"
	"github.com/ringkv/ringkv/internal/testing/ackcheck"
	"github.com/ringkv/ringkv/internal/testing/proccluster"
	pb "github.com/ringkv/ringkv/proto/ringkvpb"
	"github.com/ringkv/ringkv/ring"
)

var (
	engineSeed = flag.Uint64("engine.seed", 0, "seed of the engine kill tests' schedules (0: random)")
	engineLong = flag.Bool("engine.long", false, "run the engine kill tests' long variants")
)

// seedOf returns the schedule's seed and logs it.
func seedOf(t *testing.T) uint64 {
	seed := *engineSeed
	if seed == 0 {
		seed = rand.Uint64()
	}
	t.Logf("seed %d (replay with -engine.seed %d)", seed, seed)
	return seed
}

// The engine's smallest memtable, so that it flushes every few hundred
// writes; small snapshot thresholds, so that Raft snapshots (each an engine
// flush) come every few dozen entries and a follower a few dozen entries
// behind needs a snapshot.
const (
	tinyMemtable      = 1 << 20
	snapshotThreshold = 64
	trailingLogs      = 32
	// A flush writes the memtables queued, and writes stall once they
	// hold two memtables' worth: a bigger table is a compaction's output.
	compactionOutput = 5 * tinyMemtable / 2
)

var churnArgs = []string{
	"--memtable-size", strconv.Itoa(tinyMemtable), "--cache-size", strconv.Itoa(8 << 20),
	"--snapshot-threshold", strconv.Itoa(snapshotThreshold), "--trailing-logs", strconv.Itoa(trailingLogs),
	"--snapshot-interval", "100ms",
	// Leadership stays where elections put it: a proposal refused because
	// a leadership transfer is under way may leave its version unused, and
	// these tests ask versions to count writes (ackcheck.CountVersions).
	"--balance-interval", "-1s",
	// Raft reports snapshots at info: raftLog counts them and hooks kills
	// on them, and shows the test what is not info.
	"--log-level", "info",
}

// raftLog watches the nodes' logs: it counts snapshots taken and installed
// and fires the hooks armed on them.
type raftLog struct {
	t         *testing.T
	mu        sync.Mutex
	snapshots int
	installs  map[string]int // by node
	hooks     []*lineHook
}

// lineHook fires once, on the first line of node id (any node if empty)
// that contains every pattern.
type lineHook struct {
	id       string
	patterns []string
	fired    chan struct{}
	line     string // set before fired is closed
}

func newRaftLog(t *testing.T) *raftLog { return &raftLog{t: t, installs: map[string]int{}} }

// watch is proccluster.Options.Watch. It runs on the goroutine reading a
// node's stderr, which Cluster.Kill waits for: it must never block on the
// test, so a hook only closes a channel.
func (l *raftLog) watch(id, line string) {
	l.mu.Lock()
	switch {
	case strings.Contains(line, "snapshot complete up to"):
		l.snapshots++
	case strings.Contains(line, "Installed remote snapshot"):
		l.installs[id]++
	}
	for i := 0; i < len(l.hooks); i++ {
		h := l.hooks[i]
		if h.id != "" && h.id != id {
			continue
		}
		match := true
		for _, p := range h.patterns {
			match = match && strings.Contains(line, p)
		}
		if match {
			h.line = line
			close(h.fired)
			l.hooks = append(l.hooks[:i], l.hooks[i+1:]...)
			i--
		}
	}
	l.mu.Unlock()
	if !strings.Contains(line, "[INFO]") && !strings.Contains(line, "[DEBUG]") {
		l.t.Logf("[%s] %s", id, line)
	}
}

func (l *raftLog) arm(id string, patterns ...string) *lineHook {
	h := &lineHook{id: id, patterns: patterns, fired: make(chan struct{})}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.hooks = append(l.hooks, h)
	return h
}

func (l *raftLog) disarm(h *lineHook) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, x := range l.hooks {
		if x == h {
			l.hooks = append(l.hooks[:i], l.hooks[i+1:]...)
			return
		}
	}
}

func (l *raftLog) counts() (snapshots int, installs map[string]int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	installs = map[string]int{}
	for id, n := range l.installs {
		installs[id] = n
	}
	return l.snapshots, installs
}

// killOnLine kills p as soon as h fires, and returns the line; after d it
// fails t.
func killOnLine(t *testing.T, c *proccluster.Cluster, l *raftLog, p *proccluster.Proc, h *lineHook, d time.Duration) string {
	t.Helper()
	select {
	case <-h.fired:
		c.Kill(p)
		return h.line
	case <-time.After(d):
		l.disarm(h)
		t.Fatalf("no log line with %q in %v", h.patterns, d)
		return ""
	}
}

// ledBy counts the partitions p leads.
func ledBy(c *proccluster.Cluster, p *proccluster.Proc) int {
	n := 0
	for _, id := range c.Leaders(nil) {
		if id == p.ID {
			n++
		}
	}
	return n
}

// pickVictim picks, at random among ties, the node leading the most
// partitions (a primary) or the fewest (often none: a follower only).
func pickVictim(c *proccluster.Cluster, rng *rand.Rand, primary bool) *proccluster.Proc {
	var best []*proccluster.Proc
	bestLed := -1 << 30
	for _, p := range c.Procs {
		led := ledBy(c, p)
		if !primary {
			led = -led
		}
		switch {
		case led > bestLed:
			best, bestLed = []*proccluster.Proc{p}, led
		case led == bestLed:
			best = append(best, p)
		}
	}
	return best[rng.IntN(len(best))]
}

// waitWrites waits until n more writes than now are acknowledged.
func waitWrites(t *testing.T, w *ackcheck.Writers, n int, what string) {
	t.Helper()
	target := w.Acked() + n
	eventually(t, 90*time.Second, fmt.Sprintf("%d more acknowledged writes %s", n, what), func() bool { return w.Acked() >= target })
}

// tableBeingWritten looks twice, a couple of milliseconds apart, at the
// engine in dir: if its newest SSTable grew in between, a flush or a
// compaction is writing it, and its name and size are returned.
func tableBeingWritten(dir string) (name string, size int64, ok bool) {
	newest := func() (string, int64) {
		entries, _ := os.ReadDir(dir)
		var best string
		bestNum := -1
		for _, e := range entries {
			num, isTable := strings.CutSuffix(e.Name(), ".sst")
			if n, err := strconv.Atoi(num); isTable && err == nil && n > bestNum {
				best, bestNum = e.Name(), n
			}
		}
		if best == "" {
			return "", -1
		}
		fi, err := os.Stat(filepath.Join(dir, best))
		if err != nil {
			return best, -1
		}
		return best, fi.Size()
	}
	n1, s1 := newest()
	time.Sleep(2 * time.Millisecond) // the sampling interval, not a wait for a condition
	n2, s2 := newest()
	return n2, s2, n1 == n2 && s1 >= 0 && s2 > s1
}

// killWhileWritingTable kills p as soon as its engine is seen writing an
// SSTable of more than minSize bytes; after d without one, it kills p
// anyway. It says what p was doing.
func killWhileWritingTable(c *proccluster.Cluster, p *proccluster.Proc, minSize int64, d time.Duration) string {
	dir := filepath.Join(p.Dir, "state")
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if name, size, ok := tableBeingWritten(dir); ok && size > minSize {
			c.Kill(p)
			return fmt.Sprintf("while its engine wrote SSTable %s (%d bytes so far)", name, size)
		}
	}
	c.Kill(p)
	return fmt.Sprintf("with no SSTable of more than %d bytes seen being written in %v", minSize, d)
}

var (
	partitionRE = regexp.MustCompile(`partition=(\d+)`)
	indexRE     = regexp.MustCompile(`index=(\d+)`)
)

// TestEngineKill9UnderHeavyWrites kills nodes with SIGKILL, again and again,
// while writers overwrite keys with 1–4 KiB values through engines with a
// 1 MiB memtable and Raft snapshots every 64 entries: flushes, compactions
// and snapshots are always under way somewhere. The kills cycle through
// four moments: a random one; as Raft starts a snapshot (during the engine
// flush that precedes its marker, while the marker is written, or as Raft
// truncates its log after it: the test log says which); while the engine
// writes an SSTable (a flush or a compaction); while it writes a table
// bigger than any flush writes (a compaction). Victims alternate between the node leading the
// most partitions and the one leading the fewest (a follower), and stay
// down for a random number of writes, at times long enough to need
// snapshots when they return.
func TestEngineKill9UnderHeavyWrites(t *testing.T) {
	seed := seedOf(t)
	rng := rand.New(rand.NewPCG(seed, 1))
	kills := 8
	if *engineLong {
		kills = 40
	}
	l := newRaftLog(t)
	c := proccluster.Start(t, kvnodeBin, proccluster.Options{Args: churnArgs, Watch: l.watch})
	cl := newClient(t, c)
	w := ackcheck.StartWith(cl, ackcheck.Options{Writers: 8, Keys: 256, MinValue: 1 << 10, MaxValue: 4 << 10, Seed: seed, CountVersions: true})
	defer w.Stop()
	waitWrites(t, w, 500, "before the first kill")

	start := time.Now()
	for i := range kills {
		waitWrites(t, w, 50+rng.IntN(400), "before the next kill")
		victim := pickVictim(c, rng, (i+i/4)%2 == 0)
		led := ledBy(c, victim)
		at := time.Now().UTC().Format("15:04:05.000")
		var how string
		switch i % 4 {
		case 0:
			c.Kill(victim)
			how = "at a random moment"
		case 1:
			line := killOnLine(t, c, l, victim, l.arm(victim.ID, "starting snapshot up to"), 30*time.Second)
			how = "as Raft started a snapshot, " + snapshotFate(victim, line)
		case 2:
			how = killWhileWritingTable(c, victim, 0, 5*time.Second)
		case 3:
			how = killWhileWritingTable(c, victim, compactionOutput, 10*time.Second)
		}
		t.Logf("kill %d at %s: %s, primary of %d of %d partitions, killed %s; %d writes acknowledged", i+1, at, victim.ID, led, c.Partitions, how, w.Acked())
		if down := rng.IntN(3) * 400; down > 0 {
			c.WaitPrimaries(victim)
			waitWrites(t, w, down, "while "+victim.ID+" is down")
		}
		c.Start(victim)
		c.WaitCaughtUp(victim, 90*time.Second)
	}
	snapshots, installs := l.counts()
	t.Logf("%d kills in %v; %d Raft snapshots taken, installed by node: %v", kills, time.Since(start).Round(time.Millisecond), snapshots, installs)
	waitWrites(t, w, 300, "after the last restart")
	c.WaitPrimaries(nil)
	w.Finish(t)
	if snapshots == 0 {
		t.Fatal("no Raft snapshot was taken")
	}
	checkReplicasEqual(t, c, w)
}

// snapshotFate says whether the snapshot a "starting snapshot up to" line
// announced got its marker before the kill.
func snapshotFate(p *proccluster.Proc, line string) string {
	pm, im := partitionRE.FindStringSubmatch(line), indexRE.FindStringSubmatch(line)
	if pm == nil || im == nil {
		return "of an unknown partition"
	}
	part, _ := strconv.Atoi(pm[1])
	index, _ := strconv.ParseUint(im[1], 10, 64)
	for _, s := range snapshotsOf(p, uint32(part)) {
		if s.meta.Index == index {
			return fmt.Sprintf("after partition %d's marker at %d was written", part, index)
		}
	}
	return fmt.Sprintf("before partition %d's snapshot at %d was complete", part, index)
}

// snapshot is one of a replica's snapshots on disk.
type snapshot struct {
	name    string
	size    int64 // of its state.bin
	meta    raft.SnapshotMeta
	partial bool // being written or received when the node died (*.tmp)
	stream  bool // holds a stream (received), not a marker
}

// snapshotsOf lists the Raft snapshots of p's replica of part.
func snapshotsOf(p *proccluster.Proc, part uint32) []snapshot {
	dir := filepath.Join(p.Dir, "partitions", fmt.Sprintf("%04d", part), "snapshots")
	entries, _ := os.ReadDir(dir)
	var out []snapshot
	for _, ent := range entries {
		s := snapshot{name: ent.Name(), size: -1}
		s.partial = strings.HasSuffix(ent.Name(), ".tmp")
		if b, err := os.ReadFile(filepath.Join(dir, ent.Name(), "meta.json")); err == nil {
			json.Unmarshal(b, &s.meta)
		} else if !s.partial {
			continue
		}
		if fi, err := os.Stat(filepath.Join(dir, ent.Name(), "state.bin")); err == nil {
			s.size = fi.Size()
		}
		if f, err := os.Open(filepath.Join(dir, ent.Name(), "state.bin")); err == nil {
			head := make([]byte, 4)
			n, _ := f.Read(head)
			f.Close()
			s.stream = string(head[:n]) == "RKVS"
		}
		out = append(out, s)
	}
	return out
}

// TestEngineKill9DuringSnapshotInstall takes a node down until its peers
// have truncated their logs past it, restarts it so that it must install
// snapshots, and kills it with SIGKILL during the install. The first round
// kills it as a leader starts sending it a snapshot ("installing snapshot
// on"), so while it receives one. The next rounds (with -engine.long, every
// other round) kill it as soon as Raft has received a snapshot whole
// ("copied to local snapshot") and hands it to the state machine to ingest; the dead node's files show whether that cut
// an ingestion short (the engine's applied index is behind the partition's
// latest snapshot, a received stream), and such rounds repeat until one
// did. Restarted, the node must restore that snapshot before Raft starts
// (engineSnapshots.recover), come up and catch up.
func TestEngineKill9DuringSnapshotInstall(t *testing.T) {
	seed := seedOf(t)
	maxRounds := 5
	if *engineLong {
		maxRounds = 12
	}
	l := newRaftLog(t)
	// Two partitions of about 5 MiB each: an ingestion takes a while. They
	// stay two (splitArgs).
	c := proccluster.Start(t, kvnodeBin, proccluster.Options{Partitions: 2, Args: append(churnArgs[:len(churnArgs):len(churnArgs)], splitArgs...), Watch: l.watch})
	cl := newClient(t, c)
	w := ackcheck.StartWith(cl, ackcheck.Options{Writers: 8, Keys: 400, MinValue: 2 << 10, MaxValue: 4 << 10, Seed: seed, CountVersions: true})
	defer w.Stop()
	victim := c.Procs[2]
	waitWrites(t, w, 4000, "to fill the partitions")

	cutShort := 0
	for round := 1; round <= maxRounds && (round <= 2 || cutShort == 0 || *engineLong); round++ {
		last := map[uint32]uint64{}
		eventually(t, 30*time.Second, victim.ID+"'s last log indexes", func() bool {
			for _, ps := range c.Status(nil)[victim.ID].GetPartitions() {
				last[ps.Partition] = ps.LastLogIndex
			}
			return len(last) == c.Partitions
		})
		c.Kill(victim)
		c.WaitPrimaries(victim)
		// A leader snapshots every snapshotThreshold entries and keeps
		// trailingLogs of them: past this, the victim's next entry is gone
		// from its leader's log.
		eventually(t, 90*time.Second, "the leaders' logs truncated past "+victim.ID, func() bool {
			past := 0
			for _, st := range c.Status(victim) {
				for _, ps := range st.Partitions {
					if ps.State == pb.RaftState_RAFT_STATE_LEADER && ps.CommitIndex >= last[ps.Partition]+2*(snapshotThreshold+trailingLogs)+100 {
						past++
					}
				}
			}
			return past == c.Partitions
		})

		receiving := round == 1 || *engineLong && round%2 == 1
		var h *lineHook
		if receiving {
			h = l.arm("", "installing snapshot on", "peer="+victim.ID)
		} else {
			h = l.arm(victim.ID, "copied to local snapshot")
		}
		_, before := l.counts()
		c.Start(victim)
		var line string
		if receiving {
			line = killWhileReceiving(t, c, l, victim, h)
		} else {
			line = killOnLine(t, c, l, victim, h, 90*time.Second)
		}
		_, after := l.counts()
		var behind, partial []string
		engine := enginesApplied(t, victim, c.Partitions)
		for part := range uint32(c.Partitions) {
			applied := engine[part]
			var latest snapshot
			for _, s := range snapshotsOf(victim, part) {
				if s.partial {
					partial = append(partial, fmt.Sprint(part))
				} else if s.meta.Index >= latest.meta.Index {
					latest = s
				}
			}
			if applied < latest.meta.Index {
				if !latest.stream {
					// recover refuses to start such a replica: the engine
					// lost writes it had flushed.
					t.Errorf("partition %d: %s's engine at applied index %d, behind its own snapshot marker at %d", part, victim.ID, applied, latest.meta.Index)
				}
				behind = append(behind, fmt.Sprintf("%d (engine at %d, received snapshot at %d)", part, applied, latest.meta.Index))
			}
		}
		what := "as it received a snapshot"
		if !receiving {
			what = "once it had received a snapshot whole"
		}
		t.Logf("round %d: killed %s %s (%q); installs finished before the kill: %d; ingestions cut short, partitions: %v; partial snapshots left, partitions: %v",
			round, victim.ID, what, line, after[victim.ID]-before[victim.ID], behind, partial)
		if len(behind) > 0 {
			cutShort++
		}

		c.Start(victim)
		c.WaitCaughtUp(victim, 90*time.Second)
		if code, exited := c.WaitExit(victim, 0); exited {
			t.Fatalf("round %d: %s exited with status %d after restarting", round, victim.ID, code)
		}
		t.Logf("round %d: %s restarted and caught up; %d writes acknowledged", round, victim.ID, w.Acked())
	}
	_, installs := l.counts()
	if cutShort == 0 {
		t.Fatalf("no kill in %d rounds cut a snapshot ingestion short", maxRounds)
	}
	if installs[victim.ID] == 0 {
		t.Fatalf("%s finished no snapshot install", victim.ID)
	}
	t.Logf("%d rounds cut an ingestion short; snapshots installed by node: %v", cutShort, installs)
	waitWrites(t, w, 300, "after the last restart")
	c.WaitPrimaries(nil)
	w.Finish(t)
	checkReplicasEqual(t, c, w)
}

// killWhileReceiving waits until h fires (a leader starts sending p a
// snapshot), then kills p as soon as one of its snapshots being received
// holds some bytes; after 5 s without, it kills p anyway. It says what it
// saw.
func killWhileReceiving(t *testing.T, c *proccluster.Cluster, l *raftLog, p *proccluster.Proc, h *lineHook) string {
	t.Helper()
	old := map[string]bool{}
	for part := range uint32(c.Partitions) {
		for _, s := range snapshotsOf(p, part) {
			old[s.name] = true
		}
	}
	select {
	case <-h.fired:
	case <-time.After(90 * time.Second):
		l.disarm(h)
		t.Fatalf("no leader started sending %s a snapshot in 90s", p.ID)
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		for part := range uint32(c.Partitions) {
			for _, s := range snapshotsOf(p, part) {
				if s.partial && s.size > 0 && !old[s.name] {
					c.Kill(p)
					return fmt.Sprintf("%s; partition %d's snapshot %s had %d bytes", h.line, part, s.name, s.size)
				}
			}
		}
		time.Sleep(time.Millisecond) // the sampling interval, not a wait for a condition
	}
	c.Kill(p)
	return h.line + "; no snapshot seen being received in 5s"
}

// enginesApplied reads the applied index of each partition in a dead
// node's engine. It opens a copy, leaving the node's files as the kill left
// them.
func enginesApplied(t *testing.T, p *proccluster.Proc, partitions int) map[uint32]uint64 {
	t.Helper()
	cp := filepath.Join(t.TempDir(), "state")
	if err := os.CopyFS(cp, os.DirFS(filepath.Join(p.Dir, "state"))); err != nil {
		t.Fatal(err)
	}
	e, err := storage.Open(storage.Options{Dir: cp, CacheSize: 1 << 20})
	if err != nil {
		t.Fatalf("open a copy of %s's engine: %v", p.ID, err)
	}
	defer e.Close()
	out := map[uint32]uint64{}
	for part := range uint32(partitions) {
		if out[part], err = e.Partition(part).Applied(); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// streamHeaderLen is a snapshot stream's header: magic, format, applied
// index, checksum (internal/storage/stream.go).
const streamHeaderLen = 4 + 1 + 8 + 4

// checkReplicasEqual waits until every partition's replicas report one
// applied index, stops the nodes with SIGTERM (which flushes the engine),
// opens each node's engine and compares every partition's state across its
// replicas, byte for byte, and every key written, on every replica,
// against the writers' acknowledgements.
func checkReplicasEqual(t *testing.T, c *proccluster.Cluster, w *ackcheck.Writers) {
	t.Helper()
	applied := c.WaitSameApplied(90 * time.Second)
	t.Logf("replicas at the same applied index: %v", applied)
	// Splits may have grown the ring since the cluster started.
	m := c.Map()
	r, err := ring.Grown(int(m.GetInitialPartitions()), int(m.GetPartitions()))
	if err != nil {
		t.Fatal(err)
	}
	partitions := r.Partitions()
	for _, p := range c.Procs {
		c.Stop(p)
		if code, _ := c.WaitExit(p, 0); code != 0 {
			t.Errorf("%s exited with status %d on SIGTERM", p.ID, code)
		}
	}
	engines := make([]*storage.Engine, len(c.Procs))
	for i, p := range c.Procs {
		e, err := storage.Open(storage.Options{Dir: filepath.Join(p.Dir, "state"), CacheSize: 8 << 20})
		if err != nil {
			t.Fatalf("open %s's engine: %v", p.ID, err)
		}
		defer e.Close()
		engines[i] = e
		// Every node of three hosts every partition, and nothing past the
		// last one (a partition numbered off by one) may have state.
		for part := range uint32(partitions) + 1 {
			applied, err := e.Partition(part).Applied()
			if err != nil {
				t.Fatal(err)
			}
			if hosted := part < uint32(partitions); hosted != (applied > 0) {
				t.Fatalf("%s's engine: partition %d at applied index %d, want it to have state only if below %d", p.ID, part, applied, partitions)
			}
		}
	}
	stores := make([][]*fsm.Store, len(engines))
	for part := range uint32(partitions) {
		var first []byte
		for i, e := range engines {
			v := e.Partition(part).View()
			var buf bytes.Buffer
			_, idx, err := v.WriteSnapshot(&buf)
			v.Close()
			if err != nil {
				t.Fatalf("%s: partition %d: %v", c.Procs[i].ID, part, err)
			}
			// Stopping the nodes one after the other, the first hands its
			// primaries to the others, whose new terms each commit an
			// empty entry that it never sees, and so on: applied indexes
			// part after the equal ones above, by entries that change
			// nothing but the index. So the records after the header are
			// compared, and no index may be below the equal one.
			if idx < applied[part] {
				t.Errorf("%s: partition %d at applied index %d after a clean stop, it had applied %d", c.Procs[i].ID, part, idx, applied[part])
			}
			store, err := fsm.New(fsm.Options{}, e.Partition(part))
			if err != nil {
				t.Fatal(err)
			}
			stores[i] = append(stores[i], store)
			records := buf.Bytes()[streamHeaderLen:]
			if i == 0 {
				first = records
				t.Logf("partition %d: %d keys, %d bytes of state on %s at applied index %d", part, store.Len(), len(records), c.Procs[i].ID, idx)
				continue
			}
			if !bytes.Equal(records, first) {
				t.Errorf("partition %d: %s's state (%d keys, %d bytes) differs from %s's (%d keys, %d bytes): %s",
					part, c.Procs[i].ID, store.Len(), len(records), c.Procs[0].ID, stores[0][part].Len(), len(first),
					firstDifference(stores[0][part], store))
			}
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// Every key on every replica, read from the engine itself.
	want := w.Expected()
	bad := 0
	for key, e := range want {
		part := r.Lookup([]byte(key))
		for i := range engines {
			it, found := stores[i][part].Get([]byte(key))
			if err := e.Check(found, it.Value, it.Version); err != nil {
				if bad++; bad <= 5 {
					t.Errorf("%s's engine, partition %d: %s: %v", c.Procs[i].ID, part, key, err)
				}
			}
		}
	}
	if bad > 0 {
		t.Fatalf("%d keys wrong in the engines", bad)
	}
	t.Logf("every partition's replicas hold the same state; %d keys checked in each of %d engines", len(want), len(engines))
}

// firstDifference names the first key two replicas disagree on.
func firstDifference(a, b *fsm.Store) string {
	items := func(s *fsm.Store) ([]fsm.Item, error) {
		var out []fsm.Item
		err := s.Range(nil, nil, func(it fsm.Item) bool { out = append(out, it); return true })
		return out, err
	}
	ia, errA := items(a)
	ib, errB := items(b)
	if err := errors.Join(errA, errB); err != nil {
		return err.Error()
	}
	for i := range min(len(ia), len(ib)) {
		x, y := ia[i], ib[i]
		if !bytes.Equal(x.Key, y.Key) || x.Stamp != y.Stamp || x.Tombstone != y.Tombstone || !bytes.Equal(x.Value, y.Value) {
			return fmt.Sprintf("key %d: %q %+v vs %q %+v", i, x.Key, x.Stamp, y.Key, y.Stamp)
		}
	}
	if len(ia) != len(ib) {
		return fmt.Sprintf("%d keys vs %d", len(ia), len(ib))
	}
	return "the same keys and items: the difference is in the counts or the tombstone index"
}
