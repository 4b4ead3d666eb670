package wal

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
)

// recover opens every segment, replays it into the index and makes the
// last one active, creating the first segment of an empty directory.
func (w *WAL) recover() error {
	names, err := w.fs.ReadDir(w.dir)
	if err != nil {
		return fmt.Errorf("wal: %w", err)
	}
	var seqs []uint64
	for _, name := range names {
		if strings.HasSuffix(name, tmpSuffix) {
			// A segment whose preparation a crash interrupted: never renamed,
			// so it holds no record.
			if err := w.fs.Remove(filepath.Join(w.dir, name)); err != nil {
				return fmt.Errorf("wal: %w", err)
			}
			continue
		}
		if seq, ok := parseSegmentName(name); ok {
			seqs = append(seqs, seq)
		}
	}
	slices.Sort(seqs)
	var total int64
	for k, seq := range seqs {
		if seq != seqs[0]+uint64(k) {
			return &CorruptionError{Segment: segmentName(seqs[0] + uint64(k)), Reason: fmt.Sprintf("segment missing: found %s after %s", segmentName(seq), segmentName(seqs[k-1]))}
		}
		f, err := w.fs.Open(filepath.Join(w.dir, segmentName(seq)))
		if err != nil {
			return fmt.Errorf("wal: %w", err)
		}
		size, err := f.Size()
		if err != nil {
			f.Close()
			return fmt.Errorf("wal: %w", err)
		}
		w.idx.segs = append(w.idx.segs, newSegment(seq, f, 0, size))
		total += size
	}
	if len(seqs) == 0 {
		seg, err := createSegment(w.fs, w.dir, 1, w.opts.SegmentSize)
		if err != nil {
			return err
		}
		w.idx.segs = append(w.idx.segs, seg)
		w.idx.written = seg.size
		w.active = seg
		return nil
	}

	w.idx.maxHoles = uint64(total / minRecordSize)
	defer func() { w.idx.maxHoles = 0 }()
	var data []byte
	for k, seg := range w.idx.segs {
		if cap(data) < int(seg.fileSize) {
			data = make([]byte, seg.fileSize)
		}
		data = data[:seg.fileSize]
		n, err := seg.f.ReadAt(data, 0)
		if err != nil && err != io.EOF {
			return fmt.Errorf("wal: read %s: %w", seg.name, err)
		}
		data = data[:n]
		if err := w.replay(seg, data, k == len(w.idx.segs)-1); err != nil {
			return err
		}
		w.idx.written += seg.size
	}
	w.recovery.Segments = len(w.idx.segs)
	w.active = w.idx.segs[len(w.idx.segs)-1]
	return w.idx.checkContiguous()
}

// replay applies the batches of one segment and sets its size to the end
// of its valid data. A batch is applied only once all its records are
// intact. Damage is corruption unless it is a torn tail: in the last
// segment with no valid batch record after it; then the log is cut at the
// start of the damaged batch.
func (w *WAL) replay(seg *segment, data []byte, last bool) error {
	if err := checkSegmentHeader(data, seg.seq); err != nil {
		return &CorruptionError{Segment: seg.name, Reason: err.Error()}
	}
	off := segmentHeaderSize
	for {
		end, damage, err := scanBatch(data, off, seg.seq)
		switch {
		case err == nil:
			err := forEachRecord(data[off:end], func(r record, p, n int) error {
				if err := w.idx.apply(r, loc{seq: seg.seq, off: uint32(off + p), n: uint32(n)}, true); err != nil {
					return &CorruptionError{Segment: seg.name, Offset: int64(off + p), Reason: err.Error()}
				}
				w.recovery.Records++
				return nil
			})
			if err != nil {
				return err
			}
			off = end
			continue
		case damage == off && (errors.Is(err, errEnd) || errors.Is(err, errShort)) && allZero(data[off:]):
			seg.size = int64(off)
			return nil
		case errors.Is(err, errEnd):
			err = errors.New("non-zero bytes after the end of data")
		}
		if !last || batchRecordAfter(data, damage+1, seg.seq) {
			return &CorruptionError{Segment: seg.name, Offset: int64(damage), Reason: err.Error()}
		}
		w.recovery.TornSegment = seg.name
		w.recovery.TornOffset = int64(off)
		w.recovery.DroppedBytes = int64(lastNonZero(data[off:]) + 1)
		seg.size = int64(off)
		return w.cutTail(seg)
	}
}

// scanBatch verifies the batch starting at off of segment seq and returns
// its end, or the offset of the first damaged record and what is wrong.
func scanBatch(data []byte, off int, seq uint64) (end, damage int, err error) {
	r, n, err := decodeRecord(data[off:])
	switch {
	case err != nil:
		return 0, off, err
	case r.typ != recBatch:
		return 0, off, errors.New("record outside a batch")
	case r.stream != seq || r.index != uint64(off):
		return 0, off, fmt.Errorf("batch record names segment %d offset %d", r.stream, r.index)
	case off+r.batchLen() > len(data):
		return 0, off, errShort
	}
	end = off + r.batchLen()
	for p := off + n; p < end; p += n {
		if r, n, err = decodeRecord(data[p:end]); err != nil {
			return 0, p, err
		}
		if r.typ == recBatch {
			return 0, p, errors.New("batch record inside a batch")
		}
	}
	return end, 0, nil
}

// cutTail removes everything after seg.size and restores the zeroed
// preallocation, so that the end of data is found there again.
func (w *WAL) cutTail(seg *segment) error {
	err := seg.f.Truncate(seg.size)
	if err == nil {
		err = seg.f.Preallocate(w.opts.SegmentSize)
	}
	if err == nil {
		err = seg.f.Sync()
	}
	if err != nil {
		return fmt.Errorf("wal: cut torn tail of %s: %w", seg.name, err)
	}
	seg.fileSize = max(w.opts.SegmentSize, seg.size)
	return nil
}

// batchRecordAfter reports whether a valid batch record of segment seq
// starts at or after offset from.
func batchRecordAfter(data []byte, from int, seq uint64) bool {
	for p := from; p+batchRecordSize <= len(data); p++ {
		if recordType(data[p+24]) == recBatch && isBatchRecordAt(data, p, seq) {
			return true
		}
	}
	return false
}

var zeroBlock [4096]byte

func allZero(b []byte) bool { return lastNonZero(b) < 0 }

// lastNonZero returns the index of the last non-zero byte of b, or -1.
func lastNonZero(b []byte) int {
	for end := len(b); end > 0; {
		start := max(0, end-len(zeroBlock))
		if !bytes.Equal(b[start:end], zeroBlock[:end-start]) {
			for i := end - 1; ; i-- {
				if b[i] != 0 {
					return i
				}
			}
		}
		end = start
	}
	return -1
}
