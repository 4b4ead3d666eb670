package ring

import (
	"errors"
	"flag"
	"fmt"
	"maps"
	"math/bits"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

var seed = flag.Uint64("seed", 1, "seed of the random membership histories in TestPlaceHistories")

func mustRing(t testing.TB, p int) *Ring {
	t.Helper()
	r, err := New(p)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func mustPlace(t testing.TB, r *Ring, prev *Assignment, nodes []NodeID) *Assignment {
	t.Helper()
	a, err := r.Place(prev, nodes)
	if err != nil {
		t.Fatalf("Place(%d nodes): %v", len(nodes), err)
	}
	return a
}

func nodeIDs(n int) []NodeID {
	out := make([]NodeID, n)
	for i := range out {
		out[i] = NodeID(fmt.Sprintf("node-%02d", i))
	}
	return out
}

// checkBalanced fails t unless a is a structurally valid, balanced
// assignment of exactly nodes.
func checkBalanced(t *testing.T, a *Assignment, nodes []NodeID) {
	t.Helper()
	want := slices.Sorted(slices.Values(nodes))
	if !slices.Equal(a.Nodes(), want) {
		t.Fatalf("Nodes() = %v, want %v", a.Nodes(), want)
	}
	replicas := make(map[NodeID]int)
	primaries := make(map[NodeID]int)
	for p := range PartitionID(a.Partitions()) {
		reps := a.Replicas(p)
		for i, n := range reps {
			if !slices.Contains(want, n) {
				t.Fatalf("partition %d: replica %q is not a member", p, n)
			}
			if i > 0 && reps[i-1] >= n {
				t.Fatalf("partition %d: replicas %v not distinct and ascending", p, reps)
			}
			replicas[n]++
		}
		if !slices.Contains(reps[:], a.Primary(p)) {
			t.Fatalf("partition %d: primary %q not among replicas %v", p, a.Primary(p), reps)
		}
		primaries[a.Primary(p)]++
	}
	checkSpread(t, "replicas", replicas, ReplicationFactor*a.Partitions(), want)
	checkSpread(t, "primaries", primaries, a.Partitions(), want)
}

func checkSpread(t *testing.T, what string, count map[NodeID]int, total int, nodes []NodeID) {
	t.Helper()
	lo, hi := total/len(nodes), (total+len(nodes)-1)/len(nodes)
	for _, n := range nodes {
		if count[n] < lo || count[n] > hi {
			t.Fatalf("%s: node %s holds %d of %d, want %d..%d", what, n, count[n], total, lo, hi)
		}
	}
}

// exchangeProblem is a balanced placement seen as units held by nodes:
// unit p is held by holders[p], may be held by any of candidates[p], and
// costs cost(p, n) while n holds it. Every node holds ⌊U/N⌋ or ⌈U/N⌉ of
// the U units.
type exchangeProblem struct {
	nodes      []NodeID
	holders    func(p int) []NodeID
	candidates func(p int) []NodeID
	cost       func(p int, n NodeID) int
	units      int
}

// improvable reports whether a chain of hand-offs lowers the total cost
// while keeping balance: node X passes unit p to Y, which passes unit q to
// Z, and so on, closing a cycle or running from a node above the floor to
// one below the ceiling. Such a chain exists iff the placement's flow has a
// negative residual cycle, that is iff the placement is not of minimum cost.
// It is found with Bellman–Ford, independently of the solver in flow.go.
func improvable(pr exchangeProblem) bool {
	n := len(pr.nodes)
	index := make(map[NodeID]int, n)
	for i, id := range pr.nodes {
		index[id] = i
	}
	virtual := n + pr.units // links nodes that may lose a unit to those that may gain one
	type arc struct{ from, to, w int }
	var arcs []arc
	held := make([]int, n)
	for p := range pr.units {
		holders := pr.holders(p)
		for _, x := range holders {
			held[index[x]]++
			arcs = append(arcs, arc{index[x], n + p, -pr.cost(p, x)})
		}
		for _, y := range pr.candidates(p) {
			if !slices.Contains(holders, y) {
				arcs = append(arcs, arc{n + p, index[y], pr.cost(p, y)})
			}
		}
	}
	total := 0
	for _, h := range held {
		total += h
	}
	lo, hi := total/n, (total+n-1)/n
	for i, h := range held {
		if h > lo {
			arcs = append(arcs, arc{virtual, i, 0})
		}
		if h < hi {
			arcs = append(arcs, arc{i, virtual, 0})
		}
	}
	dist := make([]int, virtual+1) // all zero: every vertex is a start
	for range virtual + 1 {
		relaxed := false
		for _, a := range arcs {
			if d := dist[a.from] + a.w; d < dist[a.to] {
				dist[a.to], relaxed = d, true
			}
		}
		if !relaxed {
			return false
		}
	}
	return true
}

// replicaExchange is the problem of moving the fewest replicas from prev.
func replicaExchange(prev, next *Assignment) exchangeProblem {
	return exchangeProblem{
		nodes:      next.nodes,
		units:      next.Partitions(),
		holders:    func(p int) []NodeID { return next.parts[p].replicas[:] },
		candidates: func(int) []NodeID { return next.nodes },
		cost: func(p int, n NodeID) int {
			if slices.Contains(prev.parts[p].replicas[:], n) {
				return 0
			}
			return 1
		},
	}
}

// primaryExchange is the problem of changing the fewest primaries from prev
// among next's replicas.
func primaryExchange(prev, next *Assignment) exchangeProblem {
	return exchangeProblem{
		nodes:      next.nodes,
		units:      next.Partitions(),
		holders:    func(p int) []NodeID { return []NodeID{next.parts[p].primary} },
		candidates: func(p int) []NodeID { return next.parts[p].replicas[:] },
		cost: func(p int, n NodeID) int {
			if prev.parts[p].primary == n {
				return 0
			}
			return 1
		},
	}
}

func primaryChanges(prev, next *Assignment) int {
	c := 0
	for p := range PartitionID(prev.Partitions()) {
		if prev.Primary(p) != next.Primary(p) {
			c++
		}
	}
	return c
}

// checkStep fails t unless next = Place(prev, nodes) meets every guarantee
// Place gives relative to prev.
func checkStep(t *testing.T, r *Ring, prev, next *Assignment, nodes []NodeID, rng *rand.Rand) {
	t.Helper()
	checkBalanced(t, next, nodes)

	shuffled := slices.Clone(nodes)
	rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	if again := mustPlace(t, r, prev, shuffled); !again.Equal(next) {
		t.Fatalf("Place is not deterministic: member order %v gave a different assignment", shuffled)
	}
	if again := mustPlace(t, r, next, nodes); again != next {
		t.Fatalf("Place(next, same nodes) changed the assignment (epoch %d → %d)", next.Epoch(), again.Epoch())
	}
	if prev == nil {
		if next.Epoch() != 1 {
			t.Fatalf("first epoch = %d, want 1", next.Epoch())
		}
		return
	}

	moves, err := Diff(prev, next)
	if err != nil {
		t.Fatal(err)
	}
	if improvable(replicaExchange(prev, next)) {
		t.Fatalf("%d replica moves, and a balanced assignment with fewer exists", len(moves))
	}
	if improvable(primaryExchange(prev, next)) {
		t.Fatalf("%d primary changes, and balanced primaries with fewer exist", primaryChanges(prev, next))
	}
	wantEpoch := prev.Epoch() + 1
	if next.samePlacement(prev) {
		wantEpoch = prev.Epoch()
	}
	if next.Epoch() != wantEpoch {
		t.Fatalf("epoch %d after epoch %d, want %d", next.Epoch(), prev.Epoch(), wantEpoch)
	}
}

// TestPlaceHistories drives random membership histories (joins, leaves,
// replacements, several at once) through Place and checks every step.
// Run with -seed=N to explore other histories.
func TestPlaceHistories(t *testing.T) {
	const minNodes, maxNodes = 3, 20
	tests := []struct {
		partitions, steps int
	}{
		{4, 60}, {8, 60}, {16, 60}, {64, 40}, {256, 25}, {1024, 12},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("P=%d", tt.partitions), func(t *testing.T) {
			s := *seed + uint64(tt.partitions)
			t.Logf("seed %d (rerun with -seed=%d)", s, *seed)
			rng := rand.New(rand.NewPCG(s, s))
			r := mustRing(t, tt.partitions)
			next := 0
			fresh := func() NodeID {
				next++
				return NodeID(fmt.Sprintf("n%d-%x", next, rng.Uint32()))
			}
			nodes := make([]NodeID, minNodes+rng.IntN(maxNodes-minNodes+1))
			for i := range nodes {
				nodes[i] = fresh()
			}
			a := mustPlace(t, r, nil, nodes)
			checkStep(t, r, nil, a, nodes, rng)
			for step := range tt.steps {
				joins, leaves := 0, 0
				switch rng.IntN(4) {
				case 0:
					joins = 1
				case 1:
					leaves = 1
				case 2:
					joins, leaves = 1, 1
				default:
					joins, leaves = rng.IntN(4), rng.IntN(4)
				}
				joins = min(joins, maxNodes-len(nodes)+leaves)
				leaves = min(leaves, len(nodes)-minNodes+joins, len(nodes))
				for range leaves {
					i := rng.IntN(len(nodes))
					nodes = slices.Delete(nodes, i, i+1)
				}
				for range joins {
					nodes = append(nodes, fresh())
				}
				prev := a
				a = mustPlace(t, r, prev, nodes)
				moves, err := Diff(prev, a)
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("step %d: -%d +%d → %d nodes, %d replica moves, %d primary changes, epoch %d",
					step, leaves, joins, len(nodes), len(moves), primaryChanges(prev, a), a.Epoch())
				checkStep(t, r, prev, a, nodes, rng)
			}
		})
	}
}

// TestPlaceAllSizes checks the first placement and one join and one leave
// for every P in the tested set and every N from 3 to 20.
func TestPlaceAllSizes(t *testing.T) {
	rng := rand.New(rand.NewPCG(*seed, 0))
	for _, p := range []int{1, 2, 4, 8, 16, 64, 256, 1024} {
		r := mustRing(t, p)
		for n := 3; n <= 20; n++ {
			t.Run(fmt.Sprintf("P=%d/N=%d", p, n), func(t *testing.T) {
				nodes := nodeIDs(n + 1)
				base := mustPlace(t, r, nil, nodes[:n])
				checkStep(t, r, nil, base, nodes[:n], rng)
				joined := mustPlace(t, r, base, nodes)
				checkStep(t, r, base, joined, nodes, rng)
				if n > 3 {
					left := mustPlace(t, r, base, nodes[1:n])
					checkStep(t, r, base, left, nodes[1:n], rng)
				}
			})
		}
	}
}

// TestPlaceAnyPartitionCount checks the first placement, one join and one
// leave for partition counts that only a ring that has split can have.
func TestPlaceAnyPartitionCount(t *testing.T) {
	rng := rand.New(rand.NewPCG(*seed, 6))
	for _, size := range [][2]int{{4, 5}, {4, 7}, {16, 24}} {
		r := mustGrown(t, size[0], size[1])
		for n := 3; n <= 9; n++ {
			t.Run(fmt.Sprintf("P=%d/N=%d", size[1], n), func(t *testing.T) {
				nodes := nodeIDs(n + 1)
				base := mustPlace(t, r, nil, nodes[:n])
				checkStep(t, r, nil, base, nodes[:n], rng)
				joined := mustPlace(t, r, base, nodes)
				checkStep(t, r, base, joined, nodes, rng)
				if n > 3 {
					left := mustPlace(t, r, base, nodes[1:n])
					checkStep(t, r, base, left, nodes[1:n], rng)
				}
			})
		}
	}
}

func mustSplit(t testing.TB, a *Assignment, parent, child PartitionID) *Assignment {
	t.Helper()
	s, err := a.WithSplit(parent, child)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// checkWithSplit fails t unless s is a with child split from parent.
func checkWithSplit(t *testing.T, a, s *Assignment, parent, child PartitionID) {
	t.Helper()
	if s.Partitions() != a.Partitions()+1 || s.Epoch() != a.Epoch()+1 || !slices.Equal(s.Nodes(), a.Nodes()) {
		t.Fatalf("WithSplit(%d, %d): %d partitions, epoch %d, nodes %v; want %d, %d, %v", parent, child,
			s.Partitions(), s.Epoch(), s.Nodes(), a.Partitions()+1, a.Epoch()+1, a.Nodes())
	}
	if s.Replicas(child) != a.Replicas(parent) || s.Primary(child) != a.Primary(parent) {
		t.Fatalf("WithSplit(%d, %d): child on %v, primary %s; want the parent's %v, %s", parent, child,
			s.Replicas(child), s.Primary(child), a.Replicas(parent), a.Primary(parent))
	}
	if !slices.Equal(s.parts[:a.Partitions()], a.parts) {
		t.Fatalf("WithSplit(%d, %d) changed an existing partition", parent, child)
	}
}

// TestWithSplit grows rings split by split, placing each split assignment
// on the grown ring, which must rebalance with the fewest moves, and on
// joins and leaves in between.
func TestWithSplit(t *testing.T) {
	rng := rand.New(rand.NewPCG(*seed, 7))
	for _, tt := range []struct{ initial, to, nodes int }{{1, 9, 3}, {4, 17, 5}, {16, 40, 7}, {64, 80, 12}} {
		t.Run(fmt.Sprintf("P=%d→%d/N=%d", tt.initial, tt.to, tt.nodes), func(t *testing.T) {
			r := mustRing(t, tt.initial)
			all := nodeIDs(tt.nodes + 1)
			nodes := all[:tt.nodes]
			a := mustPlace(t, r, nil, nodes)
			for r.Partitions() < tt.to {
				parent, child, _ := r.NextSplit()
				before := slices.Clone(a.parts)
				s := mustSplit(t, a, parent, child)
				checkWithSplit(t, a, s, parent, child)
				if !slices.Equal(a.parts, before) {
					t.Fatal("WithSplit modified its receiver")
				}
				var err error
				if r, err = r.Split(); err != nil {
					t.Fatal(err)
				}
				next := mustPlace(t, r, s, nodes)
				moves, err := Diff(s, next)
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("split %d → %d, %d on %d nodes: %d replica moves, %d primary changes",
					parent, child, r.Partitions(), len(nodes), len(moves), primaryChanges(s, next))
				checkStep(t, r, s, next, nodes, rng)
				a = next
				if r.Partitions()%4 == 0 { // a membership change between splits
					if len(nodes) == tt.nodes {
						nodes = all
					} else {
						nodes = all[1:]
					}
					prev := a
					a = mustPlace(t, r, prev, nodes)
					checkStep(t, r, prev, a, nodes, rng)
				}
			}
		})
	}
}

func TestWithSplitErrors(t *testing.T) {
	a := mustPlace(t, mustGrown(t, 4, 6), nil, nodeIDs(4))
	full := &Assignment{epoch: 1, nodes: a.nodes, parts: make([]placement, MaxPartitions)}
	for i := range full.parts {
		full.parts[i] = a.parts[0]
	}
	tests := []struct {
		name          string
		a             *Assignment
		parent, child PartitionID
		mismatch      bool
		says          string
	}{
		{"child exists", a, 1, 5, true, "child 5 of parent 1, want partition 6, the next"},
		{"child skips one", a, 2, 7, true, "child 7 of parent 2, want partition 6"},
		{"parent is child", a, 6, 6, false, "parent 6, want below child 6"},
		{"parent after child", a, 9, 6, false, "parent 9, want below child 6"},
		{"zero assignment", &Assignment{}, 0, 0, false, "parent 0, want below child 0"},
		{"at MaxPartitions", full, 0, MaxPartitions, false, "child 4096, want below 4096"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := tt.a.WithSplit(tt.parent, tt.child)
			if !errors.Is(err, ErrInvalidSplit) || errors.Is(err, ErrPartitionMismatch) != tt.mismatch || s != nil {
				t.Fatalf("WithSplit(%d, %d) = %v, %v; want ErrInvalidSplit (and ErrPartitionMismatch: %v)",
					tt.parent, tt.child, s, err, tt.mismatch)
			}
			if !strings.Contains(err.Error(), tt.says) {
				t.Fatalf("error %q does not say %q", err, tt.says)
			}
		})
	}
}

// TestPlaceScaleOut is the case: growing a cluster by one node
// moves exactly the replicas the new node must take, 3P/N of 3P.
func TestPlaceScaleOut(t *testing.T) {
	const p = 1024
	r := mustRing(t, p)
	nodes := nodeIDs(6)
	a := mustPlace(t, r, nil, nodes[:3])
	for n := 4; n <= len(nodes); n++ {
		next := mustPlace(t, r, a, nodes[:n])
		moves, err := Diff(a, next)
		if err != nil {
			t.Fatal(err)
		}
		total := ReplicationFactor * p
		want := total / n // the new node's share; every old node sheds down to it
		t.Logf("%d → %d nodes: %d of %d replicas moved (%.1f%%, 1/%d = %.1f%%), %d of %d primaries changed",
			n-1, n, len(moves), total, 100*float64(len(moves))/float64(total), n, 100/float64(n),
			primaryChanges(a, next), p)
		if len(moves) != want {
			t.Fatalf("%d → %d nodes moved %d replicas, want %d", n-1, n, len(moves), want)
		}
		for _, m := range moves {
			if m.Add != nodes[n-1] {
				t.Fatalf("move %v adds to an old node", m)
			}
		}
		if got := primaryChanges(a, next); got != p/n {
			t.Fatalf("%d → %d nodes changed %d primaries, want %d", n-1, n, got, p/n)
		}
		a = next
	}
}

// TestPlaceNodeLeaves checks that a departure moves only the departed
// node's replicas, and only its primaries change hands. In clusters this
// size nothing else is needed; in tiny ones distinctness can force more
// (see TestPlaceMatchesExhaustiveSearch, P=4 going from 5 nodes to 4).
func TestPlaceNodeLeaves(t *testing.T) {
	for _, tt := range []struct{ partitions, nodes int }{{16, 4}, {64, 7}, {256, 12}, {1024, 20}} {
		t.Run(fmt.Sprintf("P=%d/N=%d", tt.partitions, tt.nodes), func(t *testing.T) {
			r := mustRing(t, tt.partitions)
			nodes := nodeIDs(tt.nodes)
			a := mustPlace(t, r, nil, nodes)
			gone := nodes[tt.nodes/2]
			next := mustPlace(t, r, a, slices.DeleteFunc(slices.Clone(nodes), func(n NodeID) bool { return n == gone }))
			moves, err := Diff(a, next)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%d → %d nodes: %d of %d replicas moved, %d of %d primaries changed", tt.nodes, tt.nodes-1,
				len(moves), ReplicationFactor*tt.partitions, primaryChanges(a, next), tt.partitions)
			if held := len(a.PartitionsOf(gone)); len(moves) != held {
				t.Fatalf("%d moves, want the %d replicas of %s", len(moves), held, gone)
			}
			for _, m := range moves {
				if m.Remove != gone {
					t.Fatalf("move %v removes a surviving replica", m)
				}
			}
			for p := range PartitionID(tt.partitions) {
				if a.Primary(p) != gone && next.Primary(p) != a.Primary(p) {
					t.Fatalf("partition %d: primary moved from surviving %s to %s", p, a.Primary(p), next.Primary(p))
				}
			}
		})
	}
}

func TestPlaceErrors(t *testing.T) {
	r := mustRing(t, 16)
	other := mustPlace(t, mustRing(t, 8), nil, nodeIDs(3))
	tests := []struct {
		name  string
		prev  *Assignment
		nodes []NodeID
		want  error
		field string
	}{
		{"no nodes", nil, nil, ErrTooFewNodes, "0 nodes"},
		{"two nodes", nil, nodeIDs(2), ErrTooFewNodes, "at least 3"},
		{"too many", nil, nodeIDs(MaxNodes + 1), ErrTooManyNodes, "at most 256"},
		{"empty ID", nil, []NodeID{"a", "", "c"}, ErrInvalidNode, "is 0 bytes"},
		{"long ID", nil, []NodeID{"a", NodeID(strings.Repeat("x", MaxNodeIDLen+1)), "c"}, ErrInvalidNode, "is 256 bytes, want 1 to 255"},
		{"duplicate", nil, []NodeID{"a", "b", "a"}, ErrInvalidNode, `"a" listed twice`},
		{"other ring", other, nodeIDs(3), ErrPartitionMismatch, "8 partitions"},
		{"zero assignment", &Assignment{}, nodeIDs(3), ErrPartitionMismatch, "0 partitions"},
		{"split assignment", mustSplit(t, mustPlace(t, r, nil, nodeIDs(3)), 0, 16), nodeIDs(3), ErrPartitionMismatch,
			"prev places 17 partitions, ring has 16"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := r.Place(tt.prev, tt.nodes)
			if !errors.Is(err, tt.want) || a != nil {
				t.Fatalf("Place = %v, %v; want nil, %v", a, err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.field) {
				t.Fatalf("error %q does not say %q", err, tt.field)
			}
		})
	}
}

func TestPlaceDoesNotModifyNodes(t *testing.T) {
	nodes := []NodeID{"c", "a", "b"}
	mustPlace(t, mustRing(t, 4), nil, nodes)
	if !slices.Equal(nodes, []NodeID{"c", "a", "b"}) {
		t.Fatalf("Place reordered its argument: %v", nodes)
	}
}

// TestPlaceSpreadsPeers checks the rendezvous tie-break: no two nodes share
// far more partitions than average, so a failed node's partitions recover
// from many peers rather than from a fixed neighbour.
func TestPlaceSpreadsPeers(t *testing.T) {
	const p, n = 1024, 16
	a := mustPlace(t, mustRing(t, p), nil, nodeIDs(n))
	shared := make(map[[2]NodeID]int)
	for q := range PartitionID(p) {
		reps := a.Replicas(q)
		for i := range reps {
			for j := i + 1; j < len(reps); j++ {
				shared[[2]NodeID{reps[i], reps[j]}]++
			}
		}
	}
	// 3 pairs per partition over n(n-1)/2 pairs.
	mean := float64(3*p) / float64(n*(n-1)/2)
	t.Logf("node pairs share %d to %d partitions, mean %.1f",
		slices.Min(slices.Collect(maps.Values(shared))), slices.Max(slices.Collect(maps.Values(shared))), mean)
	for pair, c := range shared {
		if float64(c) > 2*mean || float64(c) < mean/2 {
			t.Errorf("nodes %v share %d partitions, mean %.1f", pair, c, mean)
		}
	}
	if len(shared) != n*(n-1)/2 {
		t.Errorf("%d of %d node pairs share a partition", len(shared), n*(n-1)/2)
	}
}

func TestDiff(t *testing.T) {
	mk := func(epoch uint64, parts ...placement) *Assignment {
		return &Assignment{epoch: epoch, nodes: nodeIDs(5), parts: parts}
	}
	pl := func(primary NodeID, reps ...NodeID) placement {
		return placement{replicas: [ReplicationFactor]NodeID(reps), primary: primary}
	}
	from := mk(1, pl("node-00", "node-00", "node-01", "node-02"), pl("node-01", "node-01", "node-02", "node-03"))
	tests := []struct {
		name string
		to   *Assignment
		want []Move
	}{
		{"same", from, nil},
		{"primary only", mk(2, pl("node-01", "node-00", "node-01", "node-02"), from.parts[1]), nil},
		{"one move", mk(2, pl("node-00", "node-00", "node-01", "node-04"), from.parts[1]),
			[]Move{{0, "node-04", "node-02"}}},
		{"two partitions, two moves", mk(2, pl("node-00", "node-00", "node-03", "node-04"), pl("node-01", "node-00", "node-01", "node-02")),
			[]Move{{0, "node-03", "node-01"}, {0, "node-04", "node-02"}, {1, "node-00", "node-03"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Diff(from, tt.to)
			if err != nil || !slices.Equal(got, tt.want) {
				t.Fatalf("Diff = %v, %v; want %v", got, err, tt.want)
			}
		})
	}
	if _, err := Diff(from, mk(2, from.parts[0])); !errors.Is(err, ErrPartitionMismatch) {
		t.Fatalf("Diff across partition counts: %v, want ErrPartitionMismatch", err)
	}
}

// TestImprovableFindsWaste checks the optimality oracle itself: a balanced
// assignment with needless moves or primary changes must be caught.
func TestImprovableFindsWaste(t *testing.T) {
	prev := mustPlace(t, mustRing(t, 16), nil, nodeIDs(5))
	if improvable(replicaExchange(prev, prev)) || improvable(primaryExchange(prev, prev)) {
		t.Fatal("an unchanged assignment is reported improvable")
	}
	// Find partitions p, q and nodes x, y with x a replica of p only, y of q
	// only: trading them keeps every count and costs two moves for nothing.
	// Likewise trading the primaries of two partitions that share both.
	var swapped, reprimaried *Assignment
	for p := range prev.parts {
		for q := range prev.parts {
			rp, rq := prev.parts[p].replicas[:], prev.parts[q].replicas[:]
			for _, x := range rp {
				for _, y := range rq {
					if swapped == nil && !slices.Contains(rq, x) && !slices.Contains(rp, y) {
						swapped = withParts(prev, func(parts []placement) {
							replace(&parts[p], x, y)
							replace(&parts[q], y, x)
						})
					}
				}
			}
			x, y := prev.parts[p].primary, prev.parts[q].primary
			if reprimaried == nil && x != y && slices.Contains(rp, y) && slices.Contains(rq, x) {
				reprimaried = withParts(prev, func(parts []placement) {
					parts[p].primary, parts[q].primary = y, x
				})
			}
		}
	}
	if swapped == nil || reprimaried == nil {
		t.Fatal("test assignment has no tradeable pair")
	}
	if !improvable(replicaExchange(prev, swapped)) {
		t.Error("two needless replica moves not found")
	}
	if !improvable(primaryExchange(prev, reprimaried)) {
		t.Error("two needless primary changes not found")
	}
}

func withParts(a *Assignment, edit func([]placement)) *Assignment {
	parts := slices.Clone(a.parts)
	edit(parts)
	return &Assignment{epoch: a.epoch + 1, nodes: a.nodes, parts: parts}
}

func replace(pl *placement, from, to NodeID) {
	i := slices.Index(pl.replicas[:], from)
	pl.replicas[i] = to
	if pl.primary == from {
		pl.primary = to
	}
	slices.Sort(pl.replicas[:])
}

// cheapestBalanced returns, by exhaustive search, the least total cost of
// choosing one option (a node bitmask) per unit so that every node's load
// lies in [lo, hi].
func cheapestBalanced(options [][]uint32, cost func(unit int, option uint32) int, nodes, lo, hi int) int {
	load := make([]int, nodes)
	best := -1
	var walk func(unit, spent int)
	walk = func(unit, spent int) {
		if best >= 0 && spent >= best {
			return
		}
		if unit == len(options) {
			if slices.Min(load) >= lo {
				best = spent
			}
			return
		}
		for _, o := range options[unit] {
			fits := true
			for n := range nodes {
				if o&(1<<n) != 0 {
					load[n]++
					fits = fits && load[n] <= hi
				}
			}
			if fits {
				walk(unit+1, spent+cost(unit, o))
			}
			for n := range nodes {
				if o&(1<<n) != 0 {
					load[n]--
				}
			}
		}
	}
	walk(0, 0)
	return best
}

func mask(nodes []NodeID, of []NodeID) uint32 {
	var m uint32
	for i, n := range nodes {
		if slices.Contains(of, n) {
			m |= 1 << i
		}
	}
	return m
}

// TestPlaceMatchesExhaustiveSearch compares Place with every balanced
// assignment of small clusters. It includes cases where distinctness makes
// the naive bound (each survivor keeps up to its new share) unreachable,
// e.g. P=4 going from 5 nodes to 4.
func TestPlaceMatchesExhaustiveSearch(t *testing.T) {
	tests := []struct{ partitions, from, to, drop int }{
		{1, 3, 4, 0}, {2, 3, 4, 0}, {2, 4, 3, 1}, {4, 3, 4, 0}, {4, 4, 5, 0}, {4, 5, 4, 1},
		{4, 5, 6, 0}, {4, 6, 5, 1}, {4, 5, 5, 1}, {4, 4, 4, 1}, {8, 3, 4, 0}, {8, 4, 3, 1}, {8, 4, 4, 1},
		{3, 3, 4, 0}, {3, 4, 3, 1}, {5, 4, 5, 0}, {5, 5, 4, 1}, {6, 4, 5, 0}, {7, 4, 3, 1},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("P=%d/%d→%d/drop=%d", tt.partitions, tt.from, tt.to, tt.drop), func(t *testing.T) {
			r := mustGrown(t, 1, tt.partitions)
			all := nodeIDs(tt.from + tt.to)
			prev := mustPlace(t, r, nil, all[:tt.from])
			nodes := all[tt.drop : tt.drop+tt.to]
			next := mustPlace(t, r, prev, nodes)

			var triples []uint32
			for m := uint32(0); m < 1<<len(nodes); m++ {
				if bits.OnesCount32(m) == ReplicationFactor {
					triples = append(triples, m)
				}
			}
			options := make([][]uint32, tt.partitions)
			for p := range options {
				options[p] = triples
			}
			total := ReplicationFactor * tt.partitions
			best := cheapestBalanced(options, func(p int, o uint32) int {
				return bits.OnesCount32(o &^ mask(nodes, prev.parts[p].replicas[:]))
			}, len(nodes), total/len(nodes), (total+len(nodes)-1)/len(nodes))
			moves, err := Diff(prev, next)
			if err != nil {
				t.Fatal(err)
			}
			if len(moves) != best {
				t.Fatalf("Place moved %d replicas, exhaustive minimum is %d", len(moves), best)
			}

			for p := range options {
				options[p] = nil
				for _, n := range next.parts[p].replicas {
					options[p] = append(options[p], mask(nodes, []NodeID{n}))
				}
			}
			best = cheapestBalanced(options, func(p int, o uint32) int {
				if o == mask(nodes, []NodeID{prev.parts[p].primary}) {
					return 0
				}
				return 1
			}, len(nodes), tt.partitions/len(nodes), (tt.partitions+len(nodes)-1)/len(nodes))
			if got := primaryChanges(prev, next); got != best {
				t.Fatalf("Place changed %d primaries, exhaustive minimum is %d", got, best)
			}
		})
	}
}

func BenchmarkPlace(b *testing.B) {
	const p, n = 1024, 20
	r := mustRing(b, p)
	nodes := nodeIDs(n + 1)
	base := mustPlace(b, r, nil, nodes[:n])
	for _, bc := range []struct {
		name  string
		prev  *Assignment
		nodes []NodeID
	}{
		{"initial", nil, nodes[:n]},
		{"join", base, nodes},
		{"leave", base, nodes[1:n]},
	} {
		b.Run(fmt.Sprintf("P=%d/N=%d/%s", p, n, bc.name), func(b *testing.B) {
			for b.Loop() {
				if _, err := r.Place(bc.prev, bc.nodes); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
