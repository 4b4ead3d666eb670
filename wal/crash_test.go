package wal

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var errPowerCut = errors.New("power cut")

// crashModes choose where the simulated power cut falls.
var crashModes = []string{"anywhere", "torn", "roll", "segment-delete", "compaction"}

// Sequential random operations until a power cut injected at a random
// point; after MemFS forgets everything unsynced, the WAL must recover to
// exactly the acknowledged operations, plus or minus the one in flight.
func TestCrashMemFS(t *testing.T) {
	hits := map[string]int{}
	for _, seed := range modelSeeds(60) {
		mode := crashModes[seed%uint64(len(crashModes))]
		r := rand.New(rand.NewPCG(seed, 1))
		hookRand := rand.New(rand.NewPCG(seed, 2)) // used only by the goroutine calling the FS
		fs := NewMemFS()
		opts := smallOpts(fs)
		w := mustOpen(t, testDir, opts)
		var wp atomic.Pointer[WAL]
		wp.Store(w)
		var cut atomic.Bool
		countdown := 50 + hookRand.IntN(1500)
		fs.SetFault(func(op Op, _ string) error {
			if cut.Load() {
				return errPowerCut
			}
			var now bool
			switch mode {
			case "anywhere", "torn":
				countdown--
				now = countdown == 0
			case "roll":
				now = (op == OpCreate || op == OpRename || op == OpSyncDir) && hookRand.IntN(8) == 0
			case "segment-delete":
				now = (op == OpRemove || op == OpSyncDir) && hookRand.IntN(3) == 0
			case "compaction":
				w := wp.Load() // the hook runs on the writer goroutine, which owns w.compact
				now = w != nil && w.compact != nil && hookRand.IntN(3) == 0
			}
			if now {
				cut.Store(true)
				return errPowerCut
			}
			return nil
		})
		m := newModel()
		var before *model
		for step := 0; step < 3000; step++ {
			o := m.randomOp(r)
			prev := m.clone()
			rejected := m.apply(o)
			err := o.run(w)
			if cut.Load() && err != nil {
				before = prev // o is in doubt: its write may or may not have reached the disk
				break
			}
			if (err != nil) != rejected {
				t.Fatalf("seed %d step %d: %v returned %v, model rejects: %v", seed, step, o, err, rejected)
			}
		}
		if before == nil {
			continue // this seed's cut never came
		}
		hits[mode]++
		w.Close()
		fs.SetFault(nil)
		if mode == "torn" {
			fs.CrashTorn(r)
		} else {
			fs.Crash()
		}
		w, err := Open(testDir, opts)
		if err != nil {
			t.Fatalf("seed %d (%s): recovery failed: %v (rerun with WAL_SEED=%d)", seed, mode, err, seed)
		}
		if err := m.check(w); err != nil {
			if err2 := before.check(w); err2 != nil {
				t.Fatalf("seed %d (%s): recovered state matches neither outcome of the in-flight operation:\n with it: %v\n without: %v\n(rerun with WAL_SEED=%d)", seed, mode, err, err2, seed)
			}
		}
		mustClose(t, w)
	}
	if os.Getenv("WAL_SEED") == "" {
		for _, mode := range crashModes {
			if hits[mode] == 0 {
				t.Errorf("no seed cut power in mode %q: the test does not exercise it (hits %v)", mode, hits)
			}
		}
	}
}

const crashChildEnv = "WAL_CRASH_CHILD_DIR"

func crashChildOptions() Options { return Options{SegmentSize: 8 << 10, CompactSegments: 3} }

// TestCrashProcess kills a process that appends concurrently with SIGKILL
// and checks that every entry it reported as acknowledged survives.
func TestCrashProcess(t *testing.T) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		crashChild(dir)
		return
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestCrashProcess$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+dir)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killAt := 600 + rand.IntN(900)
	acked := map[uint64]uint64{}     // stream → highest acknowledged index
	truncated := map[uint64]uint64{} // stream → highest acknowledged prefix truncation
	intended := map[uint64]uint64{}  // stream → highest prefix truncation attempted
	terms := map[uint64]int{}        // stream → highest acknowledged term
	n := 0
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		var kind string
		var s, v uint64
		if _, err := fmt.Sscanf(sc.Text(), "%s %d %d", &kind, &s, &v); err != nil {
			continue
		}
		switch kind {
		case "a":
			acked[s] = max(acked[s], v)
			if n++; n == killAt {
				cmd.Process.Kill() // SIGKILL: no deferred code runs in the child
			}
		case "P":
			intended[s] = max(intended[s], v)
		case "p":
			truncated[s] = max(truncated[s], v)
		case "t":
			terms[s] = max(terms[s], int(v))
		}
	}
	werr := cmd.Wait()
	if n < killAt {
		t.Fatalf("child acknowledged only %d entries before exiting (%v)", n, werr)
	}
	w := mustOpen(t, dir, crashChildOptions())
	defer mustClose(t, w)
	for s, last := range acked {
		first, got := w.FirstIndex(s), w.LastIndex(s)
		if got < last || first <= truncated[s] || first > max(intended[s], truncated[s])+1 {
			t.Fatalf("stream %d: span [%d, %d] after acknowledging up to %d, prefix truncations up to %d (attempted %d)",
				s, first, got, last, truncated[s], intended[s])
		}
		err := w.Range(s, first, got, func(i uint64, d []byte) bool {
			if !bytes.Equal(d, payload(s, i, 100)) {
				t.Fatalf("stream %d index %d: wrong payload %q", s, i, d)
			}
			return true
		})
		if err != nil {
			t.Fatalf("stream %d: %v", s, err)
		}
		if v, ok := w.State(s, "term"); terms[s] > 0 && (!ok || atoiOr(v) < terms[s]) {
			t.Fatalf("stream %d: term %q after acknowledging %d", s, v, terms[s])
		}
	}
	t.Logf("killed after %d acknowledged entries; recovery %+v", n, w.Recovery())
}

func atoiOr(b []byte) int {
	n, err := strconv.Atoi(string(b))
	if err != nil {
		return -1
	}
	return n
}

// crashChild appends to 16 streams from 8 goroutines, truncating prefixes
// and setting state now and then, and reports each acknowledgement on
// stdout. It stops by itself after a minute in case nobody kills it.
func crashChild(dir string) {
	w, err := Open(dir, crashChildOptions())
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var mu sync.Mutex
	report := func(kind string, s, v uint64) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(os.Stdout, "%s %d %d\n", kind, s, v)
	}
	var wg sync.WaitGroup
	for g := range uint64(8) {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(g, uint64(time.Now().UnixNano())))
			next := map[uint64]uint64{g: 1, g + 8: 1}
			for ctx.Err() == nil {
				s := g + 8*r.Uint64N(2)
				entries := make([]Entry, 1+r.IntN(3))
				for k := range entries {
					entries[k] = Entry{Stream: s, Index: next[s], Data: payload(s, next[s], 100)}
					next[s]++
				}
				if err := w.Append(ctx, entries...); err != nil {
					return
				}
				for _, e := range entries {
					report("a", s, e.Index)
				}
				switch {
				case r.IntN(20) == 0 && next[s] > 40:
					upTo := next[s] - 30
					report("P", s, upTo)
					if w.TruncatePrefix(ctx, s, upTo) != nil {
						return
					}
					report("p", s, upTo)
				case r.IntN(20) == 0:
					term := next[s]
					if w.SetState(ctx, s, "term", []byte(strconv.FormatUint(term, 10))) != nil {
						return
					}
					report("t", s, term)
				}
			}
		})
	}
	wg.Wait()
	os.Exit(0)
}
