package shard

import (
	"errors"
	"fmt"
	"time"

	"github.com/ringkv/ringkv/fsm"
)

var (
	// ErrNotPrimary: the replica is not its group's leader. The error is a
	// *NotPrimaryError naming the leader, if known.
	ErrNotPrimary = errors.New("not the partition's primary")
	// ErrNoQuorum: a strong write or quorum read could not reach a majority
	// in time. For a write the outcome is unknown: it may still commit.
	ErrNoQuorum = errors.New("no quorum")
	// ErrNotFound: the key has no live value.
	ErrNotFound = errors.New("key not found")
	// ErrClosed: the replica was shut down. A write that gets it may have
	// taken effect: raft answers a committed entry it had not yet applied
	// the same way as a proposal it never took.
	ErrClosed = errors.New("replica closed")
	// ErrSuperseded: a strong write committed but lost the conflict rule to
	// a write with a greater (version, timestamp), so it had no effect. The
	// error is a *SupersededError naming both stamps.
	ErrSuperseded = errors.New("write superseded")
	// ErrJournalFull: a fast write found its partition's journal full for
	// as long as it could wait, because replication is behind; nothing was
	// written. The error is a *JournalFullError.
	ErrJournalFull = errors.New("fast-write journal full")
)

// JournalFullError is ErrJournalFull with the partition, the journal's
// depth and what ended the wait.
type JournalFullError struct {
	Partition uint32
	Records   int
	Bytes     int64
	Cause     error
}

func (e *JournalFullError) Error() string {
	return fmt.Sprintf("partition %d: fast-write journal full (%d records, %d bytes) while replication catches up: %v",
		e.Partition, e.Records, e.Bytes, e.Cause)
}

func (e *JournalFullError) Unwrap() []error { return []error{ErrJournalFull, e.Cause} }

// SupersededError is ErrSuperseded with the stamps involved.
type SupersededError struct {
	Partition uint32
	Stamp     fsm.Stamp // the write's own
	Winner    fsm.Stamp // the key's stamp that beat it
}

func (e *SupersededError) Error() string {
	return fmt.Sprintf("partition %d: write %v committed but lost to the newer %v", e.Partition, e.Stamp, e.Winner)
}

func (e *SupersededError) Unwrap() error { return ErrSuperseded }

// NotPrimaryError says who leads the partition, as far as this replica knows.
type NotPrimaryError struct {
	Partition  uint32
	LeaderID   string // empty while no leader is known
	LeaderAddr string
}

func (e *NotPrimaryError) Error() string {
	if e.LeaderID == "" {
		return fmt.Sprintf("partition %d: not the primary, and no primary is known", e.Partition)
	}
	return fmt.Sprintf("partition %d: not the primary; primary is %s at %s", e.Partition, e.LeaderID, e.LeaderAddr)
}

func (e *NotPrimaryError) Unwrap() error { return ErrNotPrimary }

// NoQuorumError is ErrNoQuorum with the partition and the bound that passed.
type NoQuorumError struct {
	Partition uint32
	Op        string
	Timeout   time.Duration
	Cause     error
}

func (e *NoQuorumError) Error() string {
	return fmt.Sprintf("partition %d: %s: no quorum within %v: %v", e.Partition, e.Op, e.Timeout, e.Cause)
}

func (e *NoQuorumError) Unwrap() []error { return []error{ErrNoQuorum, e.Cause} }
