package shard

import (
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// observedLogStore lets the replica see its own log being written and cut,
// whatever store holds it (the shared WAL or raft-boltdb):
//   - stored runs once a batch is durable, with the time its write began. On
//     the primary that is the moment a fast write may be acknowledged: raft's
//     leader stores its own entries before it replicates them.
//   - truncated runs with the entries a new leader is about to overwrite,
//     before they are gone, so acknowledged fast writes among them can be
//     re-offered instead of silently dropped.
type observedLogStore struct {
	raft.LogStore
	stored    func(logs []*raft.Log, start time.Time)
	truncated func(logs []*raft.Log) error
}

func (s *observedLogStore) IsMonotonic() bool {
	m, ok := s.LogStore.(raft.MonotonicLogStore)
	return ok && m.IsMonotonic()
}

func (s *observedLogStore) StoreLog(l *raft.Log) error { return s.StoreLogs([]*raft.Log{l}) }

func (s *observedLogStore) StoreLogs(logs []*raft.Log) error {
	start := time.Now()
	if err := s.LogStore.StoreLogs(logs); err != nil {
		return err
	}
	s.stored(logs, start)
	return nil
}

// DeleteRange reports every removal that reaches the last index before
// performing it: raft's conflict path, and the wipe after a snapshot install,
// which can drop entries of a stale term the snapshot does not contain.
// Compaction keeps trailing entries and is not reported. Reporting an entry
// that was in fact committed is harmless: re-offering it is idempotent.
func (s *observedLogStore) DeleteRange(lo, hi uint64) error {
	first, err := s.FirstIndex()
	if err != nil {
		return err
	}
	last, err := s.LastIndex()
	if err != nil {
		return err
	}
	if lo = max(lo, first); last > 0 && lo <= last && hi >= last {
		gone := make([]*raft.Log, 0, last-lo+1)
		for i := lo; i <= last; i++ {
			l := new(raft.Log)
			if err := s.GetLog(i, l); err != nil {
				return fmt.Errorf("read log %d before truncation: %w", i, err)
			}
			gone = append(gone, l)
		}
		if err := s.truncated(gone); err != nil {
			return err
		}
	}
	return s.LogStore.DeleteRange(lo, hi)
}
