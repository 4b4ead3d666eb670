package shard

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/ringkv/ringkv/fsm"
	"github.com/ringkv/ringkv/hlc"
	"github.com/ringkv/ringkv/internal/storage"
)

// TestBadInputNeverReachesTheLog: every entry point of the replica API that
// takes a key or value checks it itself, whoever calls it: bad input gets
// its typed *fsm.LimitError and leaves no trace, neither in the log nor in
// the overlay. Apply checks again, but too late: a fast write is
// acknowledged before it is applied, and an entry would be spent. The
// first, valid, write is sent again if it meets an election (group.put),
// and the checks are on the primary that took it.
func TestBadInputNeverReachesTheLog(t *testing.T) {
	g := newGroup(t, nil)
	g.leader()
	ctx := context.Background()
	w, err := g.put(t, []byte("k"), []byte("v"), Strong)
	if err != nil {
		t.Fatal(err)
	}
	l := w.by
	before := dumpItems(l.Store())
	last := l.Raft().LastIndex()

	long := bytes.Repeat([]byte("k"), fsm.DefaultMaxKeySize+1)
	huge := make([]byte, fsm.DefaultMaxValueSize+1)
	type call struct {
		name string
		do   func() error
		want error
	}
	var calls []call
	for _, m := range []WriteMode{Strong, Fast} {
		for _, tc := range []struct {
			what       string
			key, value []byte
			want       error
		}{
			{"empty key", nil, []byte("v"), fsm.ErrEmptyKey},
			{"key too large", long, []byte("v"), fsm.ErrKeyTooLarge},
			{"value too large", []byte("k"), huge, fsm.ErrValueTooLarge},
		} {
			calls = append(calls, call{fmt.Sprintf("%v put, %s", m, tc.what), func() error {
				_, err := l.Put(ctx, tc.key, tc.value, m)
				return err
			}, tc.want})
		}
		calls = append(calls,
			call{fmt.Sprintf("%v delete, empty key", m), func() error { _, err := l.Delete(ctx, nil, m); return err }, fsm.ErrEmptyKey},
			call{fmt.Sprintf("%v delete, key too large", m), func() error { _, err := l.Delete(ctx, long, m); return err }, fsm.ErrKeyTooLarge})
	}
	for _, m := range []ReadMode{Local, Quorum} {
		calls = append(calls,
			call{fmt.Sprintf("%v get, empty key", m), func() error { _, err := l.Get(ctx, []byte{}, m); return err }, fsm.ErrEmptyKey},
			call{fmt.Sprintf("%v get, key too large", m), func() error { _, err := l.Get(ctx, long, m); return err }, fsm.ErrKeyTooLarge})
	}
	for _, c := range calls {
		err := c.do()
		var le *fsm.LimitError
		if !errors.Is(err, c.want) || !errors.As(err, &le) {
			t.Errorf("%s: %v, want a *fsm.LimitError matching %v", c.name, err, c.want)
		}
	}
	if got := l.Raft().LastIndex(); got != last {
		t.Errorf("bad input reached the log: last index %d → %d", last, got)
	}
	l.pendingMu.Lock()
	overlay := len(l.overlay)
	l.pendingMu.Unlock()
	if records, _ := l.journal.depth(); overlay != 0 || records != 0 || l.Stats().FastUncommitted.Load() != 0 {
		t.Errorf("bad input left %d overlay keys, %d journal records, %d uncommitted fast writes", overlay, records, l.Stats().FastUncommitted.Load())
	}
	if after := dumpItems(l.Store()); !bytes.Equal(after, before) {
		t.Errorf("bad input changed the store:\n%s\nwas\n%s", after, before)
	}
}

// memStore is an empty store in an engine of its own, in memory.
func memStore(t *testing.T) *fsm.Store {
	t.Helper()
	eng, err := storage.Open(storage.Options{Dir: "/engine", FS: vfs.NewMem(), CacheSize: 1 << 20, MemTableSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Close() })
	store, err := fsm.New(fsm.Options{}, eng.Partition(7))
	if err != nil {
		t.Fatal(err)
	}
	return store
}

// bareReplica is a Replica without raft: its store and overlay, for tests that drive the apply and log-store callbacks directly.
func bareReplica(t *testing.T) *Replica {
	t.Helper()
	return &Replica{store: memStore(t), log: hclog.NewNullLogger(), overlay: map[string]*pendingKey{},
		proposeSeed: maphash.MakeSeed()}
}

// TestApplyRefusesInvalidEntries: a log entry is input too. Whatever reaches
// the log — an entry that does not decode, or a command breaking the limits
// — Apply refuses on every replica alike: it answers the proposer with the
// typed error, changes no key, and consumes the index.
func TestApplyRefusesInvalidEntries(t *testing.T) {
	r := bareReplica(t)
	store := r.store
	a := (*fsmAdapter)(r)
	st := func(v uint64) fsm.Stamp { return fsm.Stamp{Version: v, Timestamp: hlc.Timestamp{WallTime: int64(v)}} }
	apply := func(index uint64, data []byte) applyResult {
		t.Helper()
		res, ok := a.Apply(&raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: data}).(applyResult)
		if !ok {
			t.Fatalf("entry %d: Apply answered %T, want an applyResult", index, res)
		}
		return res
	}
	if res := apply(1, encodeEntry(0, fsm.Put{RequestID: 1, Key: []byte("k"), Value: []byte("v"), Stamp: st(1)})); res.err != nil {
		t.Fatal(res.err)
	}
	before := dumpItems(store)

	good := encodeEntry(flagFast, fsm.Put{RequestID: 2, Key: []byte("k"), Value: []byte("newer"), Stamp: st(2)})
	long := bytes.Repeat([]byte("k"), fsm.DefaultMaxKeySize+1)
	huge := make([]byte, fsm.DefaultMaxValueSize+1)
	tests := []struct {
		name string
		data []byte
		want error
	}{
		{"empty", nil, fsm.ErrMalformedCommand},
		{"flags only", []byte{flagFast}, fsm.ErrMalformedCommand},
		{"not a command", []byte{0, 0xde, 0xad, 0xbe, 0xef}, fsm.ErrMalformedCommand},
		{"truncated", good[:len(good)-1], fsm.ErrMalformedCommand},
		{"trailing byte", append(bytes.Clone(good), 0), fsm.ErrMalformedCommand},
		{"a bit flipped in the format", append([]byte{flagFast, good[1] ^ 2}, good[2:]...), fsm.ErrMalformedCommand},
		{"empty key", encodeEntry(0, fsm.Put{Value: []byte("v"), Stamp: st(2)}), fsm.ErrEmptyKey},
		{"key too large", encodeEntry(flagFast, fsm.Put{Key: long, Value: []byte("v"), Stamp: st(2)}), fsm.ErrKeyTooLarge},
		{"value too large", encodeEntry(0, fsm.Put{Key: []byte("k"), Value: huge, Stamp: st(2)}), fsm.ErrValueTooLarge},
		{"delete of an empty key", encodeEntry(flagFast, fsm.Delete{Stamp: st(2)}), fsm.ErrEmptyKey},
		{"a bad write in a batch", encodeEntry(0, fsm.Batch{Writes: []fsm.Write{
			fsm.Put{Key: []byte("k"), Value: []byte("newer"), Stamp: st(2)},
			fsm.Delete{Key: long, Stamp: st(2)},
		}}), fsm.ErrKeyTooLarge},
	}
	index := uint64(1)
	for _, tc := range tests {
		index++
		res := apply(index, tc.data)
		if !errors.Is(res.err, tc.want) {
			t.Errorf("%s: Apply error %v, want %v", tc.name, res.err, tc.want)
		}
		if got := store.AppliedIndex(); got != index {
			t.Errorf("%s: applied index %d, want %d: a refused entry is still consumed", tc.name, got, index)
		}
		if after := dumpItems(store); !bytes.Equal(after, before) {
			t.Errorf("%s: the refused entry changed the store:\n%s\nwas\n%s", tc.name, after, before)
		}
	}
	index++
	if res := apply(index, good); res.err != nil || len(res.res.Writes) != 1 || res.res.Writes[0].Outcome != fsm.Won {
		t.Fatalf("a valid entry after the refused ones: %+v", res)
	}
}

// TestEngineFailureStopsTheReplica: an entry the engine cannot apply (here a
// read error while Apply checks the conflict rule) is not skipped: the
// replica panics, so the process stops and Raft replays the entry when it
// restarts, instead of going on with a state behind its log.
func TestEngineFailureStopsTheReplica(t *testing.T) {
	var failReads atomic.Bool
	fs := errorfs.Wrap(vfs.NewMem(), errorfs.InjectorFunc(func(op errorfs.Op) error {
		if failReads.Load() && op.Kind == errorfs.OpFileReadAt {
			return errorfs.ErrInjected
		}
		return nil
	}))
	eng, err := storage.Open(storage.Options{Dir: "/engine", FS: fs, CacheSize: 1 << 20, MemTableSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	store, err := fsm.New(fsm.Options{}, eng.Partition(7))
	if err != nil {
		t.Fatal(err)
	}
	r := &Replica{store: store, log: hclog.NewNullLogger(), overlay: map[string]*pendingKey{}}
	put := func(index uint64) fsm.Command {
		return fsm.Put{Key: []byte("k"), Value: []byte("v"), Stamp: fsm.Stamp{Version: index}}
	}
	if _, _, err := r.applyEntry(1, put(1)); err != nil {
		t.Fatal(err)
	}
	if err := eng.Flush(); err != nil {
		t.Fatal(err)
	}
	failReads.Store(true)
	defer func() {
		failReads.Store(false)
		if recover() == nil {
			t.Fatal("an entry the engine failed to apply was skipped")
		}
		if store.AppliedIndex() != 1 {
			t.Fatalf("applied index %d after the failure, want 1", store.AppliedIndex())
		}
	}()
	r.applyEntry(2, put(2))
}
