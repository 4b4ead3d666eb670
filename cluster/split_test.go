package cluster

import (
	"errors"
	"slices"
	"testing"

	"github.com/ringkv/ringkv/ring"
)

func servers(ids ...ring.NodeID) []Server {
	var out []Server
	for _, id := range ids {
		out = append(out, Server{ID: string(id), Voter: true})
	}
	return out
}

func TestSplitCommands(t *testing.T) {
	base, _ := newState(t, "n1", "n2", "n3", "n4")
	if _, ok := base.WantsSplit(0); ok {
		t.Fatal("a cluster without a split target wants a split")
	}
	targeted := mustApply(t, base, Command{Op: OpSplitTarget, Count: 10})
	begun := mustApply(t, targeted, Command{Op: OpBeginSplit, Partition: 0})
	reps := base.Placement().Replicas(0)
	child := servers(reps[:]...)
	for _, tc := range []struct {
		name    string
		from    *State
		cmd     Command
		refused bool
		same    bool
	}{
		{"target below the count", base, Command{Op: OpSplitTarget, Count: 7}, true, true},
		{"target above the maximum", base, Command{Op: OpSplitTarget, Count: ring.MaxPartitions + 1}, true, true},
		{"target", base, Command{Op: OpSplitTarget, Count: 10}, false, false},
		{"target again", targeted, Command{Op: OpSplitTarget, Count: 10}, false, true},
		{"begin out of order", targeted, Command{Op: OpBeginSplit, Partition: 1}, true, true},
		{"begin", targeted, Command{Op: OpBeginSplit, Partition: 0}, false, false},
		{"begin again", begun, Command{Op: OpBeginSplit, Partition: 0}, false, true},
		{"end without begin", targeted, Command{Op: OpEndSplit, Partition: 0, Config: child}, true, true},
		{"end of another partition", begun, Command{Op: OpEndSplit, Partition: 1, Config: child}, true, true},
		{"end with two servers", begun, Command{Op: OpEndSplit, Partition: 0, Config: child[:2]}, true, true},
		{"end", begun, Command{Op: OpEndSplit, Partition: 0, Config: child}, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.from.Apply(tc.cmd)
			if refused := errors.Is(err, ErrRefused); refused != tc.refused {
				t.Fatalf("Apply: %v, refused = %v, want %v", err, refused, tc.refused)
			}
			if same := got == tc.from; same != tc.same {
				t.Fatalf("state unchanged = %v, want %v", same, tc.same)
			}
		})
	}
	if p, ok := targeted.WantsSplit(0); !ok || p != 0 {
		t.Fatalf("WantsSplit = %d, %v; want partition 0", p, ok)
	}
	if _, ok := begun.WantsSplit(0); ok {
		t.Fatal("a split is wanted while one is under way")
	}

	ended := mustApply(t, begun, Command{Op: OpEndSplit, Partition: 0, Config: child})
	if ended.Partitions != 9 || ended.InitialPartitions != 8 || ended.Splitting != nil || !ended.Unbalanced {
		t.Fatalf("after the split: %d partitions (initial %d), splitting %v, unbalanced %v",
			ended.Partitions, ended.InitialPartitions, ended.Splitting, ended.Unbalanced)
	}
	if got := ended.Placement().Replicas(8); got != base.Placement().Replicas(0) || !slices.Equal(ended.Config[8], child) {
		t.Fatalf("the child is placed on %v, recorded %v; want its parent's %v", got, ended.Config[8], base.Placement().Replicas(0))
	}
	r, err := ended.Ring()
	if err != nil || r.Partitions() != 9 || r.Initial() != 8 {
		t.Fatalf("Ring() = %v, %v", r, err)
	}
	if p, ok := ended.WantsSplit(0); !ok || p != 1 {
		t.Fatalf("the next split: %d, %v; want partition 1", p, ok)
	}
	// The child sits on its parent's nodes until a placement spreads it.
	next, err := ended.Plan(r, t0, 0)
	if err != nil || next == nil || next.Partitions() != 9 {
		t.Fatalf("Plan after a split = %v, %v; want a placement of 9 partitions", next, err)
	}
	enc, err := next.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	placed := mustApply(t, ended, Command{Op: OpSetTarget, Target: enc})
	if placed.Unbalanced {
		t.Fatal("a new target leaves the state unbalanced")
	}
	if next, _ := placed.Plan(r, t0, 0); next != nil {
		t.Fatal("Plan re-places a balanced cluster")
	}
	// The split survives the state's encoding.
	data, err := begun.Encode()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Decode(data)
	if err != nil || back.Splitting == nil || *back.Splitting != *begun.Splitting || back.SplitTarget != 10 || back.InitialPartitions != 8 {
		t.Fatalf("Decode(Encode()) = %+v, %v", back, err)
	}
}

// A partition moving a replica does not begin a split.
func TestSplitWaitsForAMove(t *testing.T) {
	base, _ := newState(t, "n1", "n2", "n3", "n4")
	reps := base.Placement().Replicas(0)
	var spare ring.NodeID
	for _, n := range []ring.NodeID{"n1", "n2", "n3", "n4"} {
		if !slices.Contains(reps[:], n) {
			spare = n
		}
	}
	moving := mustApply(t, base,
		Command{Op: OpSplitTarget, Count: 9},
		Command{Op: OpSetConfig, Partition: 0, Config: append(servers(reps[:]...), Server{ID: string(spare)})})
	if !moving.Moving(0) {
		t.Fatal("a recorded non-voter does not make the partition moving")
	}
	if _, err := moving.Apply(Command{Op: OpBeginSplit, Partition: 0}); !errors.Is(err, ErrRefused) {
		t.Fatalf("a split of a moving partition: %v, want refused", err)
	}
}

func TestFittedPartitions(t *testing.T) {
	for _, tc := range []struct{ nodes, perNode, want int }{
		{3, 0, 0}, {0, 4, 0}, {3, 1, 4}, {3, 2, 8}, {4, 2, 8}, {5, 2, 16}, {9, 2, 32}, {9, 4, 64},
		{1000, 8, ring.MaxPartitions},
	} {
		if got := FittedPartitions(tc.nodes, tc.perNode); got != tc.want {
			t.Errorf("FittedPartitions(%d, %d) = %d, want %d", tc.nodes, tc.perNode, got, tc.want)
		}
	}
	base, _ := newState(t, "n1", "n2", "n3", "n4")
	if p, ok := base.WantsSplit(FittedPartitions(base.Placeable(), 4)); !ok || p != 0 {
		t.Fatalf("4 nodes at 4 per node, 8 partitions: WantsSplit = %d, %v; want partition 0", p, ok)
	}
	if _, ok := base.WantsSplit(8); ok {
		t.Fatal("a split wanted at the count the floor asks for")
	}
}
