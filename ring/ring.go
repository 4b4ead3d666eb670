// Package ring maps keys to partitions and partitions to nodes.
//
// # Keys to partitions
//
// A key belongs to exactly one partition, chosen by its 64-bit hash (see
// Hash). A cluster is created with P₀ partitions, P₀ a power of two, where
// partition i owns the hashes whose top log2(P₀) bits are i. It then grows
// by linear hashing, one split at a time, up to MaxPartitions: with P
// partitions, let W be the largest P₀·2ᵏ ≤ P; the next split divides
// partition P−W, which keeps its id and the lower half of its hash range,
// and gives the upper half to the new partition P. Splits thus sweep
// 0, 1, …, W−1 in order, doubling the count to 2W before the next sweep.
//
// Seen as a tree, a partition is a prefix of the hash: the top log2(P₀)
// bits pick a root, and each further bit picks the lower (0) or upper (1)
// half of a split. Partition p < W has split at level W iff p+W < P, and
// its upper half is p+W, so PartitionOf walks down from the root, adding W
// for each 1 bit, while the partition reached has split at the current
// level. Hence, with P = P₀, partition i still owns exactly
// [i·2⁶⁴/P₀, (i+1)·2⁶⁴/P₀), as it did before partitions could split.
//
// The scheme is chosen so that
//
//   - growing costs one new Raft group at a time: a split moves no replica
//     and leaves every other partition alone, rather than doubling the
//     cluster's groups at once;
//   - ids stay dense in [0, P), so an Assignment stays a slice and its
//     encoding a count; the parent keeps its id and its Raft group, whose
//     lower-half keys do not move at all;
//   - routing is a pure function of (P₀, P, hash): a node or client that
//     knows the two counts routes every key with no table to fetch or keep
//     current, in one shift plus at most log2(MaxPartitions) cheap steps;
//   - a partition is still one contiguous hash range (see Range), which is
//     what snapshots and anti-entropy compare across nodes.
//
// # Partitions to nodes
//
// Each partition is served by a Raft group of ReplicationFactor distinct
// nodes, one of which is its preferred primary. Ring.Place computes that
// Assignment from the previous one and the current member list; after a
// split, Assignment.WithSplit extends the previous one first. Place is a
// pure, deterministic function, and its result satisfies these invariants
// for any partition count P, which the tests check over many random
// membership histories:
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

// ErrInvalidPartitions reports an initial partition count that is not a
// power of two in [1, MaxPartitions], or a partition count outside
// [initial, MaxPartitions].
var ErrInvalidPartitions = errors.New("ring: invalid partition count")

// PartitionID names a partition: an integer in [0, P).
type PartitionID uint32

// Ring is the key → partition half of the package: the 64-bit hash space
// cut into P₀ equal slices, then split P−P₀ times.
type Ring struct {
	// bits is log2(P₀): the top bits of a hash pick its root partition.
	bits uint
	// n is P, kept as a uint64 so that PartitionOf compares without
	// conversions.
	n uint64
	// levels is log2(W/P₀), W the largest P₀·2ᵏ ≤ P: the levels at which
	// every partition has split.
	levels int
}

// New returns the ring of a new cluster, one that has never split: P = P₀
// = partitions, which must be a power of two in [1, MaxPartitions].
func New(partitions int) (*Ring, error) {
	return Grown(partitions, partitions)
}

// Grown returns the ring of a cluster created with initial partitions,
// which must be a power of two in [1, MaxPartitions], that has since split
// to partitions, in [initial, MaxPartitions].
func Grown(initial, partitions int) (*Ring, error) {
	if err := checkPartitions(initial); err != nil {
		return nil, err
	}
	if partitions < initial || partitions > MaxPartitions {
		return nil, fmt.Errorf("%w: partitions = %d, want %d (the initial count) to %d",
			ErrInvalidPartitions, partitions, initial, MaxPartitions)
	}
	return newRing(uint(bits.TrailingZeros(uint(initial))), uint64(partitions)), nil
}

func newRing(rootBits uint, partitions uint64) *Ring {
	return &Ring{bits: rootBits, n: partitions, levels: bits.Len64(partitions) - 1 - int(rootBits)}
}

// checkPartitions checks an initial partition count: a power of two, so
// that the root partitions are the top bits of the hash.
func checkPartitions(partitions int) error {
	if partitions < 1 || partitions > MaxPartitions || partitions&(partitions-1) != 0 {
		return fmt.Errorf("%w: partitions = %d, want a power of two in [1, %d]",
			ErrInvalidPartitions, partitions, MaxPartitions)
	}
	return nil
}

// checkPartitionCount checks the count of a ring that may have split, which
// an Assignment cannot tell from one that has not.
func checkPartitionCount(partitions int) error {
	if partitions < 1 || partitions > MaxPartitions {
		return fmt.Errorf("%w: partitions = %d, want 1 to %d",
			ErrInvalidPartitions, partitions, MaxPartitions)
	}
	return nil
}

// Initial returns P₀, the partition count the cluster was created with.
func (r *Ring) Initial() int { return 1 << r.bits }

// Partitions returns P, the number of partitions.
func (r *Ring) Partitions() int { return int(r.n) }

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

// PartitionOf returns the partition that owns hash h. With P₀ = 1 the
// shift is 64, which Go defines to yield 0.
//
// Every partition below W has split at each level below W, so the walk
// takes the next bit of h at each of those unconditionally, a loop whose
// trip count is fixed by the ring and so predicted, and decides only the
// last level, W's, by comparing with P. That decision depends on h, so it is
// a conditional move rather than a branch, which would miss half the time.
func (r *Ring) PartitionOf(h uint64) PartitionID {
	id := h >> (64 - r.bits)
	rest := h << r.bits // the bits below the root's, next one on top
	width := uint64(1) << r.bits
	for range r.levels {
		id |= width & -(rest >> 63) // id < width, so | is +
		rest <<= 1
		width <<= 1
	}
	if up := id | width&-(rest>>63); up < r.n {
		id = up
	}
	return PartitionID(id)
}

// NextSplit returns the partition the next split divides and the one it
// creates, always P; ok is false when P is MaxPartitions.
func (r *Ring) NextSplit() (parent, child PartitionID, ok bool) {
	if r.n >= MaxPartitions {
		return 0, 0, false
	}
	return PartitionID(clearTop(r.n)), PartitionID(r.n), true
}

// Split returns the ring after the next split, with one more partition.
func (r *Ring) Split() (*Ring, error) {
	if r.n >= MaxPartitions {
		return nil, fmt.Errorf("%w: cannot split %d partitions, the maximum",
			ErrInvalidPartitions, r.n)
	}
	return newRing(r.bits, r.n+1), nil
}

// Parent returns the partition p was split from; ok is false if p is one
// of the P₀ the cluster was created with. It panics if p is not in
// [0, Partitions()), as Range does.
func (r *Ring) Parent(p PartitionID) (parent PartitionID, ok bool) {
	r.check(p)
	if uint64(p) < 1<<r.bits {
		return 0, false
	}
	return PartitionID(clearTop(uint64(p))), true
}

// clearTop returns x ≥ 1 without its highest set bit. For a partition
// p ≥ P₀ that is p − W, W the largest P₀·2ᵏ ≤ p: its parent, since P₀
// is a power of two.
func clearTop(x uint64) uint64 { return x &^ (1 << (bits.Len64(x) - 1)) }

func (r *Ring) check(p PartitionID) {
	if uint64(p) >= r.n {
		panic(fmt.Sprintf("ring: partition %d out of range [0, %d)", p, r.n))
	}
}

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
	r.check(p)
	// Walk PartitionOf's path to p, taking at each level the bit of p it
	// adds; past p, p's own later splits each keep the lower half, a 0.
	id := uint64(p) & (1<<r.bits - 1)
	first, depth := id<<(64-r.bits), r.bits
	for width := uint64(1) << r.bits; id+width < r.n; width <<= 1 {
		if uint64(p)&width != 0 {
			id |= width
			first |= 1 << (63 - depth)
		}
		depth++
	}
	return HashRange{First: first, Last: first | ^uint64(0)>>depth}
}
