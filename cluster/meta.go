package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/ringkv/ringkv/raftgroup"
	"github.com/ringkv/ringkv/raftwal"
	"github.com/ringkv/ringkv/wal"
)

// Group is the transport group id of the metadata group; partitions use
// their own numbers, which are far below it.
const Group = math.MaxUint32

// Stream is the WAL stream of the metadata group's log.
const Stream = 0

// MaxVoters is the most voters of the metadata group; further members
// follow it as non-voters.
const MaxVoters = 5

// ErrNotLeader reports a proposal made on a member that does not lead the
// metadata group.
var ErrNotLeader = errors.New("cluster: not the metadata leader")

// snapshots is the metadata group's snapshot policy: its state is small
// (members and a placement), so it snapshots often and keeps a short log.
var snapshots = raftgroup.SnapshotPolicy{Threshold: 1024, Interval: 2 * time.Minute, TrailingLogs: 1024}

// Config describes this node's member of the metadata group.
type Config struct {
	NodeID    string
	Dir       string // snapshots
	WAL       *wal.WAL
	Transport raft.Transport
	Logger    hclog.Logger
	// Raft is the node's Raft timing, shared with its partitions.
	Raft raftgroup.Timing

	// OnChange is called, on the applying goroutine, with every new State.
	OnChange func(*State)
}

// withDefaults fills zero fields and checks the rest.
func (c Config) withDefaults() (Config, error) {
	var err error
	if c.NodeID == "" || c.Dir == "" || c.WAL == nil || c.Transport == nil {
		return c, fmt.Errorf("cluster: %w: NodeID, Dir, WAL and Transport are required", raftgroup.ErrInvalid)
	}
	if c.Raft, err = c.Raft.WithDefaults(); err != nil {
		return c, fmt.Errorf("cluster: Raft: %w", err)
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	return c, nil
}

// Meta is this node's member of the metadata group.
type Meta struct {
	group *raftgroup.Group
	cfg   Config
	state atomic.Pointer[State]
	mu    sync.Mutex // serializes Apply and Restore with OnChange
}

// Open starts the member. A new cluster's members then Bootstrap; a joining
// node is added by the leader.
func Open(cfg Config) (*Meta, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, err
	}
	m := &Meta{cfg: cfg}
	logs := raftwal.New(cfg.WAL, Stream, 30*time.Second)
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.Dir, 2, cfg.Logger.Named("meta-snapshots"))
	if err != nil {
		return nil, err
	}
	m.group, err = raftgroup.Open(
		raftgroup.Config{ID: raft.ServerID(cfg.NodeID), Timing: cfg.Raft, Snapshots: snapshots, Logger: cfg.Logger.Named("meta-raft")},
		raftgroup.Stores{FSM: (*metaFSM)(m), Logs: logs, Stable: logs, Snapshots: snaps, Transport: cfg.Transport})
	if err != nil {
		return nil, fmt.Errorf("metadata group: start raft: %w", err)
	}
	return m, nil
}

// State is the latest State this member applied, nil before the first.
func (m *Meta) State() *State { return m.state.Load() }

// Bootstrap makes servers the group's first configuration; a no-op for a
// member that already has Raft state.
func (m *Meta) Bootstrap(servers []raft.Server) error { return m.group.Bootstrap(servers) }

// Raft exposes the group's Raft instance, for its membership.
func (m *Meta) Raft() *raft.Raft { return m.group.Raft }

// IsLeader reports whether this member leads the group.
func (m *Meta) IsLeader() bool { return m.group.IsLeader() }

// Leader is the group's leader as this member knows it.
func (m *Meta) Leader() (raft.ServerID, raft.ServerAddress) { return m.group.Leader() }

// Propose commits cmd and returns the State after it. It fails with
// ErrNotLeader on a follower, and with an ErrRefused error (nothing
// changed) if cmd is invalid in the current state.
func (m *Meta) Propose(ctx context.Context, cmd Command) (*State, error) {
	if !m.IsLeader() {
		return nil, ErrNotLeader
	}
	data, err := cmd.Encode()
	if err != nil {
		return nil, err
	}
	timeout := 10 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	f := m.group.Apply(data, timeout)
	if err := f.Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			return nil, fmt.Errorf("%w: %v", ErrNotLeader, err)
		}
		return nil, err
	}
	res := f.Response().(applyResult)
	return res.state, res.err
}

// Close stops the member.
func (m *Meta) Close() error { return m.group.Shutdown().Error() }

type applyResult struct {
	state *State
	err   error
}

// metaFSM applies the metadata log.
type metaFSM Meta

func (f *metaFSM) publish(s *State) {
	f.state.Store(s)
	if f.cfg.OnChange != nil {
		f.cfg.OnChange(s)
	}
}

func (f *metaFSM) Apply(l *raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	cmd, err := DecodeCommand(l.Data)
	if err != nil {
		// A command the leader encoded is always decodable; this is a
		// corrupt log, which must not be skipped silently.
		panic(fmt.Sprintf("metadata log entry %d: %v", l.Index, err))
	}
	cur := f.state.Load()
	next, err := cur.Apply(cmd)
	if next != cur {
		f.publish(next)
	}
	return applyResult{next, err}
}

func (f *metaFSM) Snapshot() (raft.FSMSnapshot, error) {
	return metaSnapshot{f.state.Load()}, nil
}

func (f *metaFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(data) == 0 {
		f.state.Store(nil)
		return nil
	}
	s, err := Decode(data)
	if err != nil {
		return err
	}
	f.publish(s)
	return nil
}

type metaSnapshot struct{ s *State }

func (ms metaSnapshot) Persist(sink raft.SnapshotSink) error {
	var data []byte
	if ms.s != nil {
		var err error
		if data, err = ms.s.Encode(); err != nil {
			sink.Cancel()
			return err
		}
	}
	if _, err := sink.Write(data); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (metaSnapshot) Release() {}
