// Package raftgroup builds the hashicorp/raft groups of a node: one per
// hosted partition (package shard) and the metadata group (package cluster).
// Both take their timing from one Timing, so that a node's groups agree on
// how soon a lost leader is noticed, and from one builder, so that what the
// groups share (raft.Config, bootstrap, leader lookup) is written once.
//
// Invariants:
//   - Every group of a node is built from a Timing that passed
//     WithDefaults: no group runs hashicorp/raft's own defaults by accident
//     (a zero field takes this package's default, never raft's).
//   - LeaderLeaseTimeout <= HeartbeatTimeout <= ElectionTimeout, which
//     hashicorp/raft requires; WithDefaults refuses anything else, naming
//     the field.
//
// Goroutines and locks: none of its own; a Group is a *raft.Raft, whose
// goroutines run until Shutdown.
package raftgroup

import (
	"cmp"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// Defaults of Timing, chosen for what clients feel: after a primary is
// killed or cut off, a follower notices within HeartbeatTimeout (randomized
// up to twice it) and an election takes about ElectionTimeout more, while
// raft's heartbeats (every HeartbeatTimeout/10 to /5 per group and
// follower) stay a small share of an idle node's CPU. docs/benchmarks.md
// ("Failover and Raft timing") measures both:
//
//   - 400 ms, with the client's retries at most 250 ms apart, kept the
//     worst client-visible stall at 1.34 s after a kill and 1.28 s after an
//     isolation (6 rounds each; the isolation with a 1 s op timeout, where
//     settle's bound now ends an isolated primary's wait after one election
//     round, 2 × (HeartbeatTimeout + ElectionTimeout) = 1.6 s, whatever the
//     op timeout: as committed with the transport's heartbeat window of
//     HeartbeatTimeout/10, at most 1.54 s kill and 1.84 s isolation in 5
//     rounds each, idle 0.045-0.065 cores per node), under the 2 s target;
//     1 s timing stalled 3.4 s at the median, 4.7 s at worst.
//     300 ms stalled a little less (1.15 s) for more idle CPU (0.088
//     against 0.070 cores per node, both with the earlier window); 250 ms held 16 elections without a
//     fault in one 15 s run on a busy machine (400 ms: 1-2 at load 10-12).
//   - The lease stays half the heartbeat timeout: only a cut-off primary's
//     step-down depends on it, and a shorter one steps down on CPU hiccups.
//   - CommitTimeout paces only what an idle leader sends to repeat the
//     commit index: failover does not depend on it, and below 1 s it costs
//     idle CPU while 2 s and 5 s saved nothing measurable.
//
// Idle CPU is 0.070 cores per node at this timing, above the 5 % target,
// which only 1 s timing met: closing that gap needs fewer heartbeat
// messages (docs/benchmarks.md), not a slower timing.
const (
	DefaultHeartbeatTimeout   = 400 * time.Millisecond
	DefaultElectionTimeout    = 400 * time.Millisecond
	DefaultLeaderLeaseTimeout = 200 * time.Millisecond
	DefaultCommitTimeout      = time.Second
)

// minTimeout is the shortest timeout hashicorp/raft accepts.
const minTimeout = 5 * time.Millisecond

// Timing is the Raft timing shared by all groups of a node.
type Timing struct {
	// HeartbeatTimeout: a follower that hears nothing from its leader for
	// this long (randomized up to twice it) starts an election.
	HeartbeatTimeout time.Duration
	// ElectionTimeout: a candidate that wins no election in this long
	// (randomized up to twice it) starts another.
	ElectionTimeout time.Duration
	// LeaderLeaseTimeout: a leader cut off from a majority for this long
	// steps down, which bounds how long a cut-off primary serves local reads
	// and accepts fast writes.
	LeaderLeaseTimeout time.Duration
	// CommitTimeout: how long an idle leader waits before telling followers
	// the commit index again.
	CommitTimeout time.Duration
}

// ErrInvalid marks a configuration error; errors.Is finds it in every error
// WithDefaults returns, and in the configuration errors of the packages that
// embed a Timing.
var ErrInvalid = errors.New("invalid configuration")

// WithDefaults fills zero fields with the defaults above and checks the
// result.
func (t Timing) WithDefaults() (Timing, error) {
	t.HeartbeatTimeout = cmp.Or(t.HeartbeatTimeout, DefaultHeartbeatTimeout)
	t.ElectionTimeout = cmp.Or(t.ElectionTimeout, DefaultElectionTimeout)
	t.LeaderLeaseTimeout = cmp.Or(t.LeaderLeaseTimeout, DefaultLeaderLeaseTimeout)
	t.CommitTimeout = cmp.Or(t.CommitTimeout, DefaultCommitTimeout)
	for _, f := range []struct {
		name string
		d    time.Duration
	}{
		{"HeartbeatTimeout", t.HeartbeatTimeout},
		{"ElectionTimeout", t.ElectionTimeout},
		{"LeaderLeaseTimeout", t.LeaderLeaseTimeout},
	} {
		if f.d < minTimeout {
			return t, fmt.Errorf("%w: %s is %v, want at least %v", ErrInvalid, f.name, f.d, minTimeout)
		}
	}
	switch {
	case t.CommitTimeout < time.Millisecond:
		return t, fmt.Errorf("%w: CommitTimeout is %v, want at least 1ms", ErrInvalid, t.CommitTimeout)
	case t.LeaderLeaseTimeout > t.HeartbeatTimeout:
		return t, fmt.Errorf("%w: LeaderLeaseTimeout %v is longer than HeartbeatTimeout %v", ErrInvalid, t.LeaderLeaseTimeout, t.HeartbeatTimeout)
	case t.ElectionTimeout < t.HeartbeatTimeout:
		return t, fmt.Errorf("%w: ElectionTimeout %v is shorter than HeartbeatTimeout %v", ErrInvalid, t.ElectionTimeout, t.HeartbeatTimeout)
	}
	return t, nil
}

// SnapshotPolicy is when a group snapshots its state machine and truncates its
// log. It has no defaults here (partitions and the metadata group differ):
// the caller sets every field.
type SnapshotPolicy struct {
	Threshold    uint64        // entries since the last snapshot that make one due
	Interval     time.Duration // how often to check whether one is due
	TrailingLogs uint64        // entries kept after a snapshot, so a short outage replays the log
}

// Config describes one group member.
type Config struct {
	ID raft.ServerID
	// Timing must have passed WithDefaults.
	Timing    Timing
	Snapshots SnapshotPolicy
	Logger    hclog.Logger
	// NotifyCh, if set, receives true when this member becomes leader and
	// false when it stops leading (raft.Config.NotifyCh).
	NotifyCh chan<- bool
	// NoSnapshotRestoreOnStart: the state machine keeps its state itself,
	// so raft must not restore the latest snapshot into it on start.
	NoSnapshotRestoreOnStart bool
}

// Stores are the member's persistent parts and its transport.
type Stores struct {
	FSM       raft.FSM
	Logs      raft.LogStore
	Stable    raft.StableStore
	Snapshots raft.SnapshotStore
	Transport raft.Transport
}

// Group is a running member of a Raft group.
type Group struct {
	*raft.Raft
}

// Open starts a member. A new group's initial members then Bootstrap; any
// other member is added by the group's leader.
func Open(cfg Config, st Stores) (*Group, error) {
	rc := raft.DefaultConfig()
	rc.LocalID = cfg.ID
	rc.HeartbeatTimeout = cfg.Timing.HeartbeatTimeout
	rc.ElectionTimeout = cfg.Timing.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.Timing.LeaderLeaseTimeout
	rc.CommitTimeout = cfg.Timing.CommitTimeout
	rc.SnapshotThreshold = cfg.Snapshots.Threshold
	rc.SnapshotInterval = cfg.Snapshots.Interval
	rc.TrailingLogs = cfg.Snapshots.TrailingLogs
	rc.Logger = cfg.Logger
	rc.NotifyCh = cfg.NotifyCh
	rc.NoSnapshotRestoreOnStart = cfg.NoSnapshotRestoreOnStart
	rc.NoLegacyTelemetry = true
	r, err := raft.NewRaft(rc, st.FSM, st.Logs, st.Stable, st.Snapshots, st.Transport)
	if err != nil {
		return nil, err
	}
	return &Group{r}, nil
}

// Bootstrap makes servers the group's initial configuration. It is a no-op
// for a member that already has Raft state, so every initial member may
// call it on every start.
func (g *Group) Bootstrap(servers []raft.Server) error {
	err := g.BootstrapCluster(raft.Configuration{Servers: servers}).Error()
	if errors.Is(err, raft.ErrCantBootstrap) {
		return nil
	}
	return err
}

// IsLeader reports whether this member leads its group.
func (g *Group) IsLeader() bool { return g.State() == raft.Leader }

// Leader is the group's leader as this member knows it (empty if none).
// It shadows raft's deprecated Leader, which gives only the address.
func (g *Group) Leader() (raft.ServerID, raft.ServerAddress) {
	addr, id := g.LeaderWithID()
	return id, addr
}
