package wal

import (
	"encoding/binary"
	"fmt"
	"path/filepath"
)

// compaction copies the live records of one segment, the oldest, to the
// head of the log, a chunk per batch. It reads the segment through a window
// so that the writer never stalls on reading a whole segment.
type compaction struct {
	seg    *segment
	end    int    // end of the segment's written data
	off    int    // next record to examine
	win    []byte // segment bytes from winOff on
	winOff int
}

const compactWindow = 1 << 20

// reclaim runs after every batch: it deletes the oldest segments while they
// hold nothing live, then starts a compaction if the policy asks for one.
func (w *WAL) reclaim() error {
	x := w.idx
	if c := w.compact; c != nil && c.off >= c.end {
		w.compact = nil
		w.compactions.Add(1)
	}
	for len(x.segs) > 1 && x.segs[0] != w.active && x.segs[0].live == 0 {
		if w.compact != nil && w.compact.seg == x.segs[0] {
			w.compact = nil // everything in it died before it was copied
		}
		if err := w.removeOldest(); err != nil {
			return err
		}
	}
	if w.compact != nil || len(x.segs) <= w.opts.CompactSegments || x.segs[0] == w.active ||
		float64(x.live) >= w.opts.CompactLiveRatio*float64(x.written) {
		return nil
	}
	w.compact = &compaction{seg: x.segs[0], end: int(x.segs[0].size), off: segmentHeaderSize}
	return nil
}

// removeOldest deletes the oldest segment and syncs the directory before
// anything else is deleted, so the durable segments stay contiguous.
func (w *WAL) removeOldest() error {
	seg := w.idx.segs[0]
	w.mu.Lock()
	w.idx.segs = w.idx.segs[1:]
	w.idx.written -= seg.size
	w.mu.Unlock()
	if err := w.fs.Remove(filepath.Join(w.dir, seg.name)); err != nil {
		return err
	}
	if err := w.fs.SyncDir(w.dir); err != nil {
		return err
	}
	seg.release()
	w.deleted.Add(1)
	return nil
}

// fill appends copies of the next live records of the segment, about
// budget bytes of them, to buf. A record is copied byte for byte: it names
// its stream and index and not its position, so the copy means the same.
func (c *compaction) fill(buf []byte, x *index, budget int) ([]byte, error) {
	for c.off < c.end && budget > 0 {
		h, err := c.read(4)
		if err != nil {
			return buf, err
		}
		b, err := c.read(recordHeaderSize + int(binary.LittleEndian.Uint32(h)))
		if err != nil {
			return buf, err
		}
		r, n, err := decodeRecord(b)
		if err != nil {
			return buf, &CorruptionError{Segment: c.seg.name, Offset: int64(c.off), Reason: "compaction: " + err.Error()}
		}
		if x.isLive(r, loc{seq: c.seg.seq, off: uint32(c.off), n: uint32(n)}) {
			buf = append(buf, b...)
			budget -= n
		}
		c.off += n
	}
	return buf, nil
}

// read returns the n bytes at c.off, moving the window if they are not in it.
func (c *compaction) read(n int) ([]byte, error) {
	if c.off+n > c.end {
		return nil, &CorruptionError{Segment: c.seg.name, Offset: int64(c.off), Reason: "compaction: record extends past the end of data"}
	}
	if c.off < c.winOff || c.off+n > c.winOff+len(c.win) {
		size := min(max(n, compactWindow), c.end-c.off)
		if cap(c.win) < size {
			c.win = make([]byte, size)
		}
		c.win, c.winOff = c.win[:size], c.off
		if _, err := c.seg.f.ReadAt(c.win, int64(c.off)); err != nil {
			return nil, fmt.Errorf("compaction read %s: %w", c.seg.name, err)
		}
	}
	return c.win[c.off-c.winOff:][:n], nil
}

// isLive reports whether the record at at is the current location of an
// entry or of a stream's latest state for its key.
func (x *index) isLive(r record, at loc) bool {
	st := x.streams[r.stream]
	if st == nil {
		return false
	}
	switch r.typ {
	case recEntry:
		return st.has(r.index) && st.loc(r.index) == at
	case recState:
		key, _, _ := parseState(r.payload)
		sv, ok := st.states[key]
		return ok && sv.at == at
	}
	return false
}
