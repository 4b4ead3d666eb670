package wal

import (
	"errors"
	"fmt"
)

var (
	// ErrNotFound: the requested index or range is not in the stream.
	ErrNotFound = errors.New("wal: not found")
	// ErrClosed: the WAL was closed, or refuses writes after an I/O error
	// (then the error also wraps that I/O error).
	ErrClosed = errors.New("wal: closed")
	// ErrCorrupt: a file fails its checksum or structure checks; the error is a
	// *CorruptionError naming the file and offset.
	ErrCorrupt = errors.New("wal: corrupt")
	// ErrOutOfOrder: an append is not contiguous with its stream; the error is
	// an *OrderError.
	ErrOutOfOrder = errors.New("wal: append out of order")
	// ErrInvalid: an argument or option is out of range; the error is an
	// *ArgError naming it.
	ErrInvalid = errors.New("wal: invalid argument")
	// ErrLocked: another process holds the WAL directory.
	ErrLocked = errors.New("wal: directory locked by another process")
)

// CorruptionError reports damaged or foreign data. Segment is the file name
// (empty when the damage is not confined to one file) and Offset the byte
// offset of the damaged record or header within it.
type CorruptionError struct {
	Segment string
	Offset  int64
	Reason  string
}

func (e *CorruptionError) Error() string {
	if e.Segment == "" {
		return "wal: corrupt: " + e.Reason
	}
	return fmt.Sprintf("wal: corrupt segment %s at offset %d: %s", e.Segment, e.Offset, e.Reason)
}

func (e *CorruptionError) Unwrap() error { return ErrCorrupt }

// OrderError reports an append whose index does not follow its stream's last
// index. Want is the only acceptable index.
type OrderError struct {
	Stream uint64
	Index  uint64
	Want   uint64
}

func (e *OrderError) Error() string {
	return fmt.Sprintf("wal: append out of order: stream %d index %d, want %d", e.Stream, e.Index, e.Want)
}

func (e *OrderError) Unwrap() error { return ErrOutOfOrder }

// ArgError reports an argument or option outside its limit.
type ArgError struct {
	Field string // e.g. "Entry.Data", "Options.SegmentSize"
	Value any
	Limit string // the rule broken, e.g. "at most 16777216 bytes"
}

func (e *ArgError) Error() string {
	return fmt.Sprintf("wal: invalid %s %v: must be %s", e.Field, e.Value, e.Limit)
}

func (e *ArgError) Unwrap() error { return ErrInvalid }
