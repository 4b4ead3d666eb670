package ring

import (
	"errors"
	"fmt"
	"slices"
)

// ReplicationFactor is the size of every partition's Raft group.
const ReplicationFactor = 3

// NodeID names a physical node. It is the node's Raft server ID.
type NodeID string

var (
	// ErrPartitionMismatch reports two assignments, or an assignment and a
	// ring, with different partition counts.
	ErrPartitionMismatch = errors.New("ring: partition count mismatch")
	// ErrInvalidSplit reports a split an assignment cannot take: see
	// Assignment.WithSplit.
	ErrInvalidSplit = errors.New("ring: invalid split")
)

// Assignment places every partition's replicas and preferred primary on the
// member nodes. It is immutable; Ring.Place makes a new one, and
// MarshalBinary/UnmarshalBinary carry it through the metadata Raft group.
type Assignment struct {
	// epoch grows by one with every change of members, replicas or primaries.
	epoch uint64
	nodes []NodeID // members, ascending
	parts []placement
}

type placement struct {
	replicas [ReplicationFactor]NodeID // ascending
	primary  NodeID                    // one of replicas
}

// Epoch returns the assignment's version: 1 for a cluster's first, and one
// more than its predecessor's for each one that changed anything.
func (a *Assignment) Epoch() uint64 { return a.epoch }

// Partitions returns the number of partitions placed.
func (a *Assignment) Partitions() int { return len(a.parts) }

// Nodes returns the members the assignment was computed for, ascending. A
// member may hold no replica when there are more nodes than replicas.
func (a *Assignment) Nodes() []NodeID { return slices.Clone(a.nodes) }

// Replicas returns partition p's replicas in ascending order. It panics if
// p is out of range, as indexing a slice would.
func (a *Assignment) Replicas(p PartitionID) [ReplicationFactor]NodeID {
	return a.parts[p].replicas
}

// Primary returns partition p's preferred primary, one of its replicas. It
// panics if p is out of range.
func (a *Assignment) Primary(p PartitionID) NodeID { return a.parts[p].primary }

// PartitionsOf returns the partitions of which node holds a replica,
// ascending; none if node is not a member.
func (a *Assignment) PartitionsOf(node NodeID) []PartitionID {
	var out []PartitionID
	for p, pl := range a.parts {
		if slices.Contains(pl.replicas[:], node) {
			out = append(out, PartitionID(p))
		}
	}
	return out
}

// Equal reports whether a and b place the same members, replicas and
// primaries under the same epoch.
func (a *Assignment) Equal(b *Assignment) bool {
	return a.epoch == b.epoch && a.samePlacement(b)
}

func (a *Assignment) samePlacement(b *Assignment) bool {
	return slices.Equal(a.nodes, b.nodes) && slices.Equal(a.parts, b.parts)
}

// WithSplit returns a with partition child split from parent: child's
// replicas and primary are parent's, since the split creates the child's
// Raft group from the parent's data on the parent's nodes; a later Place
// spreads it. The epoch grows by one.
//
// child must be a new last partition, a.Partitions(), so that applying a
// split twice, or to an assignment that missed one, fails rather than
// shifting every later partition; the error then also wraps
// ErrPartitionMismatch. parent must precede child, and child be below
// MaxPartitions.
func (a *Assignment) WithSplit(parent, child PartitionID) (*Assignment, error) {
	switch n := a.Partitions(); {
	case int(child) != n:
		return nil, fmt.Errorf("%w: child %d of parent %d, want partition %d, the next: %w",
			ErrInvalidSplit, child, parent, n, ErrPartitionMismatch)
	case parent >= child:
		return nil, fmt.Errorf("%w: parent %d, want below child %d", ErrInvalidSplit, parent, child)
	case child >= MaxPartitions:
		return nil, fmt.Errorf("%w: child %d, want below %d", ErrInvalidSplit, child, MaxPartitions)
	}
	parts := make([]placement, len(a.parts), len(a.parts)+1)
	copy(parts, a.parts)
	return &Assignment{epoch: a.epoch + 1, nodes: a.nodes, parts: append(parts, a.parts[parent])}, nil
}

// Move is one replica change of one partition: add node Add to its Raft
// group, then remove node Remove. Executed one at a time, each keeps every
// group at ReplicationFactor members or one more.
type Move struct {
	Partition PartitionID
	Add       NodeID
	Remove    NodeID
}

func (m Move) String() string {
	return fmt.Sprintf("partition %d: add %s, remove %s", m.Partition, m.Add, m.Remove)
}

// Diff lists the moves that take the replicas of from to those of to,
// ordered by partition, then by added and removed node. Primary changes
// are not moves: compare Primary of the two.
func Diff(from, to *Assignment) ([]Move, error) {
	if from.Partitions() != to.Partitions() {
		return nil, fmt.Errorf("%w: diff from %d partitions to %d",
			ErrPartitionMismatch, from.Partitions(), to.Partitions())
	}
	var moves []Move
	for p := range from.parts {
		old, cur := from.parts[p].replicas[:], to.parts[p].replicas[:]
		var added, removed []NodeID
		for i := range ReplicationFactor {
			if !slices.Contains(old, cur[i]) {
				added = append(added, cur[i])
			}
			if !slices.Contains(cur, old[i]) {
				removed = append(removed, old[i])
			}
		}
		// Both sides hold ReplicationFactor distinct nodes, so added and
		// removed have equal lengths.
		for i := range added {
			moves = append(moves, Move{Partition: PartitionID(p), Add: added[i], Remove: removed[i]})
		}
	}
	return moves, nil
}
