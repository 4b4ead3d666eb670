// Package fsm is the replicated state machine of one partition: an ordered,
// versioned key-value store fed by Raft log entries (Commands), kept in the
// node's storage engine (internal/storage), one partition's span of it.
//
// Invariants:
//   - Apply is deterministic. It reads no clock and no randomness and never
//     depends on map order, so replicas applying the same log reach the same
//     state; a snapshot stream is a pure function of that state.
//   - A write to a key wins iff its Stamp (version, timestamp) is greater than
//     the key's current one; an equal Stamp is the same write applied again
//     and changes nothing. Deletes leave versioned tombstones, removed only
//     by a PurgeTombstones command carrying its cutoff.
//   - Every Apply is one engine batch: the entry's writes, the key counts and
//     the applied index commit together or not at all, so after a crash the
//     state on disk is the state of its applied index, and the entries Raft
//     replays at or below it are refused as stale (ErrStaleIndex) and change
//     nothing.
//   - Point reads (Get, Lookup) read the engine's latest committed state:
//     once a reader has seen AppliedIndex() >= i, it sees every write of
//     entries up to i, since the applied index is published after the batch
//     commits. A Snapshot is a consistent view of one applied index that
//     never stops writers; it must be closed.
//   - A Command that fails validation changes no key; AppliedIndex still
//     advances past its entry, which was consumed, so waiters on the index
//     make progress.
//   - Restore either installs the whole verified snapshot stream or leaves
//     the store as it was.
//   - The store owns one range of key hashes (split.go): Apply refuses a
//     write of a key outside it, and only a Split changes it, halving it
//     and moving the upper half's keys into the child partition's span in
//     the same engine batch.
//
// Keys and values handed out by reads are the caller's to keep.
package fsm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/ringkv/ringkv/hlc"
	"github.com/ringkv/ringkv/internal/storage"
)

// ErrStaleIndex reports an Apply whose log index is not after the applied
// index, which would replay or reorder the log.
var ErrStaleIndex = errors.New("fsm: log index not after applied index")

// ErrEngine wraps a failure of the storage engine. Apply cannot go on after
// one: the replica must stop, and Raft replays the entry when it restarts.
var ErrEngine = errors.New("fsm: storage engine failed")

// The store's spaces of its engine partition.
const (
	// dataSpace maps a key to its entry: flags (1 byte: tombstone), version
	// (8), wall time (8), logical time (4), then the value.
	dataSpace byte = 1 + iota
	// tombSpace indexes tombstones by (wall time, logical, key), so a purge
	// walks exactly the expired ones, oldest first.
	tombSpace
	// partSpace holds the partition's own records: its live and tombstone
	// counts (countsKey), its hash range once a split changed it
	// (rangeKey, split.go) and, in a partition a split created, the
	// split's genesis (genesisKey).
	partSpace
)

var (
	countsKey  = []byte("counts")
	rangeKey   = []byte("range")
	genesisKey = []byte("genesis")
)

const entryHeader = 1 + 8 + 8 + 4

func encodeEntry(dst []byte, w write) []byte {
	var flags byte
	if w.tombstone {
		flags = 1
	}
	dst = append(dst, flags)
	dst = binary.BigEndian.AppendUint64(dst, w.stamp.Version)
	dst = binary.BigEndian.AppendUint64(dst, uint64(w.stamp.Timestamp.WallTime))
	dst = binary.BigEndian.AppendUint32(dst, w.stamp.Timestamp.Logical)
	if !w.tombstone {
		dst = append(dst, w.value...)
	}
	return dst
}

// decodeEntry reads an entry's value; the Item aliases key and v.
func decodeEntry(key, v []byte) (Item, error) {
	st, err := decodeState(key, v)
	if err != nil {
		return Item{}, err
	}
	it := Item{Key: key, Tombstone: st.tombstone, Stamp: st.stamp}
	if !it.Tombstone {
		it.Value = v[entryHeader:]
	}
	return it, nil
}

// keyState is what the conflict rule and version numbering need of a key:
// its entry's header, not its value.
type keyState struct {
	stamp     Stamp
	tombstone bool
}

func decodeState(key, v []byte) (keyState, error) {
	if len(v) < entryHeader || v[0] > 1 {
		return keyState{}, fmt.Errorf("%w: key %q: malformed entry of %d bytes", ErrEngine, key, len(v))
	}
	return keyState{tombstone: v[0] == 1, stamp: Stamp{
		Version:   binary.BigEndian.Uint64(v[1:]),
		Timestamp: hlc.Timestamp{WallTime: int64(binary.BigEndian.Uint64(v[9:])), Logical: binary.BigEndian.Uint32(v[17:])},
	}}, nil
}

// tombKey orders tombstones by timestamp, then key.
func tombKey(dst []byte, ts hlc.Timestamp, key []byte) []byte {
	// Wall times are non-negative; big-endian keeps their order.
	dst = binary.BigEndian.AppendUint64(dst, uint64(ts.WallTime))
	dst = binary.BigEndian.AppendUint32(dst, ts.Logical)
	return append(dst, key...)
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
	Moved  int           // keys, tombstones included, a Split handed to its child
}

// live hides a tombstone found by a Lookup.
func live(it Item, found bool) (Item, bool) {
	if !found || it.Tombstone {
		return Item{}, false
	}
	return it, true
}

// Store is the state machine of one partition. Apply and Restore serialize
// among themselves; reads run beside them.
type Store struct {
	cfg  config
	part *storage.Partition

	mu      sync.Mutex // serializes Apply and Restore
	applied atomic.Uint64
	rng     atomic.Pointer[ownership]
	live    atomic.Int64 // keys holding a value
	dead    atomic.Int64 // keys holding a tombstone
	buf     []byte       // the writer's scratch, under mu
}

// engineReader is what the store reads from: its partition, or a view of
// it.
type engineReader interface {
	Get(space byte, key []byte) ([]byte, bool, error)
	Peek(space byte, key []byte, fn func([]byte)) (bool, error)
}

// New opens the store kept in part, empty or as the engine last held it.
func New(opts Options, part *storage.Partition) (*Store, error) {
	if err := opts.check(); err != nil {
		return nil, err
	}
	s := &Store{cfg: opts.config(), part: part}
	if err := s.load(); err != nil {
		return nil, err
	}
	return s, nil
}

// load reads the applied index, range and counts from the engine.
func (s *Store) load() error {
	applied, err := s.part.Applied()
	if err != nil {
		return fmt.Errorf("%w: %v", ErrEngine, err)
	}
	live, dead, err := readCounts(s.part)
	if err != nil {
		return err
	}
	rng, err := readRange(s.part, s.cfg.rng)
	if err != nil {
		return err
	}
	s.rng.Store(&rng)
	s.applied.Store(applied)
	s.live.Store(live)
	s.dead.Store(dead)
	return nil
}

func readCounts(r engineReader) (live, dead int64, err error) {
	v, ok, err := r.Get(partSpace, countsKey)
	switch {
	case err != nil:
		return 0, 0, fmt.Errorf("%w: %v", ErrEngine, err)
	case !ok:
		return 0, 0, nil
	case len(v) != 16:
		return 0, 0, fmt.Errorf("%w: counts of %d bytes", ErrEngine, len(v))
	}
	return int64(binary.BigEndian.Uint64(v)), int64(binary.BigEndian.Uint64(v[8:])), nil
}

// Get returns key's latest live value; a tombstone reads as not found.
func (s *Store) Get(key []byte) (Item, bool) { return live(s.Lookup(key)) }

// Lookup returns key's latest state including a tombstone, so a caller can
// write "current version + 1" after a delete. An engine read error reads as
// not found and is reported by the next Apply, which cannot go on either.
func (s *Store) Lookup(key []byte) (Item, bool) {
	it, ok, err := lookup(s.part, key)
	if err != nil {
		return Item{}, false
	}
	return it, ok
}

// Stamp returns key's latest Stamp, a tombstone's included — what a
// primary numbers the key's next write from — without copying its value.
// An engine read error reads as not found, as in Lookup.
func (s *Store) Stamp(key []byte) (Stamp, bool) {
	st, ok, err := state(s.part, key)
	return st.stamp, ok && err == nil
}

func state(r engineReader, key []byte) (st keyState, found bool, err error) {
	found, err = r.Peek(dataSpace, key, func(v []byte) { st, err = decodeState(key, v) })
	return st, found && err == nil, err
}

func lookup(r engineReader, key []byte) (Item, bool, error) {
	v, ok, err := r.Get(dataSpace, key)
	if err != nil || !ok {
		return Item{}, false, err
	}
	it, err := decodeEntry(append([]byte(nil), key...), v)
	return it, err == nil, err
}

// Range iterates live keys of the current state; see Snapshot.Range.
func (s *Store) Range(start, end []byte, fn func(Item) bool) error {
	snap := s.Snapshot()
	defer snap.Close()
	return snap.Range(start, end, fn)
}

// DiskBytes estimates the bytes the store takes on disk
// (storage.Partition.DiskUsage); 0 if the engine cannot tell.
func (s *Store) DiskBytes() uint64 {
	n, err := s.part.DiskUsage()
	if err != nil {
		return 0
	}
	return n
}

// Len returns the number of live keys.
func (s *Store) Len() int { return int(s.live.Load()) }

// Tombstones returns the number of tombstones awaiting purge.
func (s *Store) Tombstones() int { return int(s.dead.Load()) }

// AppliedIndex returns the index of the last log entry applied or restored.
func (s *Store) AppliedIndex() uint64 { return s.applied.Load() }

// Validate checks cmd against the store's limits and its range, as Apply
// will.
func (s *Store) Validate(cmd Command) error {
	if err := s.cfg.validate(cmd); err != nil {
		return err
	}
	return cmd.owned(s.HashRange())
}

// PurgeCommand returns the PurgeTombstones a primary proposes at time now:
// its cutoff lets go of tombstones older than the tombstone grace period.
func (s *Store) PurgeCommand(now hlc.Timestamp) PurgeTombstones {
	return PurgeTombstones{Cutoff: hlc.Timestamp{WallTime: now.WallTime - int64(s.cfg.grace)}}
}

// Apply applies cmd as the log entry at index, which must be after
// AppliedIndex. An invalid cmd (see Validate) changes no key but still
// consumes its index. Apply is deterministic; the Result and error are the
// same on every replica, except an ErrEngine, after which the store must not
// be used (the entry is not applied).
func (s *Store) Apply(index uint64, cmd Command) (Result, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if applied := s.applied.Load(); index <= applied {
		return Result{}, fmt.Errorf("%w: index %d, applied %d", ErrStaleIndex, index, applied)
	}
	tx := txn{s: s, b: s.part.NewBatch(), index: index, live: s.live.Load(), dead: s.dead.Load(), buf: s.buf[:0]}
	var res Result
	verr := s.Validate(cmd)
	if verr == nil {
		res = cmd.apply(&tx)
	}
	if tx.err == nil && (tx.live != s.live.Load() || tx.dead != s.dead.Load()) {
		tx.buf = encodeCounts(tx.buf[:0], tx.live, tx.dead)
		tx.err = tx.b.Set(partSpace, countsKey, tx.buf)
	}
	s.buf = tx.buf
	if tx.err == nil {
		tx.err = tx.b.Commit(index)
	} else {
		tx.b.Close()
	}
	if tx.err != nil {
		return Result{}, fmt.Errorf("%w: applying entry %d: %v", ErrEngine, index, tx.err)
	}
	s.live.Store(tx.live)
	s.dead.Store(tx.dead)
	if tx.rng != nil {
		s.rng.Store(tx.rng)
	}
	s.applied.Store(index)
	return res, verr
}

func encodeCounts(dst []byte, live, dead int64) []byte {
	return binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(dst, uint64(live)), uint64(dead))
}

// txn is one Apply's writes: the engine batch and, for a Batch command,
// what it wrote so far, which its later writes of the same key must see
// (the engine shows them only once the batch commits).
type txn struct {
	s          *Store
	b          *storage.Batch
	written    map[string]keyState // nil but for a Batch
	live, dead int64
	index      uint64
	rng        *ownership // the range a Split left, nil if unchanged
	buf        []byte
	err        error
}

func (tx *txn) lookup(key []byte) (keyState, bool) {
	if st, ok := tx.written[string(key)]; ok {
		return st, true
	}
	st, ok, err := state(tx.s.part, key)
	tx.set(err)
	return st, ok
}

// write applies the conflict rule to one Put or Delete.
func (tx *txn) write(w write) WriteResult {
	res := WriteResult{RequestID: w.requestID, Outcome: Won, Current: w.stamp}
	if tx.err != nil {
		return res
	}
	if old, found := tx.lookup(w.key); found {
		switch c := w.stamp.Compare(old.stamp); {
		case c == 0:
			res.Outcome = AlreadyApplied
			return res
		case c < 0:
			res.Outcome, res.Current = Lost, old.stamp
			return res
		}
		if old.tombstone {
			tx.dead--
			tx.set(tx.b.Delete(tombSpace, tombKey(tx.buf[:0], old.stamp.Timestamp, w.key)))
		} else {
			tx.live--
		}
	}
	tx.buf = encodeEntry(tx.buf[:0], w)
	tx.set(tx.b.Set(dataSpace, w.key, tx.buf))
	if w.tombstone {
		tx.dead++
		tx.set(tx.b.Set(tombSpace, tombKey(tx.buf[:0], w.stamp.Timestamp, w.key), nil))
	} else {
		tx.live++
	}
	if tx.written != nil {
		tx.written[string(w.key)] = keyState{stamp: w.stamp, tombstone: w.tombstone}
	}
	return res
}

func (tx *txn) set(err error) {
	if tx.err == nil {
		tx.err = err
	}
}

// purge removes the tombstones stamped before cutoff, oldest first.
func (tx *txn) purge(cutoff hlc.Timestamp) int {
	it, err := tx.s.part.NewIter(tombSpace, nil, tombKey(nil, cutoff, nil))
	if err != nil {
		tx.set(err)
		return 0
	}
	n := 0
	for ok := it.First(); ok && tx.err == nil; ok = it.Next() {
		key := it.Key()[12:]
		tx.set(tx.b.Delete(dataSpace, key))
		tx.set(tx.b.Delete(tombSpace, it.Key()))
		tx.dead--
		n++
	}
	tx.set(it.Close())
	return n
}

func (p Put) apply(tx *txn) Result {
	return Result{Writes: []WriteResult{tx.write(p.asWrite())}}
}

func (d Delete) apply(tx *txn) Result {
	return Result{Writes: []WriteResult{tx.write(d.asWrite())}}
}

func (b Batch) apply(tx *txn) Result {
	if len(b.Writes) > 1 {
		tx.written = make(map[string]keyState, len(b.Writes))
	}
	res := Result{Writes: make([]WriteResult, len(b.Writes))}
	for i, w := range b.Writes {
		res.Writes[i] = tx.write(w.asWrite())
	}
	return res
}

func (p PurgeTombstones) apply(tx *txn) Result {
	return Result{Purged: tx.purge(p.Cutoff)}
}

// Snapshot is a consistent view of the store as of one applied index. It
// stays unchanged however the store moves on, until Close.
type Snapshot struct {
	view *storage.View
}

// Snapshot returns a view of the current state; the caller closes it.
func (s *Store) Snapshot() *Snapshot { return &Snapshot{view: s.part.View()} }

// Close releases the view.
func (s *Snapshot) Close() error { return s.view.Close() }

// Lookup returns key's state, tombstone included.
func (s *Snapshot) Lookup(key []byte) (Item, bool) {
	it, ok, err := lookup(s.view, key)
	return it, ok && err == nil
}

// Get returns key's live value; a tombstone reads as not found.
func (s *Snapshot) Get(key []byte) (Item, bool) { return live(s.Lookup(key)) }

// Range calls fn on the live keys in [start, end) in ascending order until fn
// returns false. A nil start begins at the first key, a nil end runs to the
// last.
func (s *Snapshot) Range(start, end []byte, fn func(Item) bool) error {
	it, err := s.view.NewIter(dataSpace, start, end)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrEngine, err)
	}
	for ok := it.First(); ok; ok = it.Next() {
		item, err := decodeEntry(append([]byte(nil), it.Key()...), it.Value())
		if err != nil {
			it.Close()
			return err
		}
		if item.Tombstone {
			continue
		}
		item.Value = append([]byte(nil), item.Value...)
		if !fn(item) {
			break
		}
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("%w: %v", ErrEngine, err)
	}
	return nil
}

// Counts returns the live keys and the tombstones of the view.
func (s *Snapshot) Counts() (live, tombstones int, err error) {
	l, d, err := readCounts(s.view)
	return int(l), int(d), err
}

// AppliedIndex returns the index of the last log entry the view reflects.
func (s *Snapshot) AppliedIndex() uint64 {
	a, _ := s.view.Applied()
	return a
}

// WriteTo streams the view in the engine's snapshot format
// (storage.View.WriteSnapshot).
func (s *Snapshot) WriteTo(w io.Writer) (int64, error) {
	n, _, err := s.view.WriteSnapshot(w)
	return n, err
}

// StreamSize is the length of the stream WriteTo writes, measured without
// writing it (storage.View.SnapshotSize).
func (s *Snapshot) StreamSize() (int64, error) { return s.view.SnapshotSize() }

// Restore replaces the store's contents and applied index with the snapshot
// stream read from r, verified whole before anything changes: on any error
// the store is left as it was (storage.ErrCorruptSnapshot,
// storage.ErrSnapshotFormat).
func (s *Store) Restore(r io.Reader) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.part.Ingest(r); err != nil {
		return err
	}
	return s.load()
}
