package fsm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/ringkv/ringkv/ring"
)

// A partition owns one contiguous range of key hashes (ring.HashRange). It
// is created owning Options.Range, the range the cluster's map gave it, and
// keeps that range implicitly until a Split halves it; from then on the
// range is a record of its span (rangeKey), so every replica, and every
// snapshot, carries it with the data it describes. Apply refuses a write of
// a key outside the range, so an entry that reaches the log after the split
// is refused alike on every replica, and its proposer learns that nothing
// was written and that the key now lives elsewhere.

// ErrWrongPartition reports a key outside the partition's hash range: the
// partition was split and the key's half went to another partition.
// Nothing was written; the caller refreshes its partition map and retries
// there. The error is a *RangeError.
var ErrWrongPartition = errors.New("fsm: key outside the partition's hash range")

// ErrSplitMismatch reports a Split whose Right is not the upper half of the
// partition's range: it was applied already, or the range changed.
var ErrSplitMismatch = errors.New("fsm: split does not halve the partition's range")

// RangeError is the ErrWrongPartition of one key.
type RangeError struct {
	Field string // "key", "writes[3].key"
	Hash  uint64
	Range ring.HashRange
}

func (e *RangeError) Error() string {
	return fmt.Sprintf("%v: %s hashes to %#016x, the partition owns %#016x-%#016x",
		ErrWrongPartition, e.Field, e.Hash, e.Range.First, e.Range.Last)
}

// Unwrap lets errors.Is match ErrWrongPartition.
func (e *RangeError) Unwrap() error { return ErrWrongPartition }

// FullRange is every hash: the range of the only partition of a ring of one.
var FullRange = ring.HashRange{First: 0, Last: ^uint64(0)}

func ownKey(r ring.HashRange, field string, key []byte) error {
	if h := ring.Hash(key); !r.Contains(h) {
		return &RangeError{Field: field, Hash: h, Range: r}
	}
	return nil
}

func (p Put) owned(r ring.HashRange) error         { return ownKey(r, "key", p.Key) }
func (d Delete) owned(r ring.HashRange) error      { return ownKey(r, "key", d.Key) }
func (PurgeTombstones) owned(ring.HashRange) error { return nil }

func (b Batch) owned(r ring.HashRange) error {
	for i, w := range b.Writes {
		if err := ownKey(r, fmt.Sprintf("writes[%d].key", i), w.asWrite().key); err != nil {
			return err
		}
	}
	return nil
}

func (sp Split) owned(r ring.HashRange) error {
	if _, upper, ok := halves(r); !ok || sp.Right != upper {
		return fmt.Errorf("%w: split hands over %#016x-%#016x, the partition owns %#016x-%#016x (upper half %#016x-%#016x)",
			ErrSplitMismatch, sp.Right.First, sp.Right.Last, r.First, r.Last, upper.First, upper.Last)
	}
	return nil
}

// halves cuts r into its lower and upper halves; ok is false for a range of
// one hash, which cannot be cut.
func halves(r ring.HashRange) (lower, upper ring.HashRange, ok bool) {
	if r.First == r.Last {
		return r, r, false
	}
	mid := r.First + (r.Last-r.First)/2 + 1
	return ring.HashRange{First: r.First, Last: mid - 1}, ring.HashRange{First: mid, Last: r.Last}, true
}

// Halves cuts r as a Split does: the parent keeps lower, the child gets
// upper; ok is false for a range of one hash.
func Halves(r ring.HashRange) (lower, upper ring.HashRange, ok bool) { return halves(r) }

// ownership is the partition's range and the index of the entry that set
// it (0: the range it was created with).
type ownership struct {
	rng   ring.HashRange
	since uint64
}

// rangeKey's value: first(8) last(8) since(8).
func encodeRange(dst []byte, o ownership) []byte {
	dst = binary.BigEndian.AppendUint64(dst, o.rng.First)
	dst = binary.BigEndian.AppendUint64(dst, o.rng.Last)
	return binary.BigEndian.AppendUint64(dst, o.since)
}

func readRange(r engineReader, initial ring.HashRange) (ownership, error) {
	v, ok, err := r.Get(partSpace, rangeKey)
	switch {
	case err != nil:
		return ownership{}, fmt.Errorf("%w: %v", ErrEngine, err)
	case !ok:
		return ownership{rng: initial}, nil
	case len(v) != 24:
		return ownership{}, fmt.Errorf("%w: hash range of %d bytes", ErrEngine, len(v))
	}
	return ownership{
		rng:   ring.HashRange{First: binary.BigEndian.Uint64(v), Last: binary.BigEndian.Uint64(v[8:])},
		since: binary.BigEndian.Uint64(v[16:]),
	}, nil
}

func (sp Split) apply(tx *txn) Result { return Result{Moved: tx.split(sp)} }

// split moves the keys of sp.Right to the child (see Split) and returns how
// many it moved. owned has checked that sp.Right is the upper half.
//
// The child is written first, whole, as SSTables ingested into its empty
// span (storage.Partition.Build: durable once it returns, and no memtable
// insert per key); the parent's half goes in the entry's batch as point
// deletes. A crash between the two leaves the child complete and the
// parent before the split: Raft replays the entry, which finds the child
// there, the state it would write, and only gives up the half.
func (tx *txn) split(sp Split) int {
	lower, _, _ := halves(tx.s.HashRange())
	child := tx.s.part.Engine().Partition(sp.Child)
	empty, err := child.Empty()
	if err != nil {
		tx.set(err)
		return 0
	}
	var live, dead int64
	moved := func(set func(space byte, key, value []byte) error) error {
		it, err := tx.s.part.NewIter(dataSpace, nil, nil)
		if err != nil {
			return err
		}
		var tombs [][]byte // the child's tombSpace keys, sorted below
		for ok := it.First(); ok && tx.err == nil; ok = it.Next() {
			key := it.Key()
			if !sp.Right.Contains(ring.Hash(key)) {
				continue
			}
			st, err := decodeState(key, it.Value())
			if err != nil {
				it.Close()
				return err
			}
			tx.set(tx.b.Delete(dataSpace, key))
			if st.tombstone {
				tk := tombKey(nil, st.stamp.Timestamp, key)
				tx.set(tx.b.Delete(tombSpace, tk))
				tombs = append(tombs, tk)
				dead++
			} else {
				live++
			}
			if set != nil {
				if err := set(dataSpace, key, it.Value()); err != nil {
					it.Close()
					return err
				}
			}
		}
		if err := it.Close(); err != nil || set == nil {
			return err
		}
		slices.SortFunc(tombs, bytes.Compare)
		for _, tk := range tombs {
			if err := set(tombSpace, tk, nil); err != nil {
				return err
			}
		}
		// partSpace's keys in order: counts, genesis, range.
		return errors.Join(
			set(partSpace, countsKey, encodeCounts(nil, live, dead)),
			set(partSpace, genesisKey, sp.Genesis),
			set(partSpace, rangeKey, encodeRange(nil, ownership{rng: sp.Right, since: SplitChildIndex})))
	}
	if empty {
		err = child.Build(SplitChildIndex, moved)
	} else {
		err = moved(nil)
	}
	tx.set(err)
	tx.live -= live
	tx.dead -= dead
	tx.rng = &ownership{rng: lower, since: tx.index}
	tx.set(tx.b.Set(partSpace, rangeKey, encodeRange(tx.buf[:0], *tx.rng)))
	return int(live + dead)
}

// Genesis returns the Genesis of the Split that created this partition;
// ok is false for a partition no split created.
func (s *Store) Genesis() (genesis []byte, ok bool, err error) {
	genesis, ok, err = s.part.Get(partSpace, genesisKey)
	if err != nil {
		return nil, false, fmt.Errorf("%w: %v", ErrEngine, err)
	}
	return genesis, ok, nil
}

// HashRange returns the hashes the partition owns as of its applied index.
func (s *Store) HashRange() ring.HashRange { return s.rng.Load().rng }

// RangeSince returns the index of the entry that gave the partition its
// current range: the split that last halved it, or 0. An entry after it
// writing a key outside the range was refused; one at or before it may
// have been applied and its key handed to a child since.
func (s *Store) RangeSince() uint64 { return s.rng.Load().since }

// Owns checks that key hashes into the partition's range; the error is a
// *RangeError. Ranges only shrink, so a reader that checks after it read
// knows the key was the partition's when it read it.
func (s *Store) Owns(key []byte) error { return ownKey(s.HashRange(), "key", key) }
