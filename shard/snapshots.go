package shard

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/hashicorp/raft"

	"github.com/ringkv/ringkv/fsm"
)

// A replica's state machine lives in the node's storage engine, so a Raft
// snapshot of it need not copy it: taking one makes the engine durable up
// to the applied index (after which Raft may truncate its log) and records
// a marker naming that index. Only when a follower needs the snapshot does
// engineSnapshots.Open turn a marker into data: a stream read from a
// consistent engine view of the partition as it is then, at an applied
// index at or after the marker's — the receiver takes its applied index
// from the stream, and skips the entries Raft then replays at or below it.
// This is how Vault's integrated storage pairs its persistent FSM with its
// snapshot store.
//
// A snapshot received from a leader is kept as the stream itself, which
// raft hands to Restore and which Open serves as it is.
//
// marker: "RKVM" | applied index (8) | CRC-32C of the 12 bytes before (4)
const (
	markerMagic = "RKVM"
	markerLen   = 4 + 8 + 4
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func encodeMarker(applied uint64) []byte {
	b := binary.BigEndian.AppendUint64([]byte(markerMagic), applied)
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// decodeMarker reads a marker; ok is false if b is not one (a stream).
func decodeMarker(b []byte) (applied uint64, ok bool, err error) {
	if len(b) < 4 || string(b[:4]) != markerMagic {
		return 0, false, nil
	}
	if len(b) != markerLen || binary.BigEndian.Uint32(b[12:]) != crc32.Checksum(b[:12], castagnoli) {
		return 0, true, fmt.Errorf("%w: snapshot marker of %d bytes fails its checksum", fsm.ErrEngine, len(b))
	}
	return binary.BigEndian.Uint64(b[4:12]), true, nil
}

// engineSnapshots is the replica's raft.SnapshotStore: files as raft's own
// store keeps them, whose Open streams a marker's partition from the
// engine.
type engineSnapshots struct {
	raft.SnapshotStore
	store *fsm.Store
	// dir is the directory raft.FileSnapshotStore keeps its snapshots in.
	dir string
}

func (s *engineSnapshots) Open(id string) (*raft.SnapshotMeta, io.ReadCloser, error) {
	meta, rc, err := s.SnapshotStore.Open(id)
	if err != nil {
		return nil, nil, err
	}
	br := bufio.NewReader(rc)
	head, err := br.Peek(markerLen)
	if err != nil && !errors.Is(err, io.EOF) {
		rc.Close()
		return nil, nil, err
	}
	applied, isMarker, err := decodeMarker(head)
	if err != nil || !isMarker {
		if err != nil {
			rc.Close()
			return nil, nil, err
		}
		return meta, readCloser{br, rc}, nil
	}
	rc.Close()
	snap := s.store.Snapshot()
	if at := snap.AppliedIndex(); at < applied {
		snap.Close()
		return nil, nil, fmt.Errorf("%w: snapshot %s marks applied index %d, the engine holds %d", fsm.ErrEngine, id, applied, at)
	}
	// raft announces the stream's size before it sends it. The view does
	// not change, so the stream that follows is the size measured.
	size, err := snap.StreamSize()
	if err != nil {
		snap.Close()
		return nil, nil, err
	}
	m := *meta
	m.Size = size
	pr, pw := io.Pipe()
	go func() {
		defer snap.Close()
		_, err := snap.WriteTo(pw)
		pw.CloseWithError(err)
	}()
	return &m, pr, nil
}

func (s *engineSnapshots) dropPartial() error {
	entries, err := os.ReadDir(s.dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	for _, e := range entries {
		if e.IsDir() && strings.HasSuffix(e.Name(), ".tmp") {
			if err := os.RemoveAll(filepath.Join(s.dir, e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

type readCloser struct {
	io.Reader
	io.Closer
}

// recover brings the store level with the latest snapshot before raft
// starts (raft is told not to restore one: the engine already holds the
// state). The engine can only be behind a snapshot received from a leader
// whose ingestion a crash cut short; that snapshot is a stream, restored
// here. Behind a marker it cannot be, since a marker is written only once
// the engine is durable up to it: that is data loss, reported.
//
// It also deletes what a crash left of snapshots being received or taken:
// raft's file store skips such a directory (suffix ".tmp") on every List,
// with a warning, but never removes it, and each can be a partition's size.
func (s *engineSnapshots) recover() error {
	if err := s.dropPartial(); err != nil {
		return err
	}
	metas, err := s.SnapshotStore.List()
	if err != nil || len(metas) == 0 {
		return err
	}
	latest := metas[0]
	if s.store.AppliedIndex() >= latest.Index {
		return nil
	}
	_, rc, err := s.SnapshotStore.Open(latest.ID)
	if err != nil {
		return err
	}
	defer rc.Close()
	br := bufio.NewReader(rc)
	head, _ := br.Peek(markerLen)
	if _, isMarker, _ := decodeMarker(head); isMarker {
		return fmt.Errorf("%w: the engine's applied index %d is behind snapshot %s at %d, which holds no data: the engine lost writes it had made durable",
			fsm.ErrEngine, s.store.AppliedIndex(), latest.ID, latest.Index)
	}
	return s.store.Restore(br)
}
