package fsm

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/ringkv/ringkv/hlc"
	"github.com/ringkv/ringkv/ring"
)

// Stamp is the (version, timestamp) pair that orders writes to one key.
// Between two writes to the same key the one with the greater Stamp wins;
// equal Stamps denote the same write.
type Stamp struct {
	Version   uint64
	Timestamp hlc.Timestamp
}

// Compare orders s and t lexicographically by Version, then Timestamp.
func (s Stamp) Compare(t Stamp) int {
	if c := cmp.Compare(s.Version, t.Version); c != 0 {
		return c
	}
	return s.Timestamp.Compare(t.Timestamp)
}

func (s Stamp) String() string { return fmt.Sprintf("v%d@%v", s.Version, s.Timestamp) }

// ErrMalformedCommand reports a command that cannot be encoded, decoded or
// applied: bad bytes, an unknown operation, a nil write.
var ErrMalformedCommand = errors.New("fsm: malformed command")

// Command is one entry of the replicated log: Put, Delete, PurgeTombstones,
// Batch or Split. Its binary encoding (MarshalBinary, read back by DecodeCommand) is
// the payload of a Raft log entry.
type Command interface {
	// MarshalBinary encodes the command; it fails only on a Batch holding a
	// nil write.
	MarshalBinary() ([]byte, error)
	appendTo(b []byte) ([]byte, error)
	validate(l config) error
	// owned checks the command against the partition's hash range r, which
	// changes only by a Split: a write of a key outside it is refused.
	owned(r ring.HashRange) error
	apply(tx *txn) Result
}

// Write is a command that Batch can group: Put or Delete.
type Write interface {
	Command
	asWrite() write
}

// Put stores Value under Key if Stamp beats the key's current stamp.
// RequestID is opaque to the store and echoed in the WriteResult so the layer
// above can match an applied entry to the client waiting for it.
type Put struct {
	RequestID uint64
	Key       []byte
	Value     []byte
	Stamp
}

// Delete replaces Key with a tombstone carrying Stamp if Stamp beats the
// key's current stamp. The tombstone stays, so that a delayed older write
// still loses, until a PurgeTombstones with a later cutoff removes it.
type Delete struct {
	RequestID uint64
	Key       []byte
	Stamp
}

// PurgeTombstones removes every tombstone whose Timestamp is before Cutoff.
// The cutoff travels in the command, chosen once by the primary (see
// Store.PurgeCommand), so every replica removes the same set.
type PurgeTombstones struct {
	Cutoff hlc.Timestamp
}

// Batch applies its writes in order as one log entry: all or none are
// validated, and every reader sees none or all of them (one engine batch).
type Batch struct {
	Writes []Write
}

// Split hands the upper half of the partition's hash range to a new
// partition, Child, on the same replicas. Apply moves every key of that
// half, tombstones included, out of this partition's span and into Child's,
// in the entry's one engine batch, and the partition keeps the lower half:
// each replica derives the child from its own state at exactly this index,
// and nothing crosses the network. Right must be exactly that upper half,
// so a split proposed twice, or against a range that changed meanwhile, is
// refused (ErrSplitMismatch). Genesis is opaque to the store: it is kept in
// the child's span (Store.Genesis) for the layer above, which starts the
// child's own log from it.
//
// The child is written only if its span is empty. It always is when the
// entry is first applied; a replica that meets the entry again with the
// child already there (its data came from the child's own group) keeps
// that newer state and only gives up the half.
type Split struct {
	Child   uint32
	Right   ring.HashRange
	Genesis []byte
}

// SplitChildIndex is the applied index a split gives the child it creates:
// the child's own log, a new Raft group's, starts after it.
const SplitChildIndex = 1

// MaxGenesis bounds Split.Genesis.
const MaxGenesis = 64 << 10

// write is the common form of Put and Delete.
type write struct {
	requestID uint64
	key       []byte
	value     []byte
	stamp     Stamp
	tombstone bool
}

func (p Put) asWrite() write {
	return write{requestID: p.RequestID, key: p.Key, value: p.Value, stamp: p.Stamp}
}

func (d Delete) asWrite() write {
	return write{requestID: d.RequestID, key: d.Key, stamp: d.Stamp, tombstone: true}
}

// Encoding, version 1. Integers are big-endian; lengths are uvarints.
//
//	command = formatVersion(1) op body
//	Put, Delete body = record requestID(8)
//	record = kind(1: opPut|opDelete) version(uvarint) timestamp(12)
//	         len(key) key [len(value) value, Put only]
//	PurgeTombstones body = cutoff(12)
//	Batch body = count(uvarint) (Put or Delete body)*count
//	Split body = child(4) first(8) last(8) len(genesis) genesis
//
// Snapshots store each key as a record too (see snapshot.go).
const (
	commandFormat = 1

	opPut    byte = 1
	opDelete byte = 2
	opPurge  byte = 3
	opBatch  byte = 4
	opSplit  byte = 5

	// minRecordLen is the shortest record, a Delete of an empty key (which
	// decodes, though it never validates); it bounds how many records a
	// length can claim to hold.
	minRecordLen = 1 + 1 + hlc.EncodedLen + 1
	// minWriteLen is the shortest encoded Put or Delete body.
	minWriteLen = minRecordLen + 8
)

func marshal(c Command) ([]byte, error) {
	return c.appendTo([]byte{commandFormat})
}

func (p Put) MarshalBinary() ([]byte, error)             { return marshal(p) }
func (d Delete) MarshalBinary() ([]byte, error)          { return marshal(d) }
func (p PurgeTombstones) MarshalBinary() ([]byte, error) { return marshal(p) }
func (b Batch) MarshalBinary() ([]byte, error)           { return marshal(b) }
func (sp Split) MarshalBinary() ([]byte, error)          { return marshal(sp) }

func (sp Split) appendTo(b []byte) ([]byte, error) {
	b = binary.BigEndian.AppendUint32(append(b, opSplit), sp.Child)
	b = binary.BigEndian.AppendUint64(b, sp.Right.First)
	b = binary.BigEndian.AppendUint64(b, sp.Right.Last)
	return appendBytes(b, sp.Genesis), nil
}

func (p Put) appendTo(b []byte) ([]byte, error)    { return p.asWrite().appendTo(b), nil }
func (d Delete) appendTo(b []byte) ([]byte, error) { return d.asWrite().appendTo(b), nil }

func (p PurgeTombstones) appendTo(b []byte) ([]byte, error) {
	return p.Cutoff.Append(append(b, opPurge)), nil
}

func (bt Batch) appendTo(b []byte) ([]byte, error) {
	b = binary.AppendUvarint(append(b, opBatch), uint64(len(bt.Writes)))
	for i, w := range bt.Writes {
		if w == nil {
			return nil, nilWriteError(i)
		}
		b = w.asWrite().appendTo(b)
	}
	return b, nil
}

// AppendWrite appends w's encoding, as MarshalBinary writes it, to b. It also
// returns the Item w writes, whose Key and Value alias the appended bytes
// rather than w's: a proposer that keeps the encoded entry can keep the Item
// with it, without decoding the entry and without holding on to its caller's
// slices. w must not be nil.
func AppendWrite(b []byte, w Write) ([]byte, Item) {
	x := w.asWrite()
	b = x.appendTo(append(b, commandFormat))
	// The record ends with len(key) key [len(value) value], and the request
	// id closes the encoding.
	end := len(b) - 8
	it := Item{Tombstone: x.tombstone, Stamp: x.stamp}
	if !x.tombstone {
		it.Value = b[end-len(x.value) : end : end]
		var n [binary.MaxVarintLen64]byte
		end -= len(x.value) + binary.PutUvarint(n[:], uint64(len(x.value)))
	}
	it.Key = b[end-len(x.key) : end : end]
	return b, it
}

// WriteRequestID returns the RequestID of a Put or Delete encoded by
// MarshalBinary or AppendWrite, reading only its first two bytes and its
// last 8; ok is false if data does not begin as a Put or Delete does. It
// checks nothing else, so it serves a proposer matching entries it encoded
// itself; input of unknown origin goes through DecodeCommand.
func WriteRequestID(data []byte) (id uint64, ok bool) {
	if len(data) < 1+minWriteLen || data[0] != commandFormat || (data[1] != opPut && data[1] != opDelete) {
		return 0, false
	}
	return binary.BigEndian.Uint64(data[len(data)-8:]), true
}

func nilWriteError(i int) error {
	return fmt.Errorf("%w: writes[%d] is nil", ErrMalformedCommand, i)
}

func (w write) appendTo(b []byte) []byte {
	return binary.BigEndian.AppendUint64(appendRecord(b, w.key, w.value, w.stamp, w.tombstone), w.requestID)
}

func appendRecord(b, key, value []byte, st Stamp, tombstone bool) []byte {
	kind := opPut
	if tombstone {
		kind = opDelete
	}
	b = binary.AppendUvarint(append(b, kind), st.Version)
	b = appendBytes(st.Timestamp.Append(b), key)
	if !tombstone {
		b = appendBytes(b, value)
	}
	return b
}

func appendBytes(b, v []byte) []byte {
	return append(binary.AppendUvarint(b, uint64(len(v))), v...)
}

// DecodeCommand parses the encoding written by MarshalBinary. It never panics:
// any malformed input, including trailing bytes, yields an error wrapping
// ErrMalformedCommand. Keys and values of the result alias data, which must
// not be modified while the command is in use; Apply copies what it keeps.
func DecodeCommand(data []byte) (Command, error) {
	d := decoder{b: data, sentinel: ErrMalformedCommand}
	if v := d.byte("format version"); d.err == nil && v != commandFormat {
		return nil, fmt.Errorf("%w: format version %d, want %d", ErrMalformedCommand, v, commandFormat)
	}
	var c Command
	switch op := d.byte("op"); op {
	case opPut, opDelete:
		c = d.write(op)
	case opPurge:
		c = PurgeTombstones{Cutoff: d.timestamp("cutoff")}
	case opBatch:
		c = d.batch()
	case opSplit:
		c = d.split()
	default:
		d.failf("unknown op %d", op)
	}
	if d.err == nil && d.off != len(d.b) {
		d.failf("%d trailing bytes", len(d.b)-d.off)
	}
	if d.err != nil {
		return nil, d.err
	}
	return c, nil
}

func (d *decoder) split() Split {
	var sp Split
	if v := d.take(4, "child"); v != nil {
		sp.Child = binary.BigEndian.Uint32(v)
	}
	sp.Right.First = d.uint64("first hash")
	sp.Right.Last = d.uint64("last hash")
	sp.Genesis = d.bytes("genesis")
	return sp
}

func (d *decoder) batch() Batch {
	n := d.uvarint("batch count")
	if max := uint64(d.remaining() / minWriteLen); n > max {
		d.failf("batch count %d exceeds the %d writes the remaining bytes can hold", n, max)
		return Batch{}
	}
	writes := make([]Write, 0, n)
	for range n {
		op := d.byte("write op")
		if op != opPut && op != opDelete {
			d.failf("batch write op %d is not put or delete", op)
		}
		if d.err != nil {
			return Batch{}
		}
		writes = append(writes, d.write(op))
	}
	return Batch{Writes: writes}
}

// write reads a Put or Delete body after its kind byte.
func (d *decoder) write(op byte) Write {
	st, key, value := d.recordBody(op == opDelete)
	id := d.uint64("request id")
	if op == opDelete {
		return Delete{RequestID: id, Key: key, Stamp: st}
	}
	return Put{RequestID: id, Key: key, Value: value, Stamp: st}
}

// recordBody reads the part of a record after its kind byte.
func (d *decoder) recordBody(tombstone bool) (st Stamp, key, value []byte) {
	st.Version = d.uvarint("version")
	st.Timestamp = d.timestamp("timestamp")
	key = d.bytes("key")
	if !tombstone {
		value = d.bytes("value")
	}
	return st, key, value
}

// decoder reads fields from b, recording the first failure in err (wrapping
// sentinel) and returning zero values from then on, so callers check once.
type decoder struct {
	b        []byte
	off      int
	base     int64 // offset of b in the enclosing stream, for messages
	sentinel error
	err      error
}

func (d *decoder) failf(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: at byte %d: %s", d.sentinel, d.base+int64(d.off), fmt.Sprintf(format, args...))
	}
}

func (d *decoder) remaining() int { return len(d.b) - d.off }

func (d *decoder) take(n int, field string) []byte {
	if d.err != nil {
		return nil
	}
	if n > d.remaining() {
		d.failf("truncated %s: need %d bytes, have %d", field, n, d.remaining())
		return nil
	}
	v := d.b[d.off : d.off+n : d.off+n]
	d.off += n
	return v
}

func (d *decoder) byte(field string) byte {
	if v := d.take(1, field); v != nil {
		return v[0]
	}
	return 0
}

func (d *decoder) uint64(field string) uint64 {
	if v := d.take(8, field); v != nil {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

func (d *decoder) uvarint(field string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b[d.off:])
	if n <= 0 {
		d.failf("bad uvarint %s", field)
		return 0
	}
	d.off += n
	return v
}

func (d *decoder) timestamp(field string) hlc.Timestamp {
	v := d.take(hlc.EncodedLen, field)
	if v == nil {
		return hlc.Timestamp{}
	}
	ts, err := hlc.Decode(v)
	if err != nil {
		d.failf("%s: %v", field, err)
	}
	return ts
}

func (d *decoder) bytes(field string) []byte {
	n := d.uvarint(field + " length")
	if d.err == nil && n > uint64(d.remaining()) {
		d.failf("%s length %d exceeds the %d remaining bytes", field, n, d.remaining())
	}
	return d.take(int(n), field)
}

// JoinWrites appends to b the encoding of a Batch of the given writes, each
// encoded as MarshalBinary or AppendWrite encodes a Put or Delete, without
// decoding them: a proposer that keeps its writes encoded batches them at
// the cost of a copy. It checks only that each begins as an encoded write
// does; what it builds is decoded, hence checked, when it is applied.
func JoinWrites(b []byte, writes ...[]byte) ([]byte, error) {
	b = binary.AppendUvarint(append(b, commandFormat, opBatch), uint64(len(writes)))
	for i, w := range writes {
		if len(w) < 2 || w[0] != commandFormat || (w[1] != opPut && w[1] != opDelete) {
			return nil, fmt.Errorf("%w: writes[%d] is not an encoded Put or Delete", ErrMalformedCommand, i)
		}
		b = append(b, w[1:]...)
	}
	return b, nil
}
