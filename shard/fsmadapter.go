package shard

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ringkv/ringkv/fsm"
)

// fsmAdapter is the Replica seen by raft as its state machine. Every entry
// raft hands it advances the store's applied index — commands, term markers
// and configuration changes alike — so that "applied ≥ commit index" is a
// condition a quorum read can wait for.
type fsmAdapter Replica

var (
	_ raft.FSM                = (*fsmAdapter)(nil)
	_ raft.ConfigurationStore = (*fsmAdapter)(nil)
)

// applyResult is what a command's future carries back to the proposer.
type applyResult struct {
	res fsm.Result
	err error
}

func (a *fsmAdapter) Apply(l *raft.Log) interface{} {
	r := (*Replica)(a)
	defer r.applied.notify()
	_, cmd, err := decodeEntry(l.Data)
	if err != nil {
		// Deterministic on every replica: the index is consumed, nothing changes.
		r.log.Error("undecodable log entry", "index", l.Index, "error", err)
		cmd = fsm.Batch{}
	}
	res, replayed, aerr := r.applyEntry(l.Index, cmd)
	if sp, ok := cmd.(fsm.Split); ok && (aerr == nil || replayed) && r.cfg.OnSplit != nil {
		r.cfg.OnSplit(sp.Child, !replayed && r.IsPrimary())
	}
	if replayed {
		return applyResult{err: aerr}
	}
	if aerr == nil && err != nil {
		aerr = err
	}
	r.retireOverlay(cmd)
	return applyResult{res: res, err: aerr}
}

// StoreConfiguration consumes a configuration entry's index.
func (a *fsmAdapter) StoreConfiguration(index uint64, _ raft.Configuration) {
	r := (*Replica)(a)
	r.applyEntry(index, fsm.Batch{})
	r.applied.notify()
}

// applyEntry applies cmd as the entry at index. replayed reports an entry
// at or below the store's applied index: Raft replays, after a restart, the
// entries after its latest snapshot, the engine already holds them, and no
// proposer waits for them. An engine failure panics: the entry is not
// applied, and going on would leave this replica's state behind its log for
// good; the process stops, and Raft replays the entry when it restarts.
func (r *Replica) applyEntry(index uint64, cmd fsm.Command) (res fsm.Result, replayed bool, err error) {
	res, err = r.store.Apply(index, cmd)
	if errors.Is(err, fsm.ErrEngine) {
		r.log.Error("storage engine failed; stopping", "index", index, "error", err)
		panic(fmt.Sprintf("partition %d: entry %d: %v", r.cfg.Partition, index, err))
	}
	return res, errors.Is(err, fsm.ErrStaleIndex), err
}

// Snapshot records the applied index; Persist makes the engine durable up
// to it and writes the marker (see snapshots.go). It runs on raft's FSM
// goroutine, between two Applies, so the index is raft's.
func (a *fsmAdapter) Snapshot() (raft.FSMSnapshot, error) {
	return fsmSnapshot{applied: a.store.AppliedIndex(), r: (*Replica)(a)}, nil
}

func (a *fsmAdapter) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	r := (*Replica)(a)
	if err := r.store.Restore(rc); err != nil {
		return err
	}
	r.stats.SnapshotsInstalled.Add(1)
	r.applied.notify()
	return nil
}

type fsmSnapshot struct {
	applied uint64
	r       *Replica
}

func (s fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	start := time.Now()
	if err := s.r.cfg.Engine.Flush(); err != nil {
		sink.Cancel()
		return fmt.Errorf("partition %d: flushing the engine for a snapshot: %w", s.r.cfg.Partition, err)
	}
	marker := encodeMarker(s.applied)
	if _, err := sink.Write(marker); err != nil {
		sink.Cancel()
		return err
	}
	if err := sink.Close(); err != nil {
		return err
	}
	if fn := s.r.cfg.OnSnapshot; fn != nil {
		fn(SnapshotInfo{Partition: s.r.cfg.Partition, Duration: time.Since(start), Bytes: int64(len(marker))})
	}
	return nil
}

func (fsmSnapshot) Release() {}
