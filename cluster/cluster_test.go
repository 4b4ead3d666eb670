package cluster

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/ringkv/ringkv/ring"
)

var t0 = time.Unix(1_700_000_000, 0)

func newState(t *testing.T, ids ...string) (*State, *ring.Ring) {
	t.Helper()
	r, err := ring.New(8)
	if err != nil {
		t.Fatal(err)
	}
	var nodes []ring.NodeID
	var members []Member
	for _, id := range ids {
		nodes = append(nodes, ring.NodeID(id))
		members = append(members, Member{ID: id, Addr: id + ":1"})
	}
	asg, err := r.Place(nil, nodes)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New("c1", members, asg, t0)
	if err != nil {
		t.Fatal(err)
	}
	return s, r
}

func mustApply(t *testing.T, s *State, cmds ...Command) *State {
	t.Helper()
	for _, c := range cmds {
		var err error
		if s, err = s.Apply(c); err != nil {
			t.Fatalf("%+v: %v", c, err)
		}
	}
	return s
}

func TestApply(t *testing.T) {
	base, _ := newState(t, "n1", "n2", "n3", "n4")
	leaving := mustApply(t, base, Command{Op: OpSetState, ID: "n4", State: Leaving})
	for _, tc := range []struct {
		name    string
		from    *State
		cmd     Command
		refused bool
		same    bool // nothing changes, epoch included
	}{
		{"join", base, Command{Op: OpJoin, ID: "n5", Addr: "n5:1"}, false, false},
		{"join again", base, Command{Op: OpJoin, ID: "n4", Addr: "n4:1"}, false, true},
		{"join with another address", base, Command{Op: OpJoin, ID: "n4", Addr: "x:1"}, true, true},
		{"join on a taken address", base, Command{Op: OpJoin, ID: "n9", Addr: "n4:1"}, true, true},
		{"join without address", base, Command{Op: OpJoin, ID: "n9"}, true, true},
		{"suspect", base, Command{Op: OpSetState, ID: "n2", State: Suspect}, false, false},
		{"same state", base, Command{Op: OpSetState, ID: "n2", State: Up}, false, true},
		{"unknown member", base, Command{Op: OpSetState, ID: "zz", State: Up}, true, true},
		{"unknown state", base, Command{Op: OpSetState, ID: "n2", State: "weird"}, true, true},
		{"leave", base, Command{Op: OpSetState, ID: "n1", State: Leaving}, false, false},
		{"leave below three", leaving, Command{Op: OpSetState, ID: "n1", State: Leaving}, true, true},
		{"health does not undo leave", leaving, Command{Op: OpSetState, ID: "n4", State: Up}, false, true},
		{"remove a holder", leaving, Command{Op: OpRemove, ID: "n4"}, true, true},
		{"remove an up node", base, Command{Op: OpRemove, ID: "n1"}, true, true},
		{"config out of range", base, Command{Op: OpSetConfig, Partition: 8}, true, true},
		{"bad target", base, Command{Op: OpSetTarget, Target: []byte("junk")}, true, true},
		{"unknown op", base, Command{Op: "frob"}, true, true},
		{"init again", base, Command{Op: OpInit, Init: base}, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			next, err := tc.from.Apply(tc.cmd)
			if got := errors.Is(err, ErrRefused); got != tc.refused {
				t.Fatalf("err = %v, want refused %v", err, tc.refused)
			}
			if (next == tc.from) != tc.same {
				t.Fatalf("changed = %v, want %v", next != tc.from, !tc.same)
			}
			if !tc.same && next.Epoch != tc.from.Epoch+1 {
				t.Fatalf("epoch %d -> %d, want +1", tc.from.Epoch, next.Epoch)
			}
		})
	}
}

func TestRemovedNodeCannotRejoin(t *testing.T) {
	s, r := newState(t, "n1", "n2", "n3", "n4")
	s = mustApply(t, s, Command{Op: OpSetState, ID: "n4", State: Leaving})
	next, err := s.Plan(r, t0, time.Minute)
	if err != nil || next == nil {
		t.Fatalf("Plan = %v, %v; want a placement without n4", next, err)
	}
	enc, _ := next.MarshalBinary()
	s = mustApply(t, s, Command{Op: OpSetTarget, Target: enc})
	for p := range ring.PartitionID(s.Partitions) {
		var cfg []Server
		for _, id := range next.Replicas(p) {
			cfg = append(cfg, Server{ID: string(id), Voter: true})
		}
		s = mustApply(t, s, Command{Op: OpSetConfig, Partition: uint32(p), Config: cfg})
	}
	s = mustApply(t, s, Command{Op: OpRemove, ID: "n4"})
	if s.Member("n4") != nil || !s.IsRemoved("n4") {
		t.Fatalf("n4 member=%v removed=%v", s.Member("n4"), s.IsRemoved("n4"))
	}
	if _, err := s.Apply(Command{Op: OpJoin, ID: "n4", Addr: "n4:1"}); !errors.Is(err, ErrRefused) {
		t.Fatalf("rejoin of a removed id: %v, want refused", err)
	}
}

func TestEncodeRoundTrip(t *testing.T) {
	s, _ := newState(t, "n1", "n2", "n3")
	data, err := s.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	if got.Epoch != s.Epoch || !got.Placement().Equal(s.Placement()) || len(got.Members) != 3 {
		t.Fatalf("round trip: %+v", got)
	}
	for i := range data {
		bad := append([]byte(nil), data...)
		bad[i] ^= 0x01
		if _, err := Decode(bad); err == nil {
			t.Fatalf("flipping a bit of byte %d went undetected", i)
		}
	}
}

func TestHealth(t *testing.T) {
	to, err := Timeouts{}.WithDefaults()
	if err != nil {
		t.Fatal(err)
	}
	up := Member{ID: "a", State: Up, Since: t0.UnixNano()}
	for _, tc := range []struct {
		name     string
		m        Member
		lastSeen time.Time
		now      time.Time
		want     NodeState
	}{
		{"fresh", up, t0, t0.Add(time.Second), Up},
		{"silent", up, t0, t0.Add(6 * time.Second), Suspect},
		{"dead", up, t0, t0.Add(31 * time.Second), Down},
		{"never heard, measured from since", up, time.Time{}, t0.Add(31 * time.Second), Down},
		{"joining, not heard", Member{State: Joining}, time.Time{}, t0.Add(time.Hour), Joining},
		{"joining, heard", Member{State: Joining}, t0, t0, Up},
		{"leaving stays leaving", Member{State: Leaving}, time.Time{}, t0.Add(time.Hour), Leaving},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Health(tc.m, tc.lastSeen, tc.now, to); got != tc.want {
				t.Fatalf("Health = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestPlan(t *testing.T) {
	s, r := newState(t, "n1", "n2", "n3")
	if next, err := s.Plan(r, t0, time.Minute); next != nil || err != nil {
		t.Fatalf("stable cluster planned %v, %v", next, err)
	}
	joined := mustApply(t, s, Command{Op: OpJoin, ID: "n4", Addr: "n4:1"})
	if next, _ := joined.Plan(r, t0, time.Minute); next != nil {
		t.Fatal("a joining node that was never heard from got replicas")
	}
	up := mustApply(t, joined, Command{Op: OpSetState, ID: "n4", State: Up})
	next, err := up.Plan(r, t0, time.Minute)
	if err != nil || next == nil || len(next.PartitionsOf("n4")) == 0 {
		t.Fatalf("Plan after n4 is up = %v, %v; want replicas on n4", next, err)
	}
	down := mustApply(t, up, Command{Op: OpSetState, ID: "n2", State: Down, At: t0.UnixNano()})
	if next, _ := down.Plan(r, t0.Add(time.Second), time.Minute); next == nil || len(next.PartitionsOf("n2")) == 0 {
		t.Fatal("a node down for less than replace-after lost its replicas")
	}
	next, _ = down.Plan(r, t0.Add(2*time.Minute), time.Minute)
	if next == nil || len(next.PartitionsOf("n2")) != 0 {
		t.Fatal("a node down past replace-after kept its replicas")
	}
	three := mustApply(t, s, Command{Op: OpSetState, ID: "n2", State: Down, At: t0.UnixNano()})
	if next, _ := three.Plan(r, t0.Add(time.Hour), time.Minute); next != nil {
		t.Fatal("with no spare node, a down node's replicas were moved to fewer than three nodes")
	}
}

func TestNextStep(t *testing.T) {
	v := func(id string) Server { return Server{ID: id, Voter: true} }
	l := func(id string) Server { return Server{ID: id} }
	target := [3]ring.NodeID{"a", "b", "d"}
	for _, tc := range []struct {
		name   string
		config []Server
		leader string
		want   Step
	}{
		{"done", []Server{v("a"), v("b"), v("d")}, "a", Step{}},
		{"add the new replica", []Server{v("a"), v("b"), v("c")}, "a", Step{StepAddLearner, "d"}},
		{"promote it", []Server{v("a"), v("b"), v("c"), l("d")}, "a", Step{StepPromote, "d"}},
		{"then remove the old one", []Server{v("a"), v("b"), v("c"), v("d")}, "a", Step{StepRemove, "c"}},
		{"transfer first if it leads", []Server{v("a"), v("b"), v("c"), v("d")}, "c", Step{StepTransfer, "a"}},
		{"drop a stray learner", []Server{v("a"), v("b"), v("d"), l("x")}, "a", Step{StepRemove, "x"}},
		{"never remove down to two", []Server{v("a"), v("b"), v("c")}, "c", Step{StepAddLearner, "d"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := NextStep(tc.config, target, tc.leader); got != tc.want {
				t.Fatalf("NextStep = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestMovesKeepThreeVoters walks every partition of a scale-out and a
// scale-in through NextStep and checks that no step leaves fewer than three
// voters, and that each walk ends on the target.
func TestMovesKeepThreeVoters(t *testing.T) {
	s, r := newState(t, "n1", "n2", "n3")
	five, _ := r.Place(s.Placement(), []ring.NodeID{"n1", "n2", "n3", "n4", "n5"})
	back, _ := r.Place(five, []ring.NodeID{"n2", "n4", "n5"})
	for _, pair := range [][2]*ring.Assignment{{s.Placement(), five}, {five, back}} {
		for p := range ring.PartitionID(8) {
			var cfg []Server
			for _, id := range pair[0].Replicas(p) {
				cfg = append(cfg, Server{ID: string(id), Voter: true})
			}
			leader := string(pair[0].Primary(p))
			for steps := 0; ; steps++ {
				if steps > 20 {
					t.Fatalf("partition %d: no convergence: %v", p, cfg)
				}
				st := NextStep(cfg, pair[1].Replicas(p), leader)
				switch st.Kind {
				case StepNone:
				case StepAddLearner:
					cfg = append(cfg, Server{ID: st.ID})
				case StepPromote:
					for i := range cfg {
						if cfg[i].ID == st.ID {
							cfg[i].Voter = true
						}
					}
				case StepRemove:
					var kept []Server
					for _, sv := range cfg {
						if sv.ID != st.ID {
							kept = append(kept, sv)
						}
					}
					cfg = kept
				case StepTransfer:
					leader = st.ID
				}
				voters := 0
				for _, sv := range cfg {
					if sv.Voter {
						voters++
					}
				}
				if voters < 3 {
					t.Fatalf("partition %d: %d voters after %+v", p, voters, st)
				}
				if st.Kind == StepNone {
					break
				}
			}
		}
	}
}

func TestMoving(t *testing.T) {
	s, _ := newState(t, "n1", "n2", "n3", "n4")
	target := s.Placement().Replicas(0)
	var out ring.NodeID // a member outside partition 0's target
	for _, id := range []ring.NodeID{"n1", "n2", "n3", "n4"} {
		if !slices.Contains(target[:], id) {
			out = id
		}
	}
	v := func(id ring.NodeID) Server { return Server{ID: string(id), Voter: true} }
	l := func(id ring.NodeID) Server { return Server{ID: string(id)} }
	for _, tc := range []struct {
		name   string
		config []Server
		want   bool
	}{
		{"settled", []Server{v(target[0]), v(target[1]), v(target[2])}, false},
		{"settled, other order", []Server{v(target[2]), v(target[0]), v(target[1])}, false},
		{"learner catching up", []Server{v(target[0]), v(target[1]), v(out), l(target[2])}, true},
		{"four voters before a removal", []Server{v(target[0]), v(target[1]), v(target[2]), v(out)}, true},
		{"target not reached", []Server{v(target[0]), v(target[1]), v(out)}, true},
		{"learner on the target only", []Server{v(target[0]), v(target[1]), l(target[2])}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			next := mustApply(t, s, Command{Op: OpSetConfig, Partition: 0, Config: tc.config})
			if got := next.Moving(0); got != tc.want {
				t.Fatalf("Moving with config %v, target %v = %v, want %v", tc.config, target, got, tc.want)
			}
		})
	}
}
