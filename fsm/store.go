// Package fsm is the replicated state machine of one partition: an ordered,
// versioned in-memory key-value store fed by Raft log entries (Commands) and
// saved or restored as a snapshot stream.
//
// Invariants:
//   - Apply is deterministic. It reads no clock and no randomness and never
//     depends on map order, so replicas applying the same log reach the same
//     state; a snapshot stream is a pure function of that state.
//   - A write to a key wins iff its Stamp (version, timestamp) is greater than
//     the key's current one; an equal Stamp is the same write applied again
//     and changes nothing. Deletes leave versioned tombstones, removed only
//     by a PurgeTombstones command carrying its cutoff.
//   - A Snapshot is an immutable copy-on-write clone of the B-tree (an
//     O(1) operation) and never stops writers. The clone is taken when a
//     reader first asks for a Snapshot after a change, not after every
//     Apply: a clone marks every node shared, and the writes after it copy
//     their paths, which behind every Apply was a third of a write-heavy
//     node's allocations. So taking a Snapshot may wait for the Apply in
//     progress (never for a Restore, which builds its state aside). After
//     every Apply the store publishes the applied index and key counts
//     through an atomic pointer; Snapshot reads, Range, Len and
//     AppliedIndex see each Apply whole or not at all.
//   - Store.Get and Store.Lookup, the latest-state point reads, go through a
//     hash index beside the tree instead (see index.go). The writer updates
//     it write by write, before publishing the Snapshot that carries the
//     entry's index, so a point read is never behind AppliedIndex: once a
//     reader has seen AppliedIndex() >= i, it sees every write of entries up
//     to i. It may be ahead: during a Batch it can show one key's new state
//     and another's old one. A point read takes a read lock on one of 256
//     index shards, which the writer holds only for one map assignment.
//   - A Command that fails validation changes no key; AppliedIndex still
//     advances past its entry, which was consumed, so waiters on the index
//     make progress.
//   - Restore either installs the whole verified snapshot or leaves the
//     store as it was.
//
// Keys and values handed out by reads alias the store's memory, which is
// never modified once published; callers must not modify them either.
package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/google/btree"

	"github.com/ringkv/ringkv/hlc"
)

// ErrStaleIndex reports an Apply whose log index is not after the applied
// index, which would replay or reorder the log.
var ErrStaleIndex = errors.New("fsm: log index not after applied index")

// btreeDegree came out best of 8, 16 and 32 on a 1M-key store: larger nodes
// make the path copy behind every published write dearer, smaller ones make
// the tree deeper and Get slower.
const btreeDegree = 16

// item is what the B-tree holds: the key inline, so comparisons touch one
// less pointer, and the immutable entry it maps to.
type item struct {
	key []byte
	e   *entry
}

// entry is one key's state, shared by the B-tree and the point index. It
// holds its key too, so a point read can hand it out without the tree.
type entry struct {
	kv        []byte // key then value, one allocation
	keyLen    int
	stamp     Stamp
	tombstone bool
}

func (e *entry) key() []byte { return e.kv[:e.keyLen:e.keyLen] }

// value is nil for a tombstone.
func (e *entry) value() []byte {
	if e.tombstone {
		return nil
	}
	return e.kv[e.keyLen:]
}

func (e *entry) export() Item {
	return Item{Key: e.key(), Value: e.value(), Tombstone: e.tombstone, Stamp: e.stamp}
}

func lessKey(a, b item) bool { return bytes.Compare(a.key, b.key) < 0 }

// lessTombstone orders the tombstone index by timestamp, then key, so a
// purge walks exactly the expired tombstones, oldest first.
func lessTombstone(a, b item) bool {
	if c := a.e.stamp.Timestamp.Compare(b.e.stamp.Timestamp); c != 0 {
		return c < 0
	}
	return lessKey(a, b)
}

// newItem copies w's key and value into one allocation the store owns.
func newItem(w write) item {
	kv := make([]byte, len(w.key)+len(w.value))
	n := copy(kv, w.key)
	copy(kv[n:], w.value)
	e := &entry{kv: kv, keyLen: n, stamp: w.stamp, tombstone: w.tombstone}
	return item{key: e.key(), e: e}
}

// Item is one key's current state. Version and Timestamp are promoted from
// Stamp.
type Item struct {
	Key       []byte
	Value     []byte // nil for a tombstone
	Tombstone bool
	Stamp
}

// Outcome says what a write did.
type Outcome uint8

const (
	// Won: the key was absent or held a smaller Stamp; the write is stored.
	Won Outcome = iota + 1
	// AlreadyApplied: the key already holds this exact Stamp; nothing changed.
	AlreadyApplied
	// Lost: the key holds a greater Stamp; nothing changed.
	Lost
)

func (o Outcome) String() string {
	switch o {
	case Won:
		return "won"
	case AlreadyApplied:
		return "already applied"
	case Lost:
		return "lost"
	}
	return fmt.Sprintf("Outcome(%d)", uint8(o))
}

// WriteResult reports one Put or Delete.
type WriteResult struct {
	RequestID uint64
	Outcome   Outcome
	// Current is the key's Stamp after the write: the write's own unless it
	// Lost, in which case it is the winner's.
	Current Stamp
}

// Result reports an applied Command.
type Result struct {
	Writes []WriteResult // one per Put or Delete, in command order
	Purged int           // tombstones removed by PurgeTombstones
}

// Snapshot is an immutable view of the store as of one applied index. Taking
// one is O(1); it stays valid and unchanged however the store moves on.
type Snapshot struct {
	tree    *btree.BTreeG[item]
	applied uint64
	live    int // keys holding a value
	dead    int // keys holding a tombstone
}

// Lookup returns key's state, tombstone included, so a caller can write
// "current version + 1" after a delete.
func (s *Snapshot) Lookup(key []byte) (Item, bool) {
	it, ok := s.tree.Get(item{key: key})
	if !ok {
		return Item{}, false
	}
	return it.e.export(), true
}

// Get returns key's live value; a tombstone reads as not found.
func (s *Snapshot) Get(key []byte) (Item, bool) { return live(s.Lookup(key)) }

// live hides a tombstone found by a Lookup.
func live(it Item, found bool) (Item, bool) {
	if !found || it.Tombstone {
		return Item{}, false
	}
	return it, true
}

// Range calls fn on the live keys in [start, end) in ascending order until fn
// returns false. A nil start begins at the first key, a nil end runs to the
// last.
func (s *Snapshot) Range(start, end []byte, fn func(Item) bool) {
	visit := func(it item) bool {
		if end != nil && bytes.Compare(it.key, end) >= 0 {
			return false
		}
		return it.e.tombstone || fn(it.e.export())
	}
	if start == nil {
		s.tree.Ascend(visit)
		return
	}
	s.tree.AscendGreaterOrEqual(item{key: start}, visit)
}

// Len returns the number of live keys.
func (s *Snapshot) Len() int { return s.live }

// Tombstones returns the number of tombstones awaiting purge.
func (s *Snapshot) Tombstones() int { return s.dead }

// AppliedIndex returns the index of the last log entry applied.
func (s *Snapshot) AppliedIndex() uint64 { return s.applied }

// state is the writer's side: a Snapshot whose tree is mutated in place
// (nodes shared with published clones are copied before they change), the
// point index, which readers see at once, and an index of its tombstones by
// (timestamp, key) for purges.
type state struct {
	Snapshot
	tombstones *btree.BTreeG[item]
	points     *index
	// dirty says the tree changed since it was last cloned.
	dirty bool
}

func newState() state {
	return state{
		Snapshot:   Snapshot{tree: btree.NewG(btreeDegree, lessKey)},
		tombstones: btree.NewG(btreeDegree, lessTombstone),
		points:     newIndex(),
		dirty:      true, // never cloned
	}
}

// insert stores it, replacing any item with its key, which the caller has
// already passed to forget.
func (st *state) insert(it item) {
	st.tree.ReplaceOrInsert(it)
	st.points.set(it.e)
	st.dirty = true
	if it.e.tombstone {
		st.tombstones.ReplaceOrInsert(it)
		st.dead++
		return
	}
	st.live++
}

// forget drops it from the counts and the tombstone index.
func (st *state) forget(it item) {
	if it.e.tombstone {
		st.tombstones.Delete(it)
		st.dead--
		return
	}
	st.live--
}

// write applies the conflict rule to one Put or Delete. It finds the key's
// current state in the point index, which agrees with the tree and answers
// in a fraction of the time.
func (st *state) write(w write) WriteResult {
	res := WriteResult{RequestID: w.requestID, Outcome: Won, Current: w.stamp}
	if old, found := st.points.get(w.key); found {
		switch c := w.stamp.Compare(old.stamp); {
		case c == 0:
			res.Outcome = AlreadyApplied
			return res
		case c < 0:
			res.Outcome, res.Current = Lost, old.stamp
			return res
		}
		st.forget(item{key: old.key(), e: old})
	}
	st.insert(newItem(w))
	return res
}

// purge removes the tombstones stamped before cutoff, oldest first.
func (st *state) purge(cutoff hlc.Timestamp) int {
	var expired []item
	st.tombstones.AscendLessThan(item{e: &entry{stamp: Stamp{Timestamp: cutoff}}}, func(it item) bool {
		expired = append(expired, it)
		return true
	})
	for _, it := range expired {
		st.forget(it)
		st.tree.Delete(it)
		st.points.delete(it.key)
		st.dirty = true
	}
	return len(expired)
}

// Store is the state machine of one partition. Apply and Restore serialize
// among themselves; Snapshot reads are lock-free, point reads (Get, Lookup)
// briefly share a lock with the writer (see the package doc).
type Store struct {
	cfg config
	cur atomic.Pointer[published]

	mu sync.Mutex // serializes writers; guards w
	w  state
}

// published is what readers load: a Snapshot, and the point index current
// with it. Every publication until the next Restore shares the writer's
// index; Restore's carries a new one, so readers switch tree and index in
// one atomic load. The Snapshot's tree is nil until a reader needs it.
type published struct {
	Snapshot
	points *index
}

// New returns an empty store.
func New(opts Options) (*Store, error) {
	if err := opts.check(); err != nil {
		return nil, err
	}
	s := &Store{cfg: opts.config()}
	s.install(newState())
	return s, nil
}

// install replaces the writer state and publishes it; the caller holds mu or
// owns s exclusively.
func (s *Store) install(w state) {
	s.w = w
	s.publish()
}

// publish makes the writer's state visible to readers, all but its tree:
// a tree that has not changed since it was last cloned is that clone's
// twin, which the new publication shares; a changed one is cloned only by
// Snapshot.
func (s *Store) publish() {
	p := &published{Snapshot: s.w.Snapshot, points: s.w.points}
	if s.w.dirty {
		p.tree = nil // the writer's own, not for readers
	} else {
		p.tree = s.cur.Load().tree
	}
	s.cur.Store(p)
}

// Snapshot returns the current state as an immutable view in O(1). If the
// tree changed since the last Snapshot it is cloned first, under the
// writer's lock: under it, the publication is the writer's state.
func (s *Store) Snapshot() *Snapshot {
	if p := s.cur.Load(); p.tree != nil {
		return &p.Snapshot
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.cur.Load()
	if p.tree == nil {
		q := *p
		q.tree = s.w.tree.Clone()
		s.w.dirty = false
		s.cur.Store(&q)
		p = &q
	}
	return &p.Snapshot
}

// Get returns key's latest live value; a tombstone reads as not found. Unlike
// Snapshot().Get it reads the point index: it reflects every write of the
// entries up to AppliedIndex, and possibly some of the entry being applied,
// key by key (see the package doc). Reading several keys consistently takes
// one Snapshot.
func (s *Store) Get(key []byte) (Item, bool) { return live(s.Lookup(key)) }

// Lookup returns key's latest state including a tombstone, with the
// guarantees of Get.
func (s *Store) Lookup(key []byte) (Item, bool) {
	e, ok := s.cur.Load().points.get(key)
	if !ok {
		return Item{}, false
	}
	return e.export(), true
}

// Range iterates live keys of the current state; see Snapshot.Range.
func (s *Store) Range(start, end []byte, fn func(Item) bool) { s.Snapshot().Range(start, end, fn) }

// Len returns the number of live keys.
func (s *Store) Len() int { return s.cur.Load().Len() }

// Tombstones returns the number of tombstones awaiting purge.
func (s *Store) Tombstones() int { return s.cur.Load().Tombstones() }

// AppliedIndex returns the index of the last log entry applied or restored.
func (s *Store) AppliedIndex() uint64 { return s.cur.Load().AppliedIndex() }

// Validate checks cmd against the store's limits, as Apply will.
func (s *Store) Validate(cmd Command) error { return s.cfg.validate(cmd) }

// PurgeCommand returns the PurgeTombstones a primary proposes at time now:
// its cutoff lets go of tombstones older than the tombstone grace period.
func (s *Store) PurgeCommand(now hlc.Timestamp) PurgeTombstones {
	return PurgeTombstones{Cutoff: hlc.Timestamp{WallTime: now.WallTime - int64(s.cfg.grace)}}
}

// Apply applies cmd as the log entry at index, which must be after
// AppliedIndex. An invalid cmd (see Validate) changes no key but still
// consumes its index. Apply is deterministic; the Result and error are the
// same on every replica.
func (s *Store) Apply(index uint64, cmd Command) (Result, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if index <= s.w.applied {
		return Result{}, fmt.Errorf("%w: index %d, applied %d", ErrStaleIndex, index, s.w.applied)
	}
	s.w.applied = index
	defer s.publish()
	if err := s.Validate(cmd); err != nil {
		return Result{}, err
	}
	return cmd.apply(&s.w), nil
}

func (p Put) apply(st *state) Result {
	return Result{Writes: []WriteResult{st.write(p.asWrite())}}
}

func (d Delete) apply(st *state) Result {
	return Result{Writes: []WriteResult{st.write(d.asWrite())}}
}

func (b Batch) apply(st *state) Result {
	res := Result{Writes: make([]WriteResult, len(b.Writes))}
	for i, w := range b.Writes {
		res.Writes[i] = st.write(w.asWrite())
	}
	return res
}

func (p PurgeTombstones) apply(st *state) Result {
	return Result{Purged: st.purge(p.Cutoff)}
}
