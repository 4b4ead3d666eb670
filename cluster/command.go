package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/ringkv/ringkv/ring"
)

// Op names a change of the metadata.
type Op string

const (
	OpInit      Op = "init"       // Init: create the cluster (first command of the log)
	OpJoin      Op = "join"       // ID, Addr: add a member, Joining
	OpSetState  Op = "set_state"  // ID, State: record a member's health or a Leave
	OpSetTarget Op = "set_target" // Target: a new placement
	OpSetConfig Op = "set_config" // Partition, Config: record a Raft configuration
	OpRemove    Op = "remove"     // ID: forget a member that holds nothing
	// Splits, one partition at a time (split.go).
	OpSplitTarget Op = "split_target" // Count: the partition count to split towards
	OpBeginSplit  Op = "begin_split"  // Partition: the next split's parent, about to split
	OpEndSplit    Op = "end_split"    // Partition, Config: the parent split, and the child's configuration
)

// Command is one entry of the metadata log.
type Command struct {
	Op        Op        `json:"op"`
	Init      *State    `json:"init,omitempty"`
	ID        string    `json:"id,omitempty"`
	Addr      string    `json:"addr,omitempty"`
	State     NodeState `json:"state,omitempty"`
	Target    []byte    `json:"target,omitempty"`
	Partition uint32    `json:"partition,omitempty"`
	Config    []Server  `json:"config,omitempty"`
	Count     int       `json:"count,omitempty"`
	// At is the proposer's clock, unix nanoseconds: the time of a state
	// change, carried in the command so that Apply is deterministic.
	At int64 `json:"at,omitempty"`
}

// ErrRefused reports a command that is not valid in the current state; the
// error names the reason. Nothing changes.
var ErrRefused = errors.New("refused")

func refuse(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrRefused}, args...)...)
}

// MinMembers is the fewest members that can hold every partition's three
// replicas on distinct nodes.
const MinMembers = ring.ReplicationFactor

// Apply returns the State after cmd, or s itself if cmd changes nothing.
// s is nil before OpInit. An error leaves s as it was.
func (s *State) Apply(cmd Command) (*State, error) {
	if cmd.Op == OpInit {
		switch {
		case cmd.Init == nil:
			return s, refuse("init without a state")
		case s == nil:
			init := cmd.Init.clone()
			return init, init.index()
		case s.ClusterID == cmd.Init.ClusterID:
			return s, nil
		}
		return s, refuse("cluster %s is already initialized; init for %s", s.ClusterID, cmd.Init.ClusterID)
	}
	if s == nil {
		return s, ErrNotInitialized
	}
	next := s.clone()
	changed, err := next.apply(cmd)
	if err != nil || !changed {
		return s, err
	}
	next.Epoch++
	return next, next.index()
}

func (s *State) apply(cmd Command) (changed bool, err error) {
	switch cmd.Op {
	case OpJoin:
		if cmd.ID == "" || cmd.Addr == "" {
			return false, refuse("join needs a node id and an address")
		}
		if s.IsRemoved(cmd.ID) {
			return false, refuse("node %s was removed from cluster %s; a removed id cannot join again: start the node with a new --id and an empty --data-dir", cmd.ID, s.ClusterID)
		}
		if m := s.Member(cmd.ID); m != nil {
			if m.Addr != cmd.Addr {
				return false, refuse("node %s is already a member at %s, not %s", cmd.ID, m.Addr, cmd.Addr)
			}
			return false, nil
		}
		for _, m := range s.Members {
			if m.Addr == cmd.Addr {
				return false, refuse("address %s already belongs to member %s", cmd.Addr, m.ID)
			}
		}
		s.Members = append(s.Members, Member{ID: cmd.ID, Addr: cmd.Addr, State: Joining, Since: cmd.At})
		slices.SortFunc(s.Members, func(a, b Member) int { return cmpString(a.ID, b.ID) })
		return true, nil
	case OpSetState:
		m := s.Member(cmd.ID)
		if m == nil {
			return false, refuse("node %s is not a member of cluster %s", cmd.ID, s.ClusterID)
		}
		if m.State == cmd.State {
			return false, nil
		}
		switch cmd.State {
		case Up, Suspect, Down:
			if m.State == Leaving {
				return false, nil // a decommission is not undone by health
			}
		case Leaving:
			if n := s.staying() - 1; n < MinMembers {
				return false, refuse("node %s cannot leave: %d nodes would remain, and every partition needs %d replicas on distinct nodes", cmd.ID, n, MinMembers)
			}
		default:
			return false, refuse("unknown node state %q", cmd.State)
		}
		m.State, m.Since = cmd.State, cmd.At
		return true, nil
	case OpSetTarget:
		t := new(ring.Assignment)
		if err := t.UnmarshalBinary(cmd.Target); err != nil {
			return false, refuse("target placement: %v", err)
		}
		if t.Partitions() != s.Partitions {
			return false, refuse("target places %d partitions, the cluster has %d", t.Partitions(), s.Partitions)
		}
		for _, id := range t.Nodes() {
			if m := s.Member(string(id)); m == nil || m.State == Leaving {
				return false, refuse("target places replicas on %s, which is not a staying member", id)
			}
		}
		if t.Equal(s.target) {
			// A split's child may already sit where the placement wants it.
			changed := s.Unbalanced
			s.Unbalanced = false
			return changed, nil
		}
		s.Target = cmd.Target
		s.Unbalanced = false
		return true, nil
	case OpSetConfig:
		if int(cmd.Partition) >= s.Partitions {
			return false, refuse("partition %d: the cluster has %d", cmd.Partition, s.Partitions)
		}
		if slices.Equal(s.Config[cmd.Partition], cmd.Config) {
			return false, nil
		}
		s.Config[cmd.Partition] = slices.Clone(cmd.Config)
		return true, nil
	case OpRemove:
		m := s.Member(cmd.ID)
		if m == nil {
			return false, nil
		}
		if m.State != Leaving && m.State != Down {
			return false, refuse("node %s is %s; only a leaving or down node is removed", cmd.ID, m.State)
		}
		if s.Holds(cmd.ID) {
			return false, refuse("node %s still holds replicas", cmd.ID)
		}
		s.Members = slices.DeleteFunc(s.Members, func(m Member) bool { return m.ID == cmd.ID })
		s.Removed = append(s.Removed, cmd.ID)
		return true, nil
	case OpSplitTarget, OpBeginSplit, OpEndSplit:
		return s.applySplit(cmd)
	}
	return false, refuse("unknown command %q", cmd.Op)
}

// staying counts the members that are not leaving.
func (s *State) staying() int {
	n := 0
	for _, m := range s.Members {
		if m.State != Leaving {
			n++
		}
	}
	return n
}

// Encode serializes a command for the log.
func (c Command) Encode() ([]byte, error) { return json.Marshal(c) }

// DecodeCommand parses a command of the log.
func DecodeCommand(data []byte) (Command, error) {
	var c Command
	err := json.Unmarshal(data, &c)
	return c, err
}
