package shard

import (
	"time"

	"github.com/hashicorp/raft"
)

// observedLogStore lets the replica see its own log being written, whatever
// store holds it (the shared WAL or raft-boltdb): stored runs once a batch
// is durable, with the time its write began, so that a traced write's log
// store becomes a span of it.
type observedLogStore struct {
	raft.LogStore
	stored func(logs []*raft.Log, start time.Time)
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
