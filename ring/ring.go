// Package ring maps keys to partitions and partitions to nodes.
//
// A key belongs to exactly one partition: its 64-bit hash (see Hash) is cut
// into P equal ranges, P a power of two fixed when the cluster is created,
// and partition i owns the hashes [i·2⁶⁴/P, (i+1)·2⁶⁴/P), that is the top
// log2(P) bits of the hash. Lookup is a hash and a shift: no table, no lock.
//
// Each partition is served by a Raft group of ReplicationFactor distinct
// nodes, one of which is its preferred primary. Ring.Place computes that
// Assignment from the previous one and the current member list. It is a pure,
// deterministic function, and its result satisfies these invariants, which
// the tests check over many random membership histories:
//
//   - every partition has ReplicationFactor distinct replicas, and its
//     primary is one of them;
//   - with 3P replicas on N nodes every node holds ⌊3P/N⌋ or ⌈3P/N⌉ of them,
//     and is the primary of ⌊P/N⌋ or ⌈P/N⌉ partitions;
//   - among all assignments meeting the replica bound, the result moves the
//     fewest replicas away from prev (a departed node's replicas, a joining
//     node's share, and only what distinctness or balance strictly adds);
//   - given those replicas, it changes the fewest primaries that the
//     primary bound allows;
//   - the same (prev, member set) gives the same result, whatever the order
//     of the members.
//
// The package is a leaf: no I/O, no Raft, no goroutines. Ring and Assignment
// are immutable and safe for concurrent use.
package ring

import (
	"errors"
	"fmt"
	"math/bits"

	"github.com/cespare/xxhash/v2"
)

const (
	// DefaultPartitions is the partition count of a cluster created without
	// an explicit one.
	DefaultPartitions = 16
	// MaxPartitions bounds P: it keeps an Assignment (and the number of Raft
	// groups a cluster runs) small.
	MaxPartitions = 4096
)

// ErrInvalidPartitions reports a partition count that is not a power of two
// in [1, MaxPartitions].
var ErrInvalidPartitions = errors.New("ring: invalid partition count")

// PartitionID names a partition: an integer in [0, P).
type PartitionID uint32

// Ring is the key → partition half of the package: P equal slices of the
// 64-bit hash space.
type Ring struct {
	// bits is log2(P): a partition is the top bits of a key's hash.
	bits uint
}

// New returns the ring of the given number of partitions, which must be a
// power of two in [1, MaxPartitions].
func New(partitions int) (*Ring, error) {
	if err := checkPartitions(partitions); err != nil {
		return nil, err
	}
	return &Ring{bits: uint(bits.TrailingZeros(uint(partitions)))}, nil
}

func checkPartitions(partitions int) error {
	if partitions < 1 || partitions > MaxPartitions || partitions&(partitions-1) != 0 {
		return fmt.Errorf("%w: partitions = %d, want a power of two in [1, %d]",
			ErrInvalidPartitions, partitions, MaxPartitions)
	}
	return nil
}

// Partitions returns P, the number of partitions.
func (r *Ring) Partitions() int { return 1 << r.bits }

// Hash returns the 64-bit hash that places key on the ring: XXH64 with seed
// 0 (github.com/cespare/xxhash/v2 Sum64).
//
// The hash is part of the on-disk and wire contract: which partition, and
// so which Raft group and which snapshot, holds a key follows from it, and
// anti-entropy compares hash ranges across nodes. It must never change;
// TestHashIsStable pins its values.
func Hash(key []byte) uint64 { return xxhash.Sum64(key) }

// Lookup returns the partition that owns key.
func (r *Ring) Lookup(key []byte) PartitionID { return r.PartitionOf(Hash(key)) }

// PartitionOf returns the partition that owns hash h. With P = 1 the shift
// is 64, which Go defines to yield 0.
func (r *Ring) PartitionOf(h uint64) PartitionID { return PartitionID(h >> (64 - r.bits)) }

// HashRange is a closed interval [First, Last] of hashes. It is closed so
// that the last partition's range, which ends at 2⁶⁴-1, fits in a uint64.
type HashRange struct {
	First, Last uint64
}

// Contains reports whether h lies in the range.
func (hr HashRange) Contains(h uint64) bool { return hr.First <= h && h <= hr.Last }

// Range returns the hashes partition p owns. It panics if p is not in
// [0, Partitions()), as indexing a slice would.
func (r *Ring) Range(p PartitionID) HashRange {
	if int(p) >= r.Partitions() {
		panic(fmt.Sprintf("ring: partition %d out of range [0, %d)", p, r.Partitions()))
	}
	first := uint64(p) << (64 - r.bits)
	return HashRange{First: first, Last: first | ^uint64(0)>>r.bits}
}
