// Package raftwal keeps a Raft group's log and stable state in one stream of
// a node's shared WAL, so that every group on a node shares the WAL's group
// commit: one fdatasync serves the appends of all of them.
//
// Invariants: the stream's indexes are contiguous (Store is a
// raft.MonotonicLogStore, so raft clears the log after a snapshot install
// rather than leaving a gap), and every append and state change is durable
// when its call returns.
package raftwal

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ringkv/ringkv/internal/lenprefix"
	"github.com/ringkv/ringkv/wal"
)

// Store is one group's Raft log and stable state. It implements
// raft.LogStore, raft.StableStore and raft.MonotonicLogStore.
type Store struct {
	w      *wal.WAL
	stream uint64
	// timeout bounds a WAL call raft makes without a context of its own.
	timeout time.Duration
}

// New returns the store of stream in w. A WAL call raft makes without a
// context of its own is bounded by timeout.
func New(w *wal.WAL, stream uint64, timeout time.Duration) *Store {
	return &Store{w: w, stream: stream, timeout: timeout}
}

var (
	_ raft.LogStore          = (*Store)(nil)
	_ raft.StableStore       = (*Store)(nil)
	_ raft.MonotonicLogStore = (*Store)(nil)
)

func (s *Store) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), s.timeout)
}

func (s *Store) IsMonotonic() bool { return true }

func (s *Store) FirstIndex() (uint64, error) { return s.w.FirstIndex(s.stream), nil }

func (s *Store) LastIndex() (uint64, error) { return s.w.LastIndex(s.stream), nil }

func (s *Store) GetLog(index uint64, l *raft.Log) error {
	data, err := s.w.Get(s.stream, index)
	if errors.Is(err, wal.ErrNotFound) {
		return raft.ErrLogNotFound
	}
	if err != nil {
		return err
	}
	return decodeLog(index, data, l)
}

func (s *Store) StoreLog(l *raft.Log) error { return s.StoreLogs([]*raft.Log{l}) }

func (s *Store) StoreLogs(logs []*raft.Log) error {
	if len(logs) == 0 {
		return nil
	}
	entries := make([]wal.Entry, len(logs))
	for i, l := range logs {
		entries[i] = wal.Entry{Stream: s.stream, Index: l.Index, Data: encodeLog(l)}
	}
	ctx, cancel := s.ctx()
	defer cancel()
	if err := s.w.Append(ctx, entries...); err != nil {
		return fmt.Errorf("store logs %d-%d: %w", logs[0].Index, logs[len(logs)-1].Index, err)
	}
	return nil
}

// DeleteRange serves both of raft's uses: compaction removes a prefix, a
// conflicting leader removes a suffix, and removeOldLogs after a snapshot
// install removes everything.
func (s *Store) DeleteRange(lo, hi uint64) error {
	ctx, cancel := s.ctx()
	defer cancel()
	first, last := s.w.FirstIndex(s.stream), s.w.LastIndex(s.stream)
	switch {
	case last == 0 || hi < first || lo > last:
		return nil
	case lo <= first:
		return s.w.TruncatePrefix(ctx, s.stream, min(hi, last))
	case hi >= last:
		return s.w.TruncateSuffix(ctx, s.stream, lo)
	default:
		return fmt.Errorf("delete range %d-%d of log %d-%d: a hole in the middle is not supported", lo, hi, first, last)
	}
}

func (s *Store) Set(key, val []byte) error {
	ctx, cancel := s.ctx()
	defer cancel()
	return s.w.SetState(ctx, s.stream, string(key), val)
}

// Get returns an empty slice for a missing key, as raft.StableStore asks.
func (s *Store) Get(key []byte) ([]byte, error) {
	v, _ := s.w.State(s.stream, string(key))
	return v, nil
}

func (s *Store) SetUint64(key []byte, val uint64) error {
	return s.Set(key, binary.BigEndian.AppendUint64(nil, val))
}

func (s *Store) GetUint64(key []byte) (uint64, error) {
	v, _ := s.w.State(s.stream, string(key))
	switch len(v) {
	case 0:
		return 0, nil
	case 8:
		return binary.BigEndian.Uint64(v), nil
	default:
		return 0, fmt.Errorf("stable key %q: %d bytes, want 8: %w", key, len(v), wal.ErrCorrupt)
	}
}

// A log's payload in the WAL: term, type, appended-at (unix nanos), then
// data and extensions, each length-prefixed. The index is the WAL entry's.
func encodeLog(l *raft.Log) []byte {
	b := make([]byte, 0, 4*binary.MaxVarintLen64+1+len(l.Data)+len(l.Extensions))
	b = binary.AppendUvarint(b, l.Term)
	b = append(b, byte(l.Type))
	var at int64
	if !l.AppendedAt.IsZero() {
		at = l.AppendedAt.UnixNano()
	}
	b = binary.AppendVarint(b, at)
	b = lenprefix.Append(b, l.Data)
	return lenprefix.Append(b, l.Extensions)
}

var errBadLog = errors.New("malformed raft log payload")

func decodeLog(index uint64, b []byte, l *raft.Log) error {
	bad := func(what string) error {
		return fmt.Errorf("log %d: %s: %w", index, what, errBadLog)
	}
	term, n := binary.Uvarint(b)
	if n <= 0 || len(b) < n+1 {
		return bad("term")
	}
	b = b[n:]
	typ := raft.LogType(b[0])
	b = b[1:]
	at, n := binary.Varint(b)
	if n <= 0 {
		return bad("appended-at")
	}
	b = b[n:]
	data, b, ok := lenprefix.Cut(b)
	if !ok {
		return bad("data")
	}
	ext, b, ok := lenprefix.Cut(b)
	if !ok || len(b) != 0 {
		return bad("extensions")
	}
	*l = raft.Log{Index: index, Term: term, Type: typ, Data: data, Extensions: ext}
	if at != 0 {
		l.AppendedAt = time.Unix(0, at)
	}
	return nil
}
