package shard

import (
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
	res, aerr := r.store.Apply(l.Index, cmd)
	if aerr == nil && err != nil {
		aerr = err
	}
	r.retireOverlay(cmd)
	return applyResult{res: res, err: aerr}
}

// StoreConfiguration consumes a configuration entry's index.
func (a *fsmAdapter) StoreConfiguration(index uint64, _ raft.Configuration) {
	r := (*Replica)(a)
	if _, err := r.store.Apply(index, fsm.Batch{}); err != nil {
		r.log.Debug("configuration entry at or below applied index", "index", index, "error", err)
	}
	r.applied.notify()
}

func (a *fsmAdapter) Snapshot() (raft.FSMSnapshot, error) {
	return fsmSnapshot{snap: a.store.Snapshot(), r: (*Replica)(a)}, nil
}

func (a *fsmAdapter) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	r := (*Replica)(a)
	if err := r.store.Restore(rc); err != nil {
		return err
	}
	r.applied.notify()
	return nil
}

type fsmSnapshot struct {
	snap *fsm.Snapshot
	r    *Replica
}

func (s fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	start := time.Now()
	n, err := s.snap.WriteTo(sink)
	if err != nil {
		sink.Cancel()
		return err
	}
	if err := sink.Close(); err != nil {
		return err
	}
	if fn := s.r.cfg.OnSnapshot; fn != nil {
		fn(SnapshotInfo{Partition: s.r.cfg.Partition, Duration: time.Since(start), Bytes: n})
	}
	return nil
}

func (fsmSnapshot) Release() {}
