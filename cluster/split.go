package cluster

import (
	"slices"

	"github.com/ringkv/ringkv/ring"
)

// Splits are recorded in three steps, one partition at a time, in the
// order the ring grows (ring.Ring.NextSplit):
//
//  1. OpSplitTarget records how many partitions the operator wants.
//  2. OpBeginSplit records the split about to happen, before the parent's
//     primary is asked for it: from then on the parent takes no replica
//     move, and a node never mistakes the child it derives for a stray.
//  3. The parent's primary splits (shard.Replica.Split), and every replica
//     of the parent derives the child where it applies the split. Then
//     OpEndSplit adds the child to the map: the partition count grows by
//     one, the child's target and recorded configuration are the parent's
//     (Config: the voters the split gave the child), and Unbalanced has
//     the next Plan spread the child.
//
// A manager that fails between the steps leaves them recorded; the next one
// asks the primary again, which answers at once for a split already
// applied.

func (s *State) applySplit(cmd Command) (bool, error) {
	r, err := s.Ring()
	if err != nil {
		return false, refuse("%v", err)
	}
	parent, child, ok := r.NextSplit()
	switch cmd.Op {
	case OpSplitTarget:
		switch {
		case cmd.Count < s.Partitions:
			return false, refuse("partitions %d: the cluster has %d, and partitions never merge", cmd.Count, s.Partitions)
		case cmd.Count > ring.MaxPartitions:
			return false, refuse("partitions %d: at most %d", cmd.Count, ring.MaxPartitions)
		case cmd.Count == s.SplitTarget:
			return false, nil
		}
		s.SplitTarget = cmd.Count
		return true, nil
	case OpBeginSplit:
		switch {
		case !ok:
			return false, refuse("the cluster has %d partitions, the most there can be", s.Partitions)
		case cmd.Partition != uint32(parent):
			return false, refuse("partition %d cannot split now: partition %d splits next", cmd.Partition, parent)
		case s.Splitting != nil:
			return false, nil
		case s.Moving(parent):
			return false, refuse("partition %d is moving a replica; it splits once the move is done", parent)
		}
		s.Splitting = &Split{Parent: uint32(parent), Child: uint32(child)}
		return true, nil
	case OpEndSplit:
		if s.Splitting == nil || s.Splitting.Parent != cmd.Partition {
			return false, refuse("partition %d: no split of it under way", cmd.Partition)
		}
		if len(cmd.Config) != ring.ReplicationFactor {
			return false, refuse("partition %d: the child's configuration has %d servers, want %d", cmd.Partition, len(cmd.Config), ring.ReplicationFactor)
		}
		target, err := s.target.WithSplit(parent, child)
		if err != nil {
			return false, refuse("%v", err)
		}
		enc, err := target.MarshalBinary()
		if err != nil {
			return false, refuse("%v", err)
		}
		s.Target = enc
		s.Config = append(slices.Clone(s.Config), slices.Clone(cmd.Config))
		s.Partitions++
		s.Splitting = nil
		s.Unbalanced = true
		return true, nil
	}
	return false, refuse("unknown command %q", cmd.Op)
}

// WantsSplit reports the split the manager should begin next, if any: the
// partition count is below the operator's target, or below floor (the
// count the cluster's size asks for, FittedPartitions), and no split is
// under way.
func (s *State) WantsSplit(floor int) (parent ring.PartitionID, ok bool) {
	if s.Splitting != nil || s.Partitions >= max(s.SplitTarget, min(floor, ring.MaxPartitions)) {
		return 0, false
	}
	r, err := s.Ring()
	if err != nil {
		return 0, false
	}
	parent, _, ok = r.NextSplit()
	return parent, ok
}

// FittedPartitions is the partition count a cluster of nodes members wants
// at perNode partitions per node: nodes·perNode rounded up to a power of
// two (linear hashing leaves the partitions of a power-of-two count one
// size), at most ring.MaxPartitions; 0 if perNode is 0 or less.
func FittedPartitions(nodes, perNode int) int {
	if perNode <= 0 || nodes <= 0 {
		return 0
	}
	p := 1
	for p < nodes*perNode && p < ring.MaxPartitions {
		p *= 2
	}
	return p
}

// Placeable counts the members a placement may use now: neither leaving
// nor down.
func (s *State) Placeable() int {
	n := 0
	for _, m := range s.Members {
		if m.State != Leaving && m.State != Down {
			n++
		}
	}
	return n
}
