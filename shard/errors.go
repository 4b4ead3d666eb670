package shard

import (
	"errors"
	"fmt"
	"time"
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
	// ErrClosed: the replica was shut down.
	ErrClosed = errors.New("replica closed")
)

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
