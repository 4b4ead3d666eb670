package shard

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ringkv/ringkv/fsm"
	"github.com/ringkv/ringkv/hlc"
)

// purgeGrace is the tombstone grace of the purge tests' groups.
const purgeGrace = time.Hour

// manualClock is an HLC whose physical time the test sets, so a tombstone
// can be made older than the grace without waiting for it.
type manualClock struct {
	wall atomic.Int64
	hlc  *hlc.Clock
}

func newManualClock() *manualClock {
	c := &manualClock{}
	c.wall.Store(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	c.hlc = hlc.New(c.wall.Load)
	return c
}

func (c *manualClock) advance(d time.Duration) { c.wall.Add(int64(d)) }

// newPurgeGroup starts a group whose replicas share clock and purge
// tombstones older than purgeGrace.
func newPurgeGroup(t *testing.T, clock *manualClock) *group {
	return newGroup(t, func(cfg *Config) {
		cfg.Clock = clock.hlc
		cfg.Limits.TombstoneGrace = purgeGrace
	})
}

// TestPurgeTombstones: only the primary purges; with no tombstone it
// proposes nothing; a purge removes exactly the tombstones older than the
// grace on every replica, one that was down during the deletes and the
// purge included, and reports how many. The writes and purges once a
// follower is down are sent again if they meet an election (onPrimary).
func TestPurgeTombstones(t *testing.T) {
	clock := newManualClock()
	g := newPurgeGroup(t, clock)
	l := g.leader()
	ctx := context.Background()

	if _, err := g.followers(l)[0].PurgeTombstones(ctx); !errors.Is(err, ErrNotPrimary) {
		t.Fatalf("purge on a follower: %v, want ErrNotPrimary", err)
	}
	last := l.Raft().LastIndex()
	if n, err := l.PurgeTombstones(ctx); n != 0 || err != nil {
		t.Fatalf("purge without tombstones = %d, %v; want 0, nil", n, err)
	}
	if got := l.Raft().LastIndex(); got != last {
		t.Fatalf("purge without tombstones proposed an entry: last index %d, was %d", got, last)
	}

	// A follower misses the deletes and the purges; it catches up later.
	away := g.followers(l)[0].cfg.NodeID
	g.stop(away)
	// A write sent again after an attempt of unknown outcome may write
	// the key twice: the same value, or a second tombstone replacing the
	// first, all stamped at the same time of the manual clock.
	put := func(key string) {
		t.Helper()
		if _, err := g.put(t, []byte(key), []byte("v"), Strong); err != nil {
			t.Fatal(err)
		}
	}
	del := func(key string) {
		t.Helper()
		if _, err := g.del(t, []byte(key), Strong); err != nil {
			t.Fatal(err)
		}
	}
	put("live")
	for _, k := range []string{"old1", "old2", "old3"} {
		put(k)
		del(k)
	}
	clock.advance(30 * time.Minute)
	put("young")
	del("young")

	for _, step := range []struct {
		name    string
		advance time.Duration // of the clock before the purge
		purged  int
		left    int // tombstones left
	}{
		{"every tombstone younger than the grace", 0, 0, 4},
		{"the three older than the grace", purgeGrace - 30*time.Minute + time.Millisecond, 3, 1},
		{"nothing twice", 0, 0, 1},
		{"the last one once it is old enough", 30 * time.Minute, 1, 0},
	} {
		clock.advance(step.advance)
		var n int
		by, unknown, err := g.onPrimary(t, "purge", func(r *Replica) (err error) {
			n, err = r.PurgeTombstones(ctx)
			return err
		})
		// An attempt of unknown outcome may have purged them already: the
		// purge sent again then finds nothing to remove.
		if err != nil || n != step.purged && (unknown == 0 || n != 0) {
			t.Fatalf("%s: purge = %d, %v after %d attempts of unknown outcome; want %d", step.name, n, err, unknown, step.purged)
		}
		if got := by.Tombstones(); got != step.left {
			t.Fatalf("%s: %d tombstones left on the primary, want %d", step.name, got, step.left)
		}
		l = by
	}

	g.start(away)
	g.converged()
	for _, id := range g.ids {
		r := g.reps[id]
		eventually(t, "every replica to apply the purges", func() bool { return r.AppliedIndex() >= l.AppliedIndex() })
		if it, ok := r.Store().Get([]byte("live")); !ok || string(it.Value) != "v" {
			t.Fatalf("%s: live key %q, %v after the purges", id, it.Value, ok)
		}
		if n := r.Tombstones(); n != 0 {
			t.Fatalf("%s: %d tombstones after the purges, want 0", id, n)
		}
	}
}

// TestLateWriteAfterPurge pins down what docs/design.md ("Versions and
// conflicts") says a late write does once its key's tombstone is purged.
// The only writes that reach the log with an old stamp are re-offered fast
// writes, so the late write here is a Reoffer. Key k is put (v1) at t0 and
// deleted (v2) at t0+10s; the late write is a put stamped t0+5s, as a
// primary deposed after the first put would have numbered and stamped it.
func TestLateWriteAfterPurge(t *testing.T) {
	for _, tc := range []struct {
		name  string
		purge bool // purge the delete's tombstone
		// newWrite puts "new" after the delete (and the purge), before the
		// late write arrives; newVersion is the version it must get.
		newWrite    bool
		newVersion  uint64
		lateVersion uint64
		// want is the key's value at the end ("" for none) and lost whether
		// the late write lost the conflict rule.
		want string
		lost bool
	}{
		{name: "before the purge the tombstone stops it", lateVersion: 2, want: "", lost: true},
		{name: "after the purge it brings the key back", purge: true, lateVersion: 2, want: "late"},
		{name: "without a purge a new write numbers on and wins", newWrite: true, newVersion: 3, lateVersion: 2, want: "new", lost: true},
		{name: "after the purge a new write starts at version 1 and a late version 2 overwrites it",
			purge: true, newWrite: true, newVersion: 1, lateVersion: 2, want: "late"},
		{name: "after the purge a late version 1 loses to the newer version 1",
			purge: true, newWrite: true, newVersion: 1, lateVersion: 1, want: "new", lost: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := newManualClock()
			g := newPurgeGroup(t, clock)
			l := g.leader()
			ctx := context.Background()
			key := []byte("k")
			t0 := clock.hlc.Now()
			if st, err := l.Put(ctx, key, []byte("old"), Strong); err != nil || st.Version != 1 {
				t.Fatalf("put: %v, %v", st, err)
			}
			clock.advance(10 * time.Second)
			if st, err := l.Delete(ctx, key, Strong); err != nil || st.Version != 2 {
				t.Fatalf("delete: %v, %v", st, err)
			}
			if tc.purge {
				clock.advance(purgeGrace + time.Second)
				if n, err := l.PurgeTombstones(ctx); n != 1 || err != nil {
					t.Fatalf("purge = %d, %v; want 1", n, err)
				}
			}
			if tc.newWrite {
				st, err := l.Put(ctx, key, []byte("new"), Strong)
				if err != nil || st.Version != tc.newVersion {
					t.Fatalf("new write after the delete: %v, %v; want version %d", st, err, tc.newVersion)
				}
			}
			late := fsm.Put{RequestID: 42, Key: key, Value: []byte("late"), Stamp: fsm.Stamp{
				Version: tc.lateVersion, Timestamp: hlc.Timestamp{WallTime: t0.WallTime + int64(5*time.Second)},
			}}
			lostBefore := l.Stats().ReofferLost.Load()
			if err := l.Reoffer(ctx, encodeEntry(flagFast, late)); err != nil {
				t.Fatal(err)
			}
			if lost := l.Stats().ReofferLost.Load() > lostBefore; lost != tc.lost {
				t.Fatalf("late write lost = %v, want %v", lost, tc.lost)
			}
			it, err := l.Get(ctx, key, Quorum)
			switch {
			case tc.want == "" && !errors.Is(err, ErrNotFound):
				t.Fatalf("read %q %v, %v; want not found", it.Value, it.Stamp, err)
			case tc.want != "" && (err != nil || string(it.Value) != tc.want):
				t.Fatalf("read %q %v, %v; want %q", it.Value, it.Stamp, err, tc.want)
			}
			g.converged()
		})
	}
}
