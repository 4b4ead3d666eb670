package shard

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/ringkv/ringkv/fsm"
	"github.com/ringkv/ringkv/hlc"
	"github.com/ringkv/ringkv/internal/storage"
	"github.com/ringkv/ringkv/raftgroup"
	"github.com/ringkv/ringkv/raftwal"
	"github.com/ringkv/ringkv/ring"
	"github.com/ringkv/ringkv/wal"
)

// LogBackend names where a replica keeps its Raft log.
type LogBackend string

const (
	// LogWAL keeps the log in the node's shared WAL (the default).
	LogWAL LogBackend = "wal"
	// LogBoltDB keeps it in a raft-boltdb file of its own, the conventional
	// choice, kept as a baseline for benchmarks.
	LogBoltDB LogBackend = "boltdb"
)

// Defaults of Config.
const (
	DefaultOpTimeout = 3 * time.Second
	// DefaultSnapshotThreshold: a partition snapshots every 8192 entries...
	DefaultSnapshotThreshold = 8192
	// ...checked every 30 s...
	DefaultSnapshotInterval = 30 * time.Second
	// ...and keeps 10240 entries after one, so that a replica back from a
	// short outage replays the log instead of taking a snapshot.
	DefaultTrailingLogs = 10240
)

// Config describes one replica. Zero fields take the defaults above and
// raftgroup's.
type Config struct {
	Partition uint32
	NodeID    raft.ServerID
	// Dir holds the replica's snapshots (and its bolt file with LogBoltDB).
	Dir     string
	Backend LogBackend
	// WAL holds the fast-write journal, and the Raft log with LogWAL;
	// required.
	WAL *wal.WAL
	// Engine holds the replica's state machine, in the partition's span;
	// required.
	Engine    *storage.Engine
	Transport raft.Transport
	Clock     *hlc.Clock
	Logger    hclog.Logger
	Limits    fsm.Options

	// Raft is the node's Raft timing, shared by all its groups.
	Raft           raftgroup.Timing
	SnapshotPolicy raftgroup.SnapshotPolicy
	// OpTimeout bounds a strong write or quorum read that cannot reach a
	// majority (default 3s).
	OpTimeout time.Duration
	// Snapshots, if set, caps snapshot transfers on the node: it is shared
	// by all replicas and holds one token per transfer in flight.
	Snapshots chan struct{}
	// Reoffer delivers a re-offered fast write to a remote primary (see
	// Replica.Reoffer). Without it re-offers wait until this replica leads.
	// An error wrapping fsm.ErrMalformedCommand or an *fsm.LimitError says
	// the primary refused the entry for good, and the entry is dropped;
	// after any other error it is offered again.
	Reoffer func(ctx context.Context, primary raft.ServerAddress, partition uint32, entry []byte) error
	// JournalEntries and JournalBytes bound the fast writes a primary holds
	// acknowledged and not yet applied (journal.go); 0 takes
	// DefaultJournalEntries and DefaultJournalBytes.
	JournalEntries int
	JournalBytes   int64
	// OnReplicated, if set, is called with the replication lag of each
	// fast write once its primary applied it: the time from its journal
	// append. It runs on the replica's releaser or re-offer goroutine and
	// must not block.
	OnReplicated func(lag time.Duration)
	// OnSnapshot, if set, is called after each snapshot of the store is
	// persisted. It must not block.
	OnSnapshot func(SnapshotInfo)
	// OnSplit, if set, is called when this replica applies a split (or
	// meets one again in the log it replays): the child's state is in the
	// engine, and the node opens the child's replica (split.go); leading
	// says this replica led the parent then, so the child's should
	// Campaign. It runs on raft's FSM goroutine and must not block.
	OnSplit func(child uint32, leading bool)
	// Rehome delivers a re-offered fast write whose key a split has handed
	// to another partition to the primary of that partition (see
	// Replica.Reoffer); without it such a write waits in the queue.
	Rehome func(ctx context.Context, key, entry []byte) error
}

// SnapshotInfo describes one persisted snapshot.
type SnapshotInfo struct {
	Partition uint32
	Duration  time.Duration // serializing and writing it, sync included
	Bytes     int64
}

// withDefaults fills zero fields and checks the rest.
func (c Config) withDefaults() (Config, error) {
	var err error
	if c.Transport == nil || c.Engine == nil || c.WAL == nil {
		return c, fmt.Errorf("shard: %w: Transport, Engine and WAL are required", raftgroup.ErrInvalid)
	}
	if c.JournalEntries == 0 {
		c.JournalEntries = DefaultJournalEntries
	}
	if c.JournalBytes == 0 {
		c.JournalBytes = DefaultJournalBytes
	}
	if c.JournalEntries < 0 || c.JournalBytes < 0 {
		return c, fmt.Errorf("shard: %w: JournalEntries is %d and JournalBytes %d, want more than 0", raftgroup.ErrInvalid, c.JournalEntries, c.JournalBytes)
	}
	if c.Raft, err = c.Raft.WithDefaults(); err != nil {
		return c, fmt.Errorf("shard: Raft: %w", err)
	}
	if c.SnapshotPolicy.Threshold == 0 {
		c.SnapshotPolicy.Threshold = DefaultSnapshotThreshold
	}
	if c.SnapshotPolicy.Interval == 0 {
		c.SnapshotPolicy.Interval = DefaultSnapshotInterval
	}
	if c.SnapshotPolicy.TrailingLogs == 0 {
		c.SnapshotPolicy.TrailingLogs = DefaultTrailingLogs
	}
	if c.OpTimeout == 0 {
		c.OpTimeout = DefaultOpTimeout
	}
	switch {
	case c.SnapshotPolicy.Interval < 5*time.Millisecond:
		return c, fmt.Errorf("shard: %w: SnapshotPolicy.Interval is %v, want at least 5ms", raftgroup.ErrInvalid, c.SnapshotPolicy.Interval)
	case c.OpTimeout < 0:
		return c, fmt.Errorf("shard: %w: OpTimeout is %v, want more than 0", raftgroup.ErrInvalid, c.OpTimeout)
	}
	if c.Backend == "" {
		c.Backend = LogWAL
	}
	switch c.Backend {
	case LogWAL, LogBoltDB:
	default:
		return c, fmt.Errorf("shard: %w: Backend %q, want %q or %q", raftgroup.ErrInvalid, c.Backend, LogWAL, LogBoltDB)
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	if c.Clock == nil {
		c.Clock = hlc.New(nil)
	}
	return c, nil
}

// StreamOf is the WAL stream holding a partition's Raft log. Stream 0 is
// left for cluster metadata.
func StreamOf(partition uint32) uint64 { return uint64(partition) + 1 }

// Replica is one member of a partition's Raft group: the Raft instance, its
// log, the fsm store it applies to, and — while it leads — the bookkeeping of
// writes proposed but not yet applied.
type Replica struct {
	cfg    Config
	log    hclog.Logger
	store  *fsm.Store
	raft   *raftgroup.Group
	logs   raft.LogStore
	stable raft.StableStore
	closer io.Closer // the bolt store, if any

	// applied is notified whenever the store applies an entry, waking
	// readers that wait for an index.
	applied broadcast

	// proposeMu serializes version assignment on the primary, per key:
	// a key's writes take one stripe, chosen by proposeSeed. Writes to
	// different keys need no order between them, and proposing them
	// concurrently lets raft batch them into one log write.
	proposeMu   [proposeStripes]sync.Mutex
	proposeSeed maphash.Seed
	nextReqID   atomic.Uint64

	pendingMu sync.Mutex
	overlay   map[string]*pendingKey

	// journal holds the fast writes acknowledged and not yet applied, and
	// the proposal queue; proposed carries the proposer's runs to the
	// releaser (journal.go).
	journal  *journal
	proposed chan proposedRun

	// traced holds the contexts of writes being traced, by request id, so
	// the log store's sync can be recorded as a span of each; tracedN lets
	// the untraced path skip the lookup.
	tracedMu sync.Mutex
	traced   map[uint64]context.Context
	tracedN  atomic.Int32

	// readyTerm is the term whose start marker this replica, as leader, has
	// applied: only then does its store reflect every entry earlier leaders
	// committed, so writes (numbered from the store) and quorum reads wait
	// for it. ready is notified when readyTerm changes or leadership is
	// lost.
	readyTerm atomic.Uint64
	ready     broadcast
	verify    verifier

	// handingOver is the range a split this primary proposed hands over,
	// from its proposal until raft answers it (split.go).
	handingOver atomic.Pointer[ring.HashRange]

	reofferCh chan struct{}

	stats Stats

	leaderCh chan bool
	closeCh  chan struct{}
	wg       sync.WaitGroup
}

// Stats counts events a metrics layer exports.
type Stats struct {
	FastUncommitted atomic.Int64  // keys whose acknowledged fast write is not yet applied
	JournalRecords  atomic.Int64  // fast writes in the journal, not yet released (journal.go)
	JournalBytes    atomic.Int64  // their bytes
	Reoffered       atomic.Uint64 // fast writes of ended journal epochs delivered to a primary
	ReofferLost     atomic.Uint64 // re-offered writes that lost to a newer write
	ReofferDropped  atomic.Uint64 // re-offered writes refused for good (malformed, or breaking the limits) and dropped
	LeaderChanges   atomic.Uint64 // times this replica learned of a new leader
	// SnapshotsInstalled counts snapshots received from a leader and
	// ingested. A restart installs none: the engine keeps the state.
	SnapshotsInstalled atomic.Uint64
}

// pendingKey is the primary's view of a key with writes in flight.
type pendingKey struct {
	version uint64 // highest version proposed
	// queued counts the key's writes in the proposal queue, not yet taken
	// by raft: a strong write of the key queues behind them (journal.go).
	queued int
	// visible is the newest acknowledged fast write, served by local reads
	// until the store catches up with it.
	visible *fsm.Item
	// applied is the greatest stamp of the key's writes applied since pk
	// entered the overlay: the store holds it or a greater one.
	applied fsm.Stamp
}

// Open starts the replica. A new replica must then be bootstrapped (by every
// initial member, with the same servers) or added by the group's leader.
func Open(cfg Config) (*Replica, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	store, err := fsm.New(cfg.Limits, cfg.Engine.Partition(cfg.Partition))
	if err != nil {
		return nil, err
	}
	r := &Replica{
		cfg:       cfg,
		log:       cfg.Logger.With("partition", cfg.Partition),
		store:     store,
		proposed:  make(chan proposedRun, 256),
		overlay:   make(map[string]*pendingKey),
		traced:    make(map[uint64]context.Context),
		reofferCh: make(chan struct{}, 1),
		leaderCh:  make(chan bool, 8),
		closeCh:   make(chan struct{}),
	}
	r.nextReqID.Store(rand.Uint64())
	r.proposeSeed = maphash.MakeSeed()
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, err
	}
	if err := r.openLog(); err != nil {
		return nil, err
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.Dir, 2, r.log.Named("snapshots"))
	if err != nil {
		r.closeLog()
		return nil, err
	}
	if r.journal, err = openJournal(cfg.WAL, JournalStreamOf(cfg.Partition), cfg.JournalEntries, cfg.JournalBytes, &r.stats); err != nil {
		r.closeLog()
		return nil, fmt.Errorf("partition %d: %w", cfg.Partition, err)
	}
	engineSnaps := &engineSnapshots{SnapshotStore: snaps, store: store, dir: filepath.Join(cfg.Dir, "snapshots")}
	if err := engineSnaps.recover(); err != nil {
		r.closeLog()
		return nil, fmt.Errorf("partition %d: %w", cfg.Partition, err)
	}
	if err := r.startFromGenesis(engineSnaps); err != nil {
		r.closeLog()
		return nil, err
	}
	var snapStore raft.SnapshotStore = engineSnaps
	if cfg.Snapshots != nil {
		snapStore = &gatedSnapshots{SnapshotStore: engineSnaps, gate: cfg.Snapshots}
	}
	r.raft, err = raftgroup.Open(
		raftgroup.Config{ID: cfg.NodeID, Timing: cfg.Raft, Snapshots: cfg.SnapshotPolicy, Logger: r.log.Named("raft"), NotifyCh: r.leaderCh,
			// The engine holds the state already (snapshots.go).
			NoSnapshotRestoreOnStart: true},
		raftgroup.Stores{FSM: (*fsmAdapter)(r), Logs: r.logs, Stable: r.stable, Snapshots: snapStore, Transport: cfg.Transport})
	if err != nil {
		r.closeLog()
		return nil, fmt.Errorf("partition %d: start raft: %w", cfg.Partition, err)
	}
	// The filter runs synchronously on raft's goroutine for every
	// observation; counting there needs no channel and no goroutine.
	r.raft.RegisterObserver(raft.NewObserver(nil, false, func(o *raft.Observation) bool {
		if lo, ok := o.Data.(raft.LeaderObservation); ok && lo.LeaderID != "" {
			r.stats.LeaderChanges.Add(1)
		}
		return false
	}))
	r.wg.Add(5)
	go r.watchLeadership()
	go r.runReoffers()
	go r.runProposer()
	go r.runReleaser()
	go func() {
		defer r.wg.Done()
		r.verify.run(r.raft.Raft, cfg.Transport, r.closeCh)
	}()
	return r, nil
}

func (r *Replica) openLog() error {
	var base raft.LogStore
	switch r.cfg.Backend {
	case LogWAL:
		ls := raftwal.New(r.cfg.WAL, StreamOf(r.cfg.Partition), 30*time.Second)
		base, r.stable = ls, ls
	case LogBoltDB:
		b, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(r.cfg.Dir, "raft.db")})
		if err != nil {
			return fmt.Errorf("partition %d: open bolt log: %w", r.cfg.Partition, err)
		}
		base, r.stable, r.closer = b, b, b
	}
	r.logs = &observedLogStore{LogStore: base, stored: r.onStored}
	return nil
}

func (r *Replica) closeLog() {
	if r.closer != nil {
		r.closer.Close()
	}
}

// Bootstrap makes servers the group's initial configuration. It is a no-op
// for a replica that already has Raft state.
func (r *Replica) Bootstrap(servers []raft.Server) error { return r.raft.Bootstrap(servers) }

// Partition is the partition this replica serves.
func (r *Replica) Partition() uint32 { return r.cfg.Partition }

// Raft exposes the Raft instance for membership changes and status.
func (r *Replica) Raft() *raft.Raft { return r.raft.Raft }

// Stats returns the replica's counters.
func (r *Replica) Stats() *Stats { return &r.stats }

// IsPrimary reports whether this replica is its group's leader.
func (r *Replica) IsPrimary() bool { return r.raft.IsLeader() }

// Leader returns the group's leader as this replica knows it (empty if none).
func (r *Replica) Leader() (raft.ServerID, raft.ServerAddress) { return r.raft.Leader() }

// Status is a replica's Raft state as it knows it.
type Status struct {
	State        raft.RaftState
	LeaderID     raft.ServerID // empty while no leader is known
	LeaderAddr   raft.ServerAddress
	Term         uint64
	LastIndex    uint64
	CommitIndex  uint64
	AppliedIndex uint64
	// Voters are the members of the latest configuration, committed or not.
	Voters []raft.ServerID
	// LastContact is when a follower last heard from its leader (zero on
	// the leader itself and before any contact).
	LastContact time.Time
}

// Status reads the replica's Raft state; every field is read without
// waiting on raft's main loop.
func (r *Replica) Status() Status {
	id, addr := r.Leader()
	st := Status{
		State:        r.raft.State(),
		LeaderID:     id,
		LeaderAddr:   addr,
		Term:         r.raft.CurrentTerm(),
		LastIndex:    r.raft.LastIndex(),
		CommitIndex:  r.raft.CommitIndex(),
		AppliedIndex: r.store.AppliedIndex(),
	}
	if st.State != raft.Leader {
		st.LastContact = r.raft.LastContact()
	}
	if f := r.raft.GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			if s.Suffrage == raft.Voter {
				st.Voters = append(st.Voters, s.ID)
			}
		}
	}
	return st
}

// AppendedAt is when the leader appended the oldest entry at or after index
// still in this replica's log: the entry itself unless compaction removed
// it. It is zero for entries written without a time (bootstrap).
func (r *Replica) AppendedAt(index uint64) (time.Time, error) {
	first, err := r.logs.FirstIndex()
	if err != nil {
		return time.Time{}, err
	}
	var l raft.Log
	if err := r.logs.GetLog(max(index, first), &l); err != nil {
		return time.Time{}, fmt.Errorf("partition %d: log %d: %w", r.cfg.Partition, max(index, first), err)
	}
	return l.AppendedAt, nil
}

// AppliedIndex is the last log index applied to the store.
func (r *Replica) AppliedIndex() uint64 { return r.store.AppliedIndex() }

// Store is the replica's state machine, for status and for comparing
// replicas in tests; writes go through Put and Delete.
func (r *Replica) Store() *fsm.Store { return r.store }

// TransferLeadership hands leadership to another voter if this replica leads.
func (r *Replica) TransferLeadership() error {
	if !r.IsPrimary() {
		return nil
	}
	return r.raft.LeadershipTransfer().Error()
}

// Close shuts the replica down; its log stays on disk.
func (r *Replica) Close() error {
	select {
	case <-r.closeCh:
		return nil
	default:
	}
	close(r.closeCh)
	err := r.raft.Shutdown().Error()
	r.wg.Wait()
	r.closeLog()
	return err
}

func (r *Replica) notPrimary() error {
	id, addr := r.Leader()
	return &NotPrimaryError{Partition: r.cfg.Partition, LeaderID: string(id), LeaderAddr: string(addr)}
}

func (r *Replica) noQuorum(what string, cause error) error {
	return &NoQuorumError{Partition: r.cfg.Partition, Op: what, Timeout: r.cfg.OpTimeout, Cause: cause}
}

// opContext bounds ctx by OpTimeout.
func (r *Replica) opContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, r.cfg.OpTimeout)
}

func (r *Replica) watchLeadership() {
	defer r.wg.Done()
	for {
		select {
		case <-r.closeCh:
			return
		case leader := <-r.leaderCh:
			if leader {
				r.wg.Add(1)
				go r.markTerm()
			} else {
				r.dropOverlay()
				r.setReady(0)
				r.journal.endEpoch()
				r.signalReoffers()
			}
		}
	}
}

// markTerm commits and applies an empty entry in the new term. Until it is
// applied, the leader's commit index may trail entries a previous leader
// committed and its store may miss them, so writes and quorum reads wait for
// it (waitReady).
func (r *Replica) markTerm() {
	defer r.wg.Done()
	term := r.raft.CurrentTerm()
	data := encodeEntry(0, fsm.Batch{})
	for r.IsPrimary() && r.raft.CurrentTerm() == term {
		f := r.raft.Apply(data, r.cfg.OpTimeout)
		// raft may shut down with the marker queued for its FSM goroutine
		// and never answer it: Close must not wait for that answer.
		select {
		case <-futureDone(f):
		case <-r.closeCh:
			return
		}
		err := f.Error()
		switch {
		case err == nil:
			r.setReady(term)
			r.signalReoffers()
			return
		case errors.Is(err, raft.ErrRaftShutdown):
			return
		}
		// Refused at once (a leadership transfer in progress, say): do not
		// spin while it lasts.
		select {
		case <-r.closeCh:
			return
		case <-time.After(r.cfg.Raft.CommitTimeout):
		}
	}
}

func (r *Replica) setReady(term uint64) {
	r.readyTerm.Store(term)
	r.ready.notify()
}

// isReady reports whether waitReady would return at once.
func (r *Replica) isReady() bool {
	return r.IsPrimary() && r.readyTerm.Load() == r.raft.CurrentTerm()
}

// waitReady blocks until this replica leads and has applied its term's
// marker. It fails with NotPrimary when leadership is lost meanwhile.
func (r *Replica) waitReady(ctx context.Context) error {
	return r.ready.wait(ctx, r.closeCh, func() (bool, error) {
		if !r.IsPrimary() {
			return false, r.notPrimary()
		}
		return r.readyTerm.Load() == r.raft.CurrentTerm(), nil
	})
}

// dropOverlay forgets the in-flight bookkeeping when leadership is lost: the
// next primary numbers versions from its own store, and this replica's
// unacknowledged proposals fail through their futures.
func (r *Replica) dropOverlay() {
	r.pendingMu.Lock()
	defer r.pendingMu.Unlock()
	r.overlay = make(map[string]*pendingKey)
	r.stats.FastUncommitted.Store(0)
}

// waitApplied blocks until the store has applied index.
func (r *Replica) waitApplied(ctx context.Context, index uint64) error {
	return r.applied.wait(ctx, r.closeCh, func() (bool, error) {
		return r.store.AppliedIndex() >= index, nil
	})
}
