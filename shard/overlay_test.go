package shard

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/ringkv/ringkv/fsm"
	"github.com/ringkv/ringkv/hlc"
	"github.com/ringkv/ringkv/internal/testing/wait"
)

// TestFastWriteKeepsNoCallerBuffer: what the overlay shows of an
// acknowledged fast write is the replica's own copy, so a caller may reuse
// its key and value buffers once Put returns. The read right after the ack
// usually precedes the commit, so it comes from the overlay. A write that
// meets an election is sent again (group.put); a primary that has lost
// leadership since its ack answers the read NotPrimary, its overlay
// dropped, and has nothing left to check.
func TestFastWriteKeepsNoCallerBuffer(t *testing.T) {
	g := newGroup(t, nil)
	g.leader()
	ctx := context.Background()
	key, value := make([]byte, 8), make([]byte, 64)
	for i := range 100 {
		want := fmt.Sprintf("value %d", i)
		copy(key, fmt.Sprintf("key%05d", i%7))
		value = append(value[:0], want...)
		w, err := g.put(t, key, value, Fast)
		if err != nil {
			t.Fatal(err)
		}
		wantKey := string(key)
		for j := range key {
			key[j] = 'x'
		}
		for j := range value {
			value[j] = 'x'
		}
		it, err := w.by.Get(ctx, []byte(wantKey), Local)
		if errors.Is(err, ErrNotPrimary) {
			t.Logf("write %d: its primary lost leadership before the read", i)
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if string(it.Key) != wantKey || string(it.Value) != want {
			t.Fatalf("write %d: local read %q=%q, want %q=%q", i, it.Key, it.Value, wantKey, want)
		}
	}
}

// TestShowFastAfterApply: a fast write's writer may wake from its ack only
// after the store applied the write (it is descheduled, say) while a newer
// write to the key keeps the key in the overlay. Showing the write then would
// leave a visible write that nothing retires until the key's next write
// applies, and miscount Stats.FastUncommitted; shown before the apply, it is
// retired by it.
func TestShowFastAfterApply(t *testing.T) {
	r := bareReplica(t)
	key := []byte("k")
	write := func(v uint64) ([]byte, fsm.Item) {
		return fsm.AppendWrite([]byte{flagFast}, fsm.Put{RequestID: v, Key: key, Value: []byte("v"), Stamp: fsm.Stamp{Version: v, Timestamp: hlc.Timestamp{WallTime: int64(v)}}})
	}
	state := func() (visible *fsm.Item, inOverlay bool, uncommitted int64) {
		pk := r.overlay[string(key)]
		if pk != nil {
			visible = pk.visible
		}
		return visible, pk != nil, r.stats.FastUncommitted.Load()
	}

	// Shown before its apply: visible until the apply retires it.
	pk := &pendingKey{version: 1}
	r.overlay[string(key)] = pk
	entry, it := write(1)
	r.showFast(pk, it)
	if vis, _, n := state(); vis == nil || vis.Stamp != it.Stamp || n != 1 {
		t.Fatalf("before the apply: visible %v, %d uncommitted; want the write, 1", vis, n)
	}
	(*fsmAdapter)(r).Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: entry})
	if vis, in, n := state(); vis != nil || in || n != 0 {
		t.Fatalf("after the apply: visible %v, in overlay %v, %d uncommitted; want nothing left", vis, in, n)
	}

	// Shown after its apply, with a newer write proposed: nothing to show.
	pk = &pendingKey{version: 3}
	r.overlay[string(key)] = pk
	entry, it = write(2)
	(*fsmAdapter)(r).Apply(&raft.Log{Index: 2, Type: raft.LogCommand, Data: entry})
	r.showFast(pk, it)
	if vis, in, n := state(); vis != nil || !in || n != 0 {
		t.Fatalf("shown after its apply: visible %v, in overlay %v, %d uncommitted; want nothing visible, the key kept for version 3", vis, in, n)
	}

	// Shown after its apply retired the key: the writer's entry is gone,
	// and a later write's entry does not take the shown write.
	pk = &pendingKey{version: 4}
	r.overlay[string(key)] = pk
	entry, it = write(4)
	(*fsmAdapter)(r).Apply(&raft.Log{Index: 3, Type: raft.LogCommand, Data: entry})
	r.overlay[string(key)] = &pendingKey{version: 5}
	r.showFast(pk, it)
	if vis, _, n := state(); vis != nil || n != 0 {
		t.Fatalf("shown after its key retired: visible %v, %d uncommitted; want nothing", vis, n)
	}
}

// TestOverlayEmptiesOnceApplied: once every write a primary proposed is
// applied, its overlay holds nothing and Stats.FastUncommitted is back to 0.
// A write that meets an election is sent again to the new primary
// (group.put, group.del): the check is then on the primary at the end, a
// replica that lost leadership having dropped its overlay; and no replica
// keeps a proposal pending once its writer has returned.
func TestOverlayEmptiesOnceApplied(t *testing.T) {
	g := newGroup(t, nil)
	g.leader()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				mode := Fast
				if i%3 == 0 {
					mode = Strong
				}
				key := []byte(fmt.Sprintf("k%d", (w+i)%5))
				var err error
				if i%7 == 0 {
					_, err = g.del(t, key, mode)
				} else {
					_, err = g.put(t, key, []byte(fmt.Sprint(w, i)), mode)
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	wait.For(t, waitFor, "the overlay to empty", func() (bool, string) {
		for _, id := range g.ids {
			r := g.reps[id]
			primary := r.IsPrimary()
			r.pendingMu.Lock()
			overlay := len(r.overlay)
			r.pendingMu.Unlock()
			uncommitted := r.stats.FastUncommitted.Load()
			records, _ := r.journal.depth()
			if records != 0 || primary && (overlay != 0 || uncommitted != 0) {
				return false, fmt.Sprintf("%s (primary %v): %d keys in the overlay, %d journal records, FastUncommitted %d",
					id, primary, overlay, records, uncommitted)
			}
		}
		return g.primary() != nil, "no primary"
	})
}
