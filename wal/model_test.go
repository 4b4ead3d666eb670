package wal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"testing"
)

// model is the trivial in-memory specification the WAL is checked against.
type model struct {
	streams map[uint64]*mstream
}

type mstream struct {
	first   uint64
	entries [][]byte // entries[k] has index first+k
	states  map[string]string
}

func newModel() *model { return &model{streams: make(map[uint64]*mstream)} }

func (m *model) clone() *model {
	c := newModel()
	for id, s := range m.streams {
		c.streams[id] = &mstream{first: s.first, entries: slices.Clone(s.entries), states: maps.Clone(s.states)}
	}
	return c
}

func (m *model) stream(id uint64) *mstream {
	s := m.streams[id]
	if s == nil {
		s = &mstream{states: map[string]string{}}
		m.streams[id] = s
	}
	return s
}

func (s *mstream) last() uint64 {
	if len(s.entries) == 0 {
		return 0
	}
	return s.first + uint64(len(s.entries)) - 1
}

func (m *model) gc(id uint64) {
	if s := m.streams[id]; s != nil && len(s.entries) == 0 && len(s.states) == 0 {
		delete(m.streams, id)
	}
}

type opKindM int

const (
	mAppend opKindM = iota
	mTruncateSuffix
	mTruncatePrefix
	mSetState
	mDeleteStream
)

type mop struct {
	kind   opKindM
	stream uint64
	index  uint64 // first index of an append, or the truncation argument
	n      int    // entries in an append
	key    string
	value  string
}

func (o mop) String() string {
	return fmt.Sprintf("{kind %d stream %d index %d n %d key %q}", o.kind, o.stream, o.index, o.n, o.key)
}

// apply applies o to the model and returns whether the WAL must reject it.
func (m *model) apply(o mop) (rejected bool) {
	s := m.stream(o.stream)
	defer m.gc(o.stream)
	switch o.kind {
	case mAppend:
		if len(s.entries) > 0 && o.index != s.last()+1 {
			return true
		}
		if len(s.entries) == 0 {
			s.first = o.index
		}
		for k := range o.n {
			s.entries = append(s.entries, payload(o.stream, o.index+uint64(k), 40))
		}
	case mTruncateSuffix:
		if len(s.entries) > 0 && o.index <= s.last() {
			s.entries = s.entries[:max(o.index, s.first)-s.first]
		}
	case mTruncatePrefix:
		if len(s.entries) > 0 && o.index >= s.first {
			cut := min(o.index-s.first+1, uint64(len(s.entries)))
			s.entries = s.entries[cut:]
			s.first += cut
		}
	case mSetState:
		s.states[o.key] = o.value
	case mDeleteStream:
		delete(m.streams, o.stream)
	}
	return false
}

func (o mop) run(w *WAL) error {
	ctx := context.Background()
	switch o.kind {
	case mAppend:
		entries := make([]Entry, o.n)
		for k := range entries {
			i := o.index + uint64(k)
			entries[k] = Entry{Stream: o.stream, Index: i, Data: payload(o.stream, i, 40)}
		}
		return w.Append(ctx, entries...)
	case mTruncateSuffix:
		return w.TruncateSuffix(ctx, o.stream, o.index)
	case mTruncatePrefix:
		return w.TruncatePrefix(ctx, o.stream, o.index)
	case mSetState:
		return w.SetState(ctx, o.stream, o.key, []byte(o.value))
	default:
		return w.DeleteStream(ctx, o.stream)
	}
}

// randomOp draws an operation, mostly valid, on a few streams.
func (m *model) randomOp(r *rand.Rand) mop {
	o := mop{stream: r.Uint64N(4)}
	s := m.streams[o.stream]
	last, first := uint64(0), uint64(0)
	if s != nil && len(s.entries) > 0 {
		last, first = s.last(), s.first
	}
	switch p := r.IntN(100); {
	case p < 60:
		o.kind, o.n, o.index = mAppend, 1+r.IntN(3), last+1
		switch {
		case last == 0:
			o.index = 1 + r.Uint64N(50)
		case r.IntN(15) == 0:
			o.index = last + 2 // out of order
		}
	case p < 70:
		o.kind, o.index = mTruncateSuffix, max(1, first+r.Uint64N(last-first+3))
	case p < 85:
		o.kind, o.index = mTruncatePrefix, max(1, first+r.Uint64N(last-first+3))
	case p < 97:
		o.kind, o.key, o.value = mSetState, []string{"term", "vote"}[r.IntN(2)], strconv.Itoa(r.IntN(1000))
	default:
		o.kind = mDeleteStream
	}
	return o
}

// check compares every observable of w with m.
func (m *model) check(w *WAL) error {
	ids := slices.Sorted(maps.Keys(m.streams))
	if got := w.Streams(); !slices.Equal(got, ids) {
		return fmt.Errorf("Streams() = %v, want %v", got, ids)
	}
	for id := range uint64(5) {
		s := m.streams[id]
		if s == nil {
			s = &mstream{}
		}
		first := s.first
		if len(s.entries) == 0 {
			first = 0
		}
		if f, l := w.FirstIndex(id), w.LastIndex(id); f != first || l != s.last() {
			return fmt.Errorf("stream %d: span [%d, %d], want [%d, %d]", id, f, l, first, s.last())
		}
		for k, want := range s.entries {
			i := s.first + uint64(k)
			if got, err := w.Get(id, i); err != nil || !bytes.Equal(got, want) {
				return fmt.Errorf("Get(%d, %d) = %q, %v; want %q", id, i, got, err, want)
			}
		}
		for _, key := range []string{"term", "vote"} {
			want, wok := s.states[key]
			got, ok := w.State(id, key)
			if ok != wok || string(got) != want {
				return fmt.Errorf("State(%d, %q) = %q, %v; want %q, %v", id, key, got, ok, want, wok)
			}
		}
	}
	return nil
}

// modelSeeds returns the seeds to run: WAL_SEED=n reruns one, WAL_SEEDS=n
// runs n for a longer soak.
func modelSeeds(n int) []uint64 {
	if s, err := strconv.ParseUint(os.Getenv("WAL_SEED"), 10, 64); err == nil {
		return []uint64{s}
	}
	if s, err := strconv.Atoi(os.Getenv("WAL_SEEDS")); err == nil {
		n = s
	}
	seeds := make([]uint64, n)
	for i := range seeds {
		seeds[i] = uint64(i) + 1
	}
	return seeds
}

// Random operations with random reopens, on segments small enough that
// rolls, deletions and compactions happen all the time.
func TestModel(t *testing.T) {
	for _, seed := range modelSeeds(12) {
		r := rand.New(rand.NewPCG(seed, 0))
		fs := NewMemFS()
		opts := smallOpts(fs)
		opts.CacheEntries = r.IntN(5) - 1
		m := newModel()
		w := mustOpen(t, testDir, opts)
		reclaimed := uint64(0) // counters restart at each Open
		for step := range 1500 {
			o := m.randomOp(r)
			rejected := m.apply(o)
			if err := o.run(w); (err != nil) != rejected || (rejected && !errors.Is(err, ErrOutOfOrder)) {
				t.Fatalf("seed %d step %d: %v returned %v, model rejects: %v (rerun with WAL_SEED=%d)", seed, step, o, err, rejected, seed)
			}
			if r.IntN(100) == 0 {
				reclaimed += w.Stats().SegmentsDeleted
				mustClose(t, w)
				w = mustOpen(t, testDir, opts)
			}
			if r.IntN(50) == 0 || step == 1499 {
				if err := m.check(w); err != nil {
					t.Fatalf("seed %d step %d: %v (rerun with WAL_SEED=%d)", seed, step, err, seed)
				}
			}
		}
		if reclaimed+w.Stats().SegmentsDeleted == 0 {
			t.Fatalf("seed %d: no reclamation happened; the test is not exercising it", seed)
		}
		mustClose(t, w)
	}
}
