package cluster

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/ringkv/ringkv/raftgroup"
	"github.com/ringkv/ringkv/ring"
)

// Timeouts drive failure detection and replacement.
type Timeouts struct {
	// SuspectAfter: a member silent this long is suspect (default 5s).
	SuspectAfter time.Duration
	// DeadAfter: a member silent this long is down and dropped from routing
	// (default 30s).
	DeadAfter time.Duration
	// ReplaceAfter: the replicas of a member down this long are re-created
	// on other nodes, if enough remain (default 10m).
	ReplaceAfter time.Duration
}

// Defaults of Timeouts.
const (
	DefaultSuspectAfter = 5 * time.Second
	DefaultDeadAfter    = 30 * time.Second
	DefaultReplaceAfter = 10 * time.Minute
)

// WithDefaults fills zero fields and checks that 0 < SuspectAfter <=
// DeadAfter <= ReplaceAfter.
func (t Timeouts) WithDefaults() (Timeouts, error) {
	t.SuspectAfter = cmp.Or(t.SuspectAfter, DefaultSuspectAfter)
	t.DeadAfter = cmp.Or(t.DeadAfter, DefaultDeadAfter)
	t.ReplaceAfter = cmp.Or(t.ReplaceAfter, DefaultReplaceAfter)
	if t.SuspectAfter < 0 || t.DeadAfter < t.SuspectAfter || t.ReplaceAfter < t.DeadAfter {
		return t, fmt.Errorf("%w: Timeouts: want 0 < SuspectAfter (%v) <= DeadAfter (%v) <= ReplaceAfter (%v)",
			raftgroup.ErrInvalid, t.SuspectAfter, t.DeadAfter, t.ReplaceAfter)
	}
	return t, nil
}

// Health is the state member m should be in, last heard from at lastSeen
// (zero: not heard from since it joined).
func Health(m Member, lastSeen, now time.Time, t Timeouts) NodeState {
	switch {
	case m.State == Leaving:
		return Leaving
	case lastSeen.IsZero():
		if m.State == Joining {
			return Joining
		}
		lastSeen = time.Unix(0, m.Since)
	}
	switch silent := now.Sub(lastSeen); {
	case silent >= t.DeadAfter:
		return Down
	case silent >= t.SuspectAfter:
		return Suspect
	}
	return Up
}

// placeable reports whether m may hold replicas at now: up or suspect, or
// down for less than replaceAfter.
func placeable(m Member, now time.Time, replaceAfter time.Duration) bool {
	switch m.State {
	case Up, Suspect:
		return true
	case Down:
		return now.Sub(time.Unix(0, m.Since)) < replaceAfter
	}
	return false
}

// Plan returns the placement the cluster should move to, or nil if the
// target stands: its nodes are exactly the placeable members and no split
// left a child on its parent's nodes (Unbalanced), or too few
// members are placeable to hold three replicas of every partition (the
// cluster then keeps what it has rather than lose a replica).
func (s *State) Plan(r *ring.Ring, now time.Time, replaceAfter time.Duration) (*ring.Assignment, error) {
	var nodes []ring.NodeID
	for _, m := range s.Members {
		if placeable(m, now, replaceAfter) {
			nodes = append(nodes, ring.NodeID(m.ID))
		}
	}
	if len(nodes) < MinMembers || (slices.Equal(nodes, s.target.Nodes()) && !s.Unbalanced) {
		return nil, nil
	}
	return r.Place(s.target, nodes)
}

// StepKind is one Raft configuration change of a replica move.
type StepKind int

const (
	StepNone       StepKind = iota
	StepAddLearner          // add ID as a non-voter, to catch up
	StepPromote             // make the caught-up non-voter ID a voter
	StepRemove              // remove ID from the group
	StepTransfer            // hand leadership to ID, so the leader can be removed
)

// Step is the next change NextStep chose.
type Step struct {
	Kind StepKind
	ID   string
}

// NextStep chooses the next configuration change that takes a partition
// from config towards target, given its current leader. One replica moves
// at a time: a new replica joins as a non-voter and is promoted (the caller
// promotes only once it has caught up), and only then is a replica outside
// the target removed, so a partition never has fewer than three voters that
// are up to date (the group has four voters between promotion and removal).
func NextStep(config []Server, target [ring.ReplicationFactor]ring.NodeID, leader string) Step {
	inTarget := func(id string) bool { return slices.Contains(target[:], ring.NodeID(id)) }
	voters := 0
	for _, sv := range config {
		if sv.Voter {
			voters++
		}
	}
	for _, sv := range config {
		if !sv.Voter && inTarget(sv.ID) {
			return Step{StepPromote, sv.ID}
		}
	}
	for _, sv := range config {
		if !sv.Voter && !inTarget(sv.ID) {
			return Step{StepRemove, sv.ID}
		}
	}
	if voters > ring.ReplicationFactor {
		for _, sv := range config {
			if !inTarget(sv.ID) {
				if sv.ID != leader {
					return Step{StepRemove, sv.ID}
				}
				for _, t := range target {
					if slices.Contains(config, Server{ID: string(t), Voter: true}) {
						return Step{StepTransfer, string(t)}
					}
				}
			}
		}
	}
	for _, t := range target {
		if !slices.ContainsFunc(config, func(sv Server) bool { return sv.ID == string(t) }) {
			return Step{StepAddLearner, string(t)}
		}
	}
	return Step{}
}
