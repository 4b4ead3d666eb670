package storage

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/cockroachdb/pebble/v2"
)

// Partition is one partition's span of the engine.
type Partition struct {
	e  *Engine
	id uint32
	// wbuf is the one writer's scratch for engine keys, handed from batch
	// to batch so that a write allocates none.
	wbuf []byte
}

// ID is the partition's number.
func (p *Partition) ID() uint32 { return p.id }

// Engine is the engine the partition lives in.
func (p *Partition) Engine() *Engine { return p.e }

// reader is what a Partition and a View read from.
type reader interface {
	Get(key []byte) ([]byte, io.Closer, error)
	NewIter(o *pebble.IterOptions) (*pebble.Iterator, error)
}

// Get returns a copy of the value of key in space, or ok false.
func (p *Partition) Get(space byte, key []byte) (value []byte, ok bool, err error) {
	return get(p.e.db, p.id, space, key)
}

// Peek calls fn with the value of key in space, without copying it; the
// value is valid only during the call. ok is false, and fn not called, if
// there is no such key.
func (p *Partition) Peek(space byte, key []byte, fn func(value []byte)) (ok bool, err error) {
	return peek(p.e.db, p.id, space, key, fn)
}

// Applied is the index of the last log entry whose batch was committed, 0
// for a partition with no state.
func (p *Partition) Applied() (uint64, error) { return applied(p.e.db, p.id) }

// NewIter iterates the keys of space in [lower, upper) (nil: unbounded) in
// ascending order; the caller closes it.
func (p *Partition) NewIter(space byte, lower, upper []byte) (*Iter, error) {
	return newIter(p.e.db, p.id, space, lower, upper)
}

// View returns a consistent read view of the partition as of now; the
// caller closes it. Writes and ingestions after it do not show in it.
func (p *Partition) View() *View {
	start, end := span(p.id)
	return &View{p: p, snap: p.e.db.NewEventuallyFileOnlySnapshot([]pebble.KeyRange{{Start: start, End: end}})}
}

// Empty reports whether the partition's span holds no key at all, applied
// index included.
func (p *Partition) Empty() (bool, error) {
	start, end := span(p.id)
	it, err := p.e.db.NewIter(&pebble.IterOptions{LowerBound: start, UpperBound: end})
	if err != nil {
		return false, err
	}
	empty := !it.First()
	return empty, errors.Join(it.Error(), it.Close())
}

// DiskUsage estimates the bytes the partition's span takes in the
// engine's SSTables (its share of the files it overlaps); what the
// memtables hold is not counted.
func (p *Partition) DiskUsage() (uint64, error) {
	start, end := span(p.id)
	return p.e.db.EstimateDiskUsage(start, end)
}

// NewBatch starts a batch of writes to the partition.
func (p *Partition) NewBatch() *Batch {
	return &Batch{p: p, b: p.e.db.NewBatch(), buf: p.wbuf}
}

// Drop deletes all of the partition's state, applied index included, and
// makes the deletion durable.
func (p *Partition) Drop() error {
	start, end := span(p.id)
	if err := p.e.db.Excise(context.Background(), pebble.KeyRange{Start: start, End: end}); err != nil {
		return fmt.Errorf("storage: partition %d: drop: %w", p.id, err)
	}
	return nil
}

// Batch is a set of writes committed atomically with the applied index.
// It is not safe for concurrent use.
type Batch struct {
	p   *Partition
	b   *pebble.Batch
	buf []byte
}

// Set writes key in space.
func (b *Batch) Set(space byte, key, value []byte) error {
	b.buf = engineKey(b.buf[:0], b.p.id, space, key)
	return b.b.Set(b.buf, value, nil)
}

// Delete removes key from space.
func (b *Batch) Delete(space byte, key []byte) error {
	b.buf = engineKey(b.buf[:0], b.p.id, space, key)
	return b.b.Delete(b.buf, nil)
}

// Commit applies the batch with applied as the partition's applied index,
// in one atomic write, and releases it. It does not sync (doc.go).
func (b *Batch) Commit(applied uint64) error {
	defer b.Close()
	b.buf = engineKey(b.buf[:0], b.p.id, metaSpace, appliedKey)
	if err := b.b.Set(b.buf, binary.BigEndian.AppendUint64(nil, applied), nil); err != nil {
		return err
	}
	return b.b.Commit(pebble.NoSync)
}

// Close releases a batch that is not committed.
func (b *Batch) Close() {
	b.p.wbuf = b.buf[:0]
	b.b.Close()
}

// View is a consistent read view of one partition.
type View struct {
	p    *Partition
	snap *pebble.EventuallyFileOnlySnapshot
}

// Get returns a copy of the value of key in space, or ok false.
func (v *View) Get(space byte, key []byte) (value []byte, ok bool, err error) {
	return get(v.snap, v.p.id, space, key)
}

// Peek is Partition.Peek in the view.
func (v *View) Peek(space byte, key []byte, fn func(value []byte)) (ok bool, err error) {
	return peek(v.snap, v.p.id, space, key, fn)
}

// Applied is the applied index the view reflects.
func (v *View) Applied() (uint64, error) { return applied(v.snap, v.p.id) }

// NewIter iterates the view's keys of space in [lower, upper).
func (v *View) NewIter(space byte, lower, upper []byte) (*Iter, error) {
	return newIter(v.snap, v.p.id, space, lower, upper)
}

// Close releases the view.
func (v *View) Close() error { return v.snap.Close() }

func get(r reader, p uint32, space byte, key []byte) (value []byte, ok bool, err error) {
	ok, err = peek(r, p, space, key, func(v []byte) { value = append([]byte(nil), v...) })
	return value, ok, err
}

func peek(r reader, p uint32, space byte, key []byte, fn func([]byte)) (bool, error) {
	v, closer, err := r.Get(engineKey(nil, p, space, key))
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer closer.Close()
	fn(v)
	return true, nil
}

func applied(r reader, p uint32) (uint64, error) {
	v, ok, err := get(r, p, metaSpace, appliedKey)
	if err != nil || !ok {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("storage: partition %d: applied index of %d bytes", p, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

// Iter walks one space of a partition.
type Iter struct {
	it   *pebble.Iterator
	skip int // engine-key bytes before the caller's key
}

func newIter(r reader, p uint32, space byte, lower, upper []byte) (*Iter, error) {
	lo := engineKey(nil, p, space, lower)
	var hi []byte
	if upper != nil {
		hi = engineKey(nil, p, space, upper)
	} else {
		hi = engineKey(nil, p, space+1, nil)
		if space == 0xff {
			_, hi = span(p)
		}
	}
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return nil, err
	}
	return &Iter{it: it, skip: prefixLen + 1}, nil
}

// First moves to the first key; false if there is none.
func (i *Iter) First() bool { return i.it.First() }

// Next moves to the next key; false past the last.
func (i *Iter) Next() bool { return i.it.Next() }

// Key is the caller's key at the position; valid until the next move.
func (i *Iter) Key() []byte { return i.it.Key()[i.skip:] }

// Value is the value at the position; valid until the next move.
func (i *Iter) Value() []byte { return i.it.Value() }

// Close releases the iterator and reports any error it met.
func (i *Iter) Close() error { return errors.Join(i.it.Error(), i.it.Close()) }
