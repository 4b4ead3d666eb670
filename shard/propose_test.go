package shard

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/ringkv/ringkv/fsm"
)

type queuedSpec struct {
	key  string
	size int // of the value
	mode WriteMode
}

// proposedEntry is a log entry as a proposer made it.
type proposedEntry struct {
	index  uint64
	fast   bool
	writes []fsm.Write
}

// release says who proposes the writes proposeQueue held.
type release int

const (
	byProposer release = iota // a proposer, finding them queued after its turn
	byStoreEnd                // the end of a log store, on raft's goroutine
)

// proposeQueue queues writes, in the order given, while they cannot be
// proposed, then has the whole queue proposed as how says, and returns the
// entries that made, in log order. r's group must be idle: a log store of
// its own would propose the queue early.
func proposeQueue(t *testing.T, r *Replica, how release, specs ...queuedSpec) []proposedEntry {
	t.Helper()
	r.proposeMu.Lock()
	if r.proposing || r.storing {
		r.proposeMu.Unlock()
		t.Fatal("the replica is proposing or storing")
	}
	if how == byProposer {
		r.proposing = true
	} else {
		r.storing = true
	}
	r.proposeMu.Unlock()
	queued := func() int {
		r.proposeMu.Lock()
		defer r.proposeMu.Unlock()
		return len(r.queue)
	}
	errs := make(chan error, len(specs))
	for i, sp := range specs {
		go func() {
			_, err := r.Put(context.Background(), []byte(sp.key), bytes.Repeat([]byte{'v'}, sp.size), sp.mode)
			errs <- err
		}()
		eventually(t, fmt.Sprintf("write %d queued", i), func() bool { return queued() == i+1 })
	}
	r.proposeMu.Lock()
	batch := append([]*queuedWrite(nil), r.queue...)
	r.proposeMu.Unlock()
	if how == byProposer {
		r.proposeMu.Lock()
		queued := r.takeQueue()
		r.proposeMu.Unlock()
		r.proposeQueued(queued)
	} else {
		r.setStoring(false)
	}
	for range specs {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	var out []proposedEntry
	for _, w := range batch {
		<-w.done
		if w.err != nil {
			t.Fatal(w.err)
		}
		index := w.index
		if len(out) > 0 && out[len(out)-1].index == index {
			continue
		}
		var l raft.Log
		if err := r.logs.GetLog(index, &l); err != nil {
			t.Fatal(err)
		}
		flags, cmd, err := decodeEntry(l.Data)
		if err != nil {
			t.Fatal(err)
		}
		e := proposedEntry{index: index, fast: flags&flagFast != 0}
		if b, ok := cmd.(fsm.Batch); ok {
			e.writes = b.Writes
		} else {
			e.writes = []fsm.Write{cmd.(fsm.Write)}
		}
		out = append(out, e)
	}
	return out
}

// proposeTogether makes one entry of writes to keys, in mode.
func proposeTogether(t *testing.T, r *Replica, mode WriteMode, keys ...string) proposedEntry {
	t.Helper()
	var specs []queuedSpec
	for _, k := range keys {
		specs = append(specs, queuedSpec{key: k, size: 8, mode: mode})
	}
	entries := proposeQueue(t, r, byProposer, specs...)
	if len(entries) != 1 {
		t.Fatalf("%d writes made %d entries, want 1", len(keys), len(entries))
	}
	return entries[0]
}

// TestQueuedWritesShareEntries: the writes queued while raft is busy become
// as few entries as the rules allow — one per run of a mode, none over
// maxEntryBytes unless one write alone is — in queue order, and each write
// is acknowledged and applied.
func TestQueuedWritesShareEntries(t *testing.T) {
	g := newGroup(t, nil)
	l := g.leader()
	const big = 400 << 10 // three make more than maxEntryBytes
	huge := 1<<20 - 64    // over maxEntryBytes with any other write
	tests := []struct {
		name  string
		specs []queuedSpec
		want  [][]string // keys of each entry
	}{
		{"one mode, one entry", []queuedSpec{{"a", 8, Strong}, {"b", 8, Strong}, {"c", 8, Strong}, {"a", 8, Strong}},
			[][]string{{"a", "b", "c", "a"}}},
		{"fast writes together", []queuedSpec{{"a", 8, Fast}, {"b", 8, Fast}}, [][]string{{"a", "b"}}},
		{"a run per mode, in order", []queuedSpec{{"a", 8, Strong}, {"b", 8, Fast}, {"c", 8, Fast}, {"a", 8, Strong}},
			[][]string{{"a"}, {"b", "c"}, {"a"}}},
		{"split at the size bound", []queuedSpec{{"x", big, Strong}, {"y", big, Strong}, {"z", big, Strong}},
			[][]string{{"x", "y"}, {"z"}}},
		{"a write over the bound goes alone", []queuedSpec{{"a", 8, Fast}, {"h", huge, Fast}, {"b", 8, Fast}},
			[][]string{{"a"}, {"h"}, {"b"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want := map[string]uint64{} // each key's version after the writes
			for _, sp := range tc.specs {
				if _, ok := want[sp.key]; !ok {
					want[sp.key] = l.currentVersion([]byte(sp.key))
				}
				want[sp.key]++
			}
			entries := proposeQueue(t, l, byProposer, tc.specs...)
			if len(entries) != len(tc.want) {
				t.Fatalf("%d entries, want %d", len(entries), len(tc.want))
			}
			i := 0
			for n, e := range entries {
				if n > 0 && e.index <= entries[n-1].index {
					t.Fatalf("entry %d at index %d follows index %d", n, e.index, entries[n-1].index)
				}
				if len(e.writes) != len(tc.want[n]) {
					t.Fatalf("entry %d holds %d writes, want %d", n, len(e.writes), len(tc.want[n]))
				}
				for k, w := range e.writes {
					sp := tc.specs[i]
					var key []byte
					forEachWrite(w, func(_ uint64, it fsm.Item) { key = it.Key })
					if string(key) != tc.want[n][k] || e.fast != (sp.mode == Fast) {
						t.Fatalf("entry %d write %d: key %q fast %v, want %q %v", n, k, key, e.fast, tc.want[n][k], sp.mode == Fast)
					}
					i++
				}
			}
			// A key written twice got consecutive versions, in log order:
			// the later one won.
			for key, v := range want {
				it, err := l.Get(context.Background(), []byte(key), Quorum)
				if err != nil || it.Version != v {
					t.Fatalf("key %q at version %d (%v), want %d", key, it.Version, err, v)
				}
			}
		})
	}
	g.converged()
}

// TestStoreEndProposesQueuedWrites: writes that queued while raft stored
// are proposed when the store ends, as one entry, from raft's goroutine
// while few entries are outstanding and from a goroutine of their own past
// maxOutstanding, where raft's goroutine could block on its own channel.
func TestStoreEndProposesQueuedWrites(t *testing.T) {
	g := newGroup(t, nil)
	l := g.leader()
	for _, outstanding := range []int32{0, maxOutstanding} {
		t.Run(fmt.Sprintf("outstanding=%d", outstanding), func(t *testing.T) {
			l.outstanding.Add(outstanding)
			defer l.outstanding.Add(-outstanding)
			specs := []queuedSpec{{"a", 8, Fast}, {"b", 8, Fast}, {"c", 8, Fast}}
			entries := proposeQueue(t, l, byStoreEnd, specs...)
			if len(entries) != 1 || len(entries[0].writes) != len(specs) {
				t.Fatalf("%d writes made %d entries, want 1", len(specs), len(entries))
			}
		})
	}
	if n := l.outstanding.Load(); n != 0 {
		t.Fatalf("%d entries outstanding once all are done", n)
	}
}

func TestCarries(t *testing.T) {
	put := fsm.Put{RequestID: 1, Key: []byte("k"), Value: []byte("v"), Stamp: fsm.Stamp{Version: 3}}
	del := fsm.Delete{RequestID: 1, Key: []byte("k"), Stamp: fsm.Stamp{Version: 3}}
	otherID, otherKey, otherStamp := put, put, put
	otherID.RequestID = 2
	otherKey.Key = []byte("j")
	otherStamp.Version = 4
	tests := []struct {
		name string
		cmd  fsm.Command
		w    fsm.Write
		want bool
	}{
		{"itself", put, put, true},
		{"in a batch", fsm.Batch{Writes: []fsm.Write{otherKey, put}}, put, true},
		{"another request", put, otherID, false},
		{"another key", fsm.Batch{Writes: []fsm.Write{put}}, otherKey, false},
		{"another stamp", put, otherStamp, false},
		{"a delete is not a put", del, put, false},
		{"a delete in a batch", fsm.Batch{Writes: []fsm.Write{put, del}}, del, true},
		{"not a write", fsm.PurgeTombstones{}, put, false},
		{"an empty batch", fsm.Batch{}, put, false},
	}
	for _, tc := range tests {
		if got := carries(tc.cmd, tc.w); got != tc.want {
			t.Errorf("%s: carries = %v, want %v", tc.name, got, tc.want)
		}
	}
}
