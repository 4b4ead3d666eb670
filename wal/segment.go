package wal

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
)

const (
	segmentSuffix = ".wal"
	tmpSuffix     = ".wal.tmp"
)

// segment is one open segment file. refs counts the WAL's own reference
// plus in-flight readers; the file is closed when it drops to zero, so a
// reader never sees a file closed under it.
type segment struct {
	seq  uint64
	name string // base name
	f    File
	refs atomic.Int32

	// Guarded by WAL.mu; written only by the writer goroutine.
	size     int64 // end of written data: where the next batch goes
	fileSize int64 // bytes on disk, including preallocation
	live     int64 // encoded bytes of live records
}

func segmentName(seq uint64) string { return fmt.Sprintf("%020d%s", seq, segmentSuffix) }

// parseSegmentName returns the sequence number of a segment file name.
func parseSegmentName(name string) (uint64, bool) {
	digits, ok := strings.CutSuffix(name, segmentSuffix)
	if !ok || len(digits) != 20 {
		return 0, false
	}
	seq, err := strconv.ParseUint(digits, 10, 64)
	return seq, err == nil && seq > 0
}

func newSegment(seq uint64, f File, size, fileSize int64) *segment {
	s := &segment{seq: seq, name: segmentName(seq), f: f, size: size, fileSize: fileSize}
	s.refs.Store(1)
	return s
}

func (s *segment) acquire() { s.refs.Add(1) }

func (s *segment) release() {
	if s.refs.Add(-1) == 0 {
		s.f.Close()
	}
}

// readEntry reads and verifies the entry record at at, which must be the
// entry index of stream: anything else means the file changed under the
// index, which is corruption.
func (s *segment) readEntry(at loc, stream, index uint64) ([]byte, error) {
	buf := make([]byte, at.n)
	if _, err := s.f.ReadAt(buf, int64(at.off)); err != nil {
		return nil, fmt.Errorf("wal: read %s at %d: %w", s.name, at.off, err)
	}
	r, n, err := decodeRecord(buf)
	if err == nil && (n != len(buf) || r.typ != recEntry || r.stream != stream || r.index != index) {
		err = fmt.Errorf("record is not stream %d index %d", stream, index)
	}
	if err != nil {
		return nil, &CorruptionError{Segment: s.name, Offset: int64(at.off), Reason: err.Error()}
	}
	return r.payload, nil
}

// createSegment makes segment seq durable under its final name: written to
// a temporary name with its header, preallocated and synced, then renamed
// and the directory synced, so that a file with a segment name always has a
// valid header.
func createSegment(fsys FS, dir string, seq uint64, size int64) (*segment, error) {
	name := segmentName(seq)
	tmp := filepath.Join(dir, strings.TrimSuffix(name, segmentSuffix)+tmpSuffix)
	f, err := fsys.Create(tmp)
	if err != nil {
		return nil, err
	}
	err = initSegment(f, seq, size)
	if err == nil {
		err = fsys.Rename(tmp, filepath.Join(dir, name))
	}
	if err == nil {
		err = fsys.SyncDir(dir)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("wal: create segment %s: %w", name, err)
	}
	return newSegment(seq, f, segmentHeaderSize, max(size, segmentHeaderSize)), nil
}

func initSegment(f File, seq uint64, size int64) error {
	if _, err := f.WriteAt(appendSegmentHeader(nil, seq), 0); err != nil {
		return err
	}
	if err := f.Preallocate(size); err != nil {
		return err
	}
	return f.Sync()
}
