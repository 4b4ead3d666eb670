package ring

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/cespare/xxhash/v2"
)

const (
	// MaxNodes bounds the member list: placement solves a flow over P·N
	// arcs, which takes about 0.4 s at P = 4096, N = 256.
	MaxNodes = 256
	// MaxNodeIDLen bounds a node ID in bytes; the encoding stores the
	// length in one byte.
	MaxNodeIDLen = 255
)

var (
	// ErrTooFewNodes reports fewer members than ReplicationFactor: a
	// partition's replicas must be on distinct nodes.
	ErrTooFewNodes = errors.New("ring: too few nodes")
	// ErrTooManyNodes reports more than MaxNodes members.
	ErrTooManyNodes = errors.New("ring: too many nodes")
	// ErrInvalidNode reports an empty, overlong or repeated node ID.
	ErrInvalidNode = errors.New("ring: invalid node ID")
)

// Place returns the assignment of r's partitions to nodes that moves the
// fewest replicas away from prev, then changes the fewest primaries, while
// meeting the balance bounds in the package comment. prev is nil for a new cluster
// and otherwise must place r's partition count; nodes no longer listed have
// left, and their replicas move. The order of nodes does not matter.
//
// The epoch is 1 for a new cluster, prev's (and the result is prev) when
// nothing changed, and prev's plus one otherwise.
//
// The problem is a min-cost flow: source → partition (3 units) → node →
// sink. Keeping prev's primary costs 0, keeping another of prev's
// replicas 1, adding a replica more than all keeps together, and filling a
// node's ⌈3P/N⌉-th slot more than all moves together, so the optimum first
// meets the balance bound (always feasible), then minimizes moves, then
// keeps primaries' replicas. Primaries are a second, smaller flow of
// the same shape over each partition's new replicas. Among equal-cost
// choices, arcs are tried in rendezvous-hash order of (partition, node),
// which spreads a partition's replicas, and so a failed node's recovery
// load, across the cluster.
func (r *Ring) Place(prev *Assignment, nodes []NodeID) (*Assignment, error) {
	members, err := checkMembers(nodes)
	if err != nil {
		return nil, err
	}
	if prev != nil && prev.Partitions() != r.Partitions() {
		return nil, fmt.Errorf("%w: prev places %d partitions, ring has %d",
			ErrPartitionMismatch, prev.Partitions(), r.Partitions())
	}
	pl := newPlanner(r.Partitions(), prev, members)
	replicas, err := pl.placeReplicas()
	if err != nil {
		return nil, err
	}
	primaries, err := pl.placePrimaries(replicas)
	if err != nil {
		return nil, err
	}
	next := &Assignment{epoch: 1, nodes: members, parts: make([]placement, pl.parts)}
	for p, primary := range primaries {
		reps := replicas[p]
		slices.Sort(reps[:])
		for i, n := range reps {
			next.parts[p].replicas[i] = members[n]
		}
		next.parts[p].primary = members[primary]
	}
	if prev != nil {
		if next.samePlacement(prev) {
			return prev, nil
		}
		next.epoch = prev.epoch + 1
	}
	return next, nil
}

// checkMembers validates nodes and returns them sorted, in a new slice.
func checkMembers(nodes []NodeID) ([]NodeID, error) {
	if err := checkNodeCount(len(nodes)); err != nil {
		return nil, err
	}
	members := slices.Clone(nodes)
	slices.Sort(members)
	for i, n := range members {
		if err := checkNodeID(n); err != nil {
			return nil, err
		}
		if i > 0 && members[i-1] == n {
			return nil, fmt.Errorf("%w: node %q listed twice", ErrInvalidNode, n)
		}
	}
	return members, nil
}

func checkNodeCount(n int) error {
	switch {
	case n < ReplicationFactor:
		return fmt.Errorf("%w: %d nodes, want at least %d", ErrTooFewNodes, n, ReplicationFactor)
	case n > MaxNodes:
		return fmt.Errorf("%w: %d nodes, want at most %d", ErrTooManyNodes, n, MaxNodes)
	}
	return nil
}

func checkNodeID(n NodeID) error {
	if n == "" || len(n) > MaxNodeIDLen {
		return fmt.Errorf("%w: node ID is %d bytes, want 1 to %d", ErrInvalidNode, len(n), MaxNodeIDLen)
	}
	return nil
}

// planner holds one Place call's inputs, with members as indexes into the
// sorted member list and each partition's members in rendezvous order.
type planner struct {
	parts, nodes int
	prevReplicas [][]int // per partition: surviving replicas of prev
	prevPrimary  []int   // per partition: prev's primary, or -1 if gone
	order        [][]int // per partition: all members, rendezvous order
}

func newPlanner(parts int, prev *Assignment, members []NodeID) *planner {
	pl := &planner{
		parts:        parts,
		nodes:        len(members),
		prevReplicas: make([][]int, parts),
		prevPrimary:  make([]int, parts),
		order:        make([][]int, parts),
	}
	index := make(map[NodeID]int, len(members))
	for i, n := range members {
		index[n] = i
	}
	weight := make([]uint64, len(members))
	var buf []byte
	for p := range parts {
		pl.prevPrimary[p] = -1
		if prev != nil {
			for _, n := range prev.parts[p].replicas {
				if i, ok := index[n]; ok {
					pl.prevReplicas[p] = append(pl.prevReplicas[p], i)
				}
			}
			if i, ok := index[prev.parts[p].primary]; ok {
				pl.prevPrimary[p] = i
			}
		}
		for i, n := range members {
			buf = append(binary.BigEndian.AppendUint32(buf[:0], uint32(p)), n...)
			weight[i] = xxhash.Sum64(buf)
		}
		order := make([]int, len(members))
		for i := range order {
			order[i] = i
		}
		// Members are distinct and sorted, so the index breaks weight ties
		// deterministically.
		slices.SortFunc(order, func(a, b int) int {
			return cmp.Or(cmp.Compare(weight[b], weight[a]), cmp.Compare(a, b))
		})
		pl.order[p] = order
	}
	return pl
}

// Vertex numbering of both flow networks.
func (pl *planner) source() int         { return 0 }
func (pl *planner) partition(p int) int { return 1 + p }
func (pl *planner) member(n int) int    { return 1 + pl.parts + n }
func (pl *planner) sink() int           { return 1 + pl.parts + pl.nodes }
func (pl *planner) vertices() int       { return 2 + pl.parts + pl.nodes }

// addBalancedSinks gives every member ⌊total/N⌋ free units to the sink and
// one more at cost over, so a min-cost flow fills every member to the floor
// before any to the ceiling whenever the rest of the network allows.
func (pl *planner) addBalancedSinks(g *flowNet, total int, over int64) {
	floor, extra := total/pl.nodes, total%pl.nodes
	for n := range pl.nodes {
		if floor > 0 {
			g.addArc(pl.member(n), pl.sink(), int32(floor), 0)
		}
		if extra > 0 {
			g.addArc(pl.member(n), pl.sink(), 1, over)
		}
	}
}

// errInfeasible means the flow could not route every unit. Balanced
// placement is always feasible (see placeReplicas and placePrimaries), so
// this is a bug, reported rather than returned as a wrong assignment.
var errInfeasible = errors.New("ring: internal error: placement flow infeasible")

// candidate is an arc from a partition to a member in a placement network.
type candidate struct{ arc, node int }

// chosen returns the members whose candidate arcs carry flow.
func chosen(g *flowNet, cands []candidate) []int {
	var out []int
	for _, c := range cands {
		if g.flow(c.arc) > 0 {
			out = append(out, c.node)
		}
	}
	return out
}

// placeReplicas returns each partition's ReplicationFactor members.
//
// A 0/1 matrix with P rows summing to 3 and column sums t_n ≤ P exists for
// any t summing to 3P (Gale–Ryser), and ⌈3P/N⌉ ≤ P for N ≥ 3, so the
// network always routes 3P units with every member at its floor.
func (pl *planner) placeReplicas() ([][ReplicationFactor]int, error) {
	total := ReplicationFactor * pl.parts
	const keepPrimary, keepReplica = 0, 1
	move := int64(total + 1)      // > any sum of keep costs
	over := move*int64(total) + 1 // > any sum of move and keep costs
	g := newFlowNet(pl.vertices(), pl.parts*(pl.nodes+1)+2*pl.nodes)
	cands := make([][]candidate, pl.parts)
	for p := range pl.parts {
		g.addArc(pl.source(), pl.partition(p), ReplicationFactor, 0)
		for _, n := range pl.order[p] {
			cost := move
			switch {
			case n == pl.prevPrimary[p]:
				cost = keepPrimary
			case slices.Contains(pl.prevReplicas[p], n):
				cost = keepReplica
			}
			cands[p] = append(cands[p], candidate{g.addArc(pl.partition(p), pl.member(n), 1, cost), n})
		}
	}
	pl.addBalancedSinks(g, total, over)
	if g.minCostFlow(pl.source(), pl.sink(), total) != total {
		return nil, errInfeasible
	}
	out := make([][ReplicationFactor]int, pl.parts)
	for p := range pl.parts {
		copy(out[p][:], chosen(g, cands[p]))
	}
	return out, nil
}

// placePrimaries returns each partition's primary, one of replicas[p].
//
// With every member holding ⌊3P/N⌋ or ⌈3P/N⌉ replicas, any member set S
// touches at least ⌊P/N⌋·|S| partitions and contains all replicas of at
// most ⌈P/N⌉·|S|, which by Frank's box theorem for base polyhedra is
// enough for primaries balanced to ⌊P/N⌋ or ⌈P/N⌉ to exist.
func (pl *planner) placePrimaries(replicas [][ReplicationFactor]int) ([]int, error) {
	const keep, change = 0, 1
	over := int64(pl.parts + 1) // > any sum of change costs
	g := newFlowNet(pl.vertices(), pl.parts*(ReplicationFactor+1)+2*pl.nodes)
	cands := make([][]candidate, pl.parts)
	for p := range pl.parts {
		g.addArc(pl.source(), pl.partition(p), 1, 0)
		for _, n := range pl.order[p] {
			if !slices.Contains(replicas[p][:], n) {
				continue
			}
			cost := int64(change)
			if n == pl.prevPrimary[p] {
				cost = keep
			}
			cands[p] = append(cands[p], candidate{g.addArc(pl.partition(p), pl.member(n), 1, cost), n})
		}
	}
	pl.addBalancedSinks(g, pl.parts, over)
	if g.minCostFlow(pl.source(), pl.sink(), pl.parts) != pl.parts {
		return nil, errInfeasible
	}
	out := make([]int, pl.parts)
	for p := range pl.parts {
		out[p] = chosen(g, cands[p])[0]
	}
	return out, nil
}
