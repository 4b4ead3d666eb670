// Package cluster is the cluster's metadata: its identity, its members and
// their health, where every partition's replicas should be (the target
// placement) and where they are (each partition's Raft configuration as last
// recorded). It lives in a Raft group of its own, the metadata group, whose
// log shares the node's WAL like the partitions' logs; every node is a
// member of it (up to MaxVoters voters, the rest non-voters), so every node
// learns each change by replication, promptly.
//
// Invariants:
//   - State is immutable once published; every applied change publishes a
//     new State with a higher Epoch.
//   - Apply is deterministic: a command carries every input it needs (times
//     included), so all members compute the same State from the same log.
//   - A removed node id never returns: Join refuses it.
//   - The planning functions (Plan, NextStep) are pure; the node runs them
//     on the metadata leader and executes their steps.
package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"slices"
	"time"

	"github.com/ringkv/ringkv/ring"
)

// NodeState is a member's health as the metadata group records it.
type NodeState string

const (
	// Joining: added by Join, not yet heard from.
	Joining NodeState = "joining"
	// Up: heartbeating.
	Up NodeState = "up"
	// Suspect: silent for longer than the suspect timeout; still routed to.
	Suspect NodeState = "suspect"
	// Down: silent for longer than the dead timeout; dropped from routing.
	// Its replicas are re-created elsewhere once it has been down for the
	// replace timeout.
	Down NodeState = "down"
	// Leaving: decommissioning; its replicas move away, then it is removed.
	Leaving NodeState = "leaving"
)

// Member is a node of the cluster.
type Member struct {
	ID    string    `json:"id"`
	Addr  string    `json:"addr"`
	State NodeState `json:"state"`
	// Since is when the member entered State, unix nanoseconds of the
	// proposing leader's clock.
	Since int64 `json:"since"`
}

// Server is a member of a partition's Raft configuration.
type Server struct {
	ID    string `json:"id"`
	Voter bool   `json:"voter"`
}

// State is the cluster's metadata at one epoch.
type State struct {
	ClusterID  string   `json:"cluster_id"`
	Partitions int      `json:"partitions"`
	Epoch      uint64   `json:"epoch"`
	Members    []Member `json:"members"` // sorted by ID
	// Removed lists the ids of members that left or were replaced; they
	// are refused if they come back.
	Removed []string `json:"removed,omitempty"`
	// Target is the placement the cluster moves towards (ring.Assignment
	// binary encoding, checksummed).
	Target []byte `json:"target"`
	// Config is each partition's Raft configuration as last recorded.
	Config [][]Server `json:"config"`
	// InitialPartitions is the partition count the cluster was created
	// with, from which splits grow Partitions (Ring); 0 in metadata
	// recorded before partitions could split, meaning Partitions.
	InitialPartitions int `json:"initial_partitions,omitempty"`
	// SplitTarget is the partition count an operator asked for
	// (Admin.Split): the manager splits one partition at a time until
	// Partitions reaches it.
	SplitTarget int `json:"split_target,omitempty"`
	// Splitting is the split under way, recorded before the parent's
	// primary is asked for it. Its child, partition Partitions, is not
	// part of the map until OpEndSplit records it.
	Splitting *Split `json:"splitting,omitempty"`
	// Unbalanced is set by a split, whose child sits on its parent's
	// nodes, until a new target spreads it (Plan).
	Unbalanced bool `json:"unbalanced,omitempty"`

	target *ring.Assignment
}

// Split is a split of partition Parent whose upper half becomes Child.
type Split struct {
	Parent uint32 `json:"parent"`
	Child  uint32 `json:"child"`
}

// Ring is the ring of the cluster's partitions: its initial count grown by
// the splits recorded since.
func (s *State) Ring() (*ring.Ring, error) {
	initial := s.InitialPartitions
	if initial == 0 {
		initial = s.Partitions
	}
	return ring.Grown(initial, s.Partitions)
}

// ErrNotInitialized reports a State that has not been created yet.
var ErrNotInitialized = errors.New("cluster: metadata not initialized")

// New builds the initial State of a cluster whose members are all up and
// placed by placement, which also gives each partition's configuration.
func New(clusterID string, members []Member, placement *ring.Assignment, now time.Time) (*State, error) {
	enc, err := placement.MarshalBinary()
	if err != nil {
		return nil, err
	}
	s := &State{ClusterID: clusterID, Partitions: placement.Partitions(), InitialPartitions: placement.Partitions(), Epoch: 1, Target: enc}
	for _, m := range members {
		m.State, m.Since = Up, now.UnixNano()
		s.Members = append(s.Members, m)
	}
	slices.SortFunc(s.Members, func(a, b Member) int { return cmpString(a.ID, b.ID) })
	for p := range ring.PartitionID(placement.Partitions()) {
		var cfg []Server
		for _, id := range placement.Replicas(p) {
			cfg = append(cfg, Server{ID: string(id), Voter: true})
		}
		s.Config = append(s.Config, cfg)
	}
	return s, s.index()
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// envelope carries an encoded State with its checksum (CRC-32C of State),
// so a damaged file or snapshot is detected, not half-read.
type envelope struct {
	State json.RawMessage `json:"state"`
	CRC   uint32          `json:"crc32c"`
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrCorrupt reports an encoded State that fails its checksum or cannot be
// parsed.
var ErrCorrupt = errors.New("cluster: corrupt metadata")

// Decode parses a State encoded by Encode and checks it.
func Decode(data []byte) (*State, error) {
	var env envelope
	if err := json.Unmarshal(data, &env); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if got := crc32.Checksum(env.State, castagnoli); got != env.CRC {
		return nil, fmt.Errorf("%w: checksum %08x, recorded %08x", ErrCorrupt, got, env.CRC)
	}
	s := &State{}
	if err := json.Unmarshal(env.State, s); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return s, s.index()
}

// Encode serializes the State with its checksum.
func (s *State) Encode() ([]byte, error) {
	body, err := json.Marshal(s)
	if err != nil {
		return nil, err
	}
	return json.Marshal(envelope{State: body, CRC: crc32.Checksum(body, castagnoli)})
}

func (s *State) index() error {
	s.target = new(ring.Assignment)
	if err := s.target.UnmarshalBinary(s.Target); err != nil {
		return fmt.Errorf("cluster: target placement: %w", err)
	}
	if s.target.Partitions() != s.Partitions || len(s.Config) != s.Partitions {
		return fmt.Errorf("cluster: %d partitions, but the target places %d and %d configurations are recorded",
			s.Partitions, s.target.Partitions(), len(s.Config))
	}
	for _, id := range s.target.Nodes() {
		if s.Member(string(id)) == nil {
			return fmt.Errorf("cluster: target places replicas on %q, which is not a member", id)
		}
	}
	if _, err := s.Ring(); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	return nil
}

// Placement is the target placement.
func (s *State) Placement() *ring.Assignment { return s.target }

// Member returns the member with id, or nil.
func (s *State) Member(id string) *Member {
	i, ok := slices.BinarySearchFunc(s.Members, id, func(m Member, id string) int { return cmpString(m.ID, id) })
	if !ok {
		return nil
	}
	return &s.Members[i]
}

// Addr is the address of member id ("" if unknown).
func (s *State) Addr(id string) string {
	if m := s.Member(id); m != nil {
		return m.Addr
	}
	return ""
}

// IsRemoved reports whether id was a member and was removed.
func (s *State) IsRemoved(id string) bool { return slices.Contains(s.Removed, id) }

// Hosts reports whether node id should hold a replica of p: it is in p's
// target or in its recorded configuration.
func (s *State) Hosts(id string, p ring.PartitionID) bool {
	if want := s.target.Replicas(p); slices.Contains(want[:], ring.NodeID(id)) {
		return true
	}
	return slices.ContainsFunc(s.Config[p], func(sv Server) bool { return sv.ID == id })
}

// Moving reports whether p's recorded configuration differs from its
// target: other members, or members not yet voters.
func (s *State) Moving(p ring.PartitionID) bool {
	want := s.target.Replicas(p)
	if len(s.Config[p]) != len(want) {
		return true
	}
	for _, sv := range s.Config[p] {
		if !sv.Voter || !slices.Contains(want[:], ring.NodeID(sv.ID)) {
			return true
		}
	}
	return false
}

// Holds reports whether id appears in any partition's target or recorded
// configuration.
func (s *State) Holds(id string) bool {
	for p := range ring.PartitionID(s.Partitions) {
		if s.Hosts(id, p) {
			return true
		}
	}
	return false
}

// clone copies s deeply enough for a command to edit the copy.
func (s *State) clone() *State {
	c := *s
	c.Members = slices.Clone(s.Members)
	c.Removed = slices.Clone(s.Removed)
	c.Config = slices.Clone(s.Config)
	if s.Splitting != nil {
		sp := *s.Splitting
		c.Splitting = &sp
	}
	return &c
}
