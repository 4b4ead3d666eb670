package fsm

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// Snapshot stream, format 1. Integers are big-endian; every CRC is CRC-32C.
//
//	header  = "RKVS" format(u16) reserved(u16, 0) appliedIndex(u64)
//	          records(u64) crc(u32 over the preceding 24 bytes)
//	chunk   = payloadLen(u32) records(u32) payload crc(u32 over the three)
//	          where payload is that many records (see command.go) in strictly
//	          ascending key order, continuing across chunks
//	end     = payloadLen(u32 0) records(u32 0)
//	trailer = records(u64) payloadBytes(u64) crc(u32 over the two)
//
// then end of stream. The reader checks every CRC, the key order, the limits,
// and that header, chunks and trailer agree on the totals, so truncation,
// a lost, repeated or reordered chunk, and flipped bits are all caught.
const (
	snapshotMagic  = "RKVS"
	snapshotFormat = 1

	headerLen      = 4 + 2 + 2 + 8 + 8
	chunkHeaderLen = 4 + 4
	trailerLen     = 8 + 8
	crcLen         = 4

	// chunkTarget is the payload size at which a chunk is cut: large enough
	// to amortize the per-chunk overhead, small enough to buffer cheaply.
	chunkTarget = 64 << 10
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// ErrCorruptSnapshot reports a snapshot stream that fails verification:
// truncated, bit-flipped, misordered or inconsistent.
var ErrCorruptSnapshot = errors.New("fsm: corrupt snapshot")

// ErrSnapshotFormat reports a well-formed snapshot header naming a format
// this build cannot read.
var ErrSnapshotFormat = errors.New("fsm: unsupported snapshot format")

// countingWriter remembers the first write error and stops writing after it.
type countingWriter struct {
	w   io.Writer
	n   int64
	err error
}

func (cw *countingWriter) write(b []byte) {
	if cw.err != nil {
		return
	}
	n, err := cw.w.Write(b)
	cw.n += int64(n)
	cw.err = err
}

// writeSealed writes b followed by its CRC; b must have crcLen bytes of
// spare capacity or it is reallocated.
func (cw *countingWriter) writeSealed(b []byte) {
	cw.write(binary.BigEndian.AppendUint32(b, crc32.Checksum(b, crcTable)))
}

// WriteTo streams the snapshot in the format above. It reads only the
// immutable view, so writers carry on meanwhile.
func (s *Snapshot) WriteTo(w io.Writer) (int64, error) {
	cw := &countingWriter{w: w}
	hdr := make([]byte, 0, headerLen+crcLen)
	hdr = append(hdr, snapshotMagic...)
	hdr = binary.BigEndian.AppendUint16(hdr, snapshotFormat)
	hdr = binary.BigEndian.AppendUint16(hdr, 0)
	hdr = binary.BigEndian.AppendUint64(hdr, s.applied)
	hdr = binary.BigEndian.AppendUint64(hdr, uint64(s.tree.Len()))
	cw.writeSealed(hdr)

	var records, payloadBytes uint64
	chunk := make([]byte, chunkHeaderLen, chunkHeaderLen+2*chunkTarget)
	var n uint32
	flush := func() {
		payload := len(chunk) - chunkHeaderLen
		binary.BigEndian.PutUint32(chunk, uint32(payload))
		binary.BigEndian.PutUint32(chunk[4:], n)
		cw.writeSealed(chunk)
		records += uint64(n)
		payloadBytes += uint64(payload)
		chunk, n = chunk[:chunkHeaderLen], 0
	}
	s.tree.Ascend(func(it item) bool {
		chunk = appendRecord(chunk, it.key, it.e.value(), it.e.stamp, it.e.tombstone)
		if n++; len(chunk)-chunkHeaderLen >= chunkTarget {
			flush()
		}
		return cw.err == nil
	})
	if n > 0 {
		flush()
	}
	cw.write(make([]byte, chunkHeaderLen))
	trailer := make([]byte, 0, trailerLen+crcLen)
	trailer = binary.BigEndian.AppendUint64(trailer, records)
	trailer = binary.BigEndian.AppendUint64(trailer, payloadBytes)
	cw.writeSealed(trailer)
	if cw.err != nil {
		return cw.n, fmt.Errorf("fsm: writing snapshot: %w", cw.err)
	}
	return cw.n, nil
}

// Restore replaces the store's contents and applied index with the snapshot
// read from r. The whole stream is verified before anything changes; on any
// error the store is left exactly as it was. Corruption and truncation wrap
// ErrCorruptSnapshot, an unknown format ErrSnapshotFormat, a key or value
// beyond this store's limits a *LimitError.
func (s *Store) Restore(r io.Reader) error {
	w, err := s.cfg.readSnapshot(r)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.install(w)
	return nil
}

// snapshotReader reads exact-length pieces of a snapshot stream, tracking the
// offset for error messages.
type snapshotReader struct {
	r   *bufio.Reader
	off int64
	buf []byte
}

func corruptf(off int64, format string, args ...any) error {
	return fmt.Errorf("%w: at byte %d: %s", ErrCorruptSnapshot, off, fmt.Sprintf(format, args...))
}

// read returns the next n bytes, valid until the following read.
func (sr *snapshotReader) read(n int, what string) ([]byte, error) {
	if cap(sr.buf) < n {
		sr.buf = make([]byte, n)
	}
	b := sr.buf[:n]
	got, err := io.ReadFull(sr.r, b)
	off := sr.off
	sr.off += int64(got)
	switch {
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return nil, fmt.Errorf("%w: at byte %d: truncated %s: %w", ErrCorruptSnapshot, off, what, io.ErrUnexpectedEOF)
	case err != nil:
		return nil, fmt.Errorf("fsm: reading snapshot %s at byte %d: %w", what, off, err)
	}
	return b, nil
}

// readSealed returns the next n bytes after checking the CRC that follows
// them; prefix, already read, is covered by the CRC too.
func (sr *snapshotReader) readSealed(prefix []byte, n int, what string) ([]byte, error) {
	start := sr.off
	b, err := sr.read(n+crcLen, what)
	if err != nil {
		return nil, err
	}
	want := binary.BigEndian.Uint32(b[n:])
	if got := crc32.Update(crc32.Checksum(prefix, crcTable), crcTable, b[:n]); got != want {
		return nil, corruptf(start, "%s checksum %08x, stored %08x", what, got, want)
	}
	return b[:n], nil
}

// readSnapshot parses and verifies a whole snapshot stream into a fresh
// writer state.
func (l config) readSnapshot(r io.Reader) (state, error) {
	sr := &snapshotReader{r: bufio.NewReaderSize(r, chunkTarget)}
	w := newState()

	hdr, err := sr.readSealed(nil, headerLen, "header")
	if err != nil {
		return state{}, err
	}
	if magic := hdr[:4]; string(magic) != snapshotMagic {
		return state{}, corruptf(0, "magic %q, want %q", magic, snapshotMagic)
	}
	if f := binary.BigEndian.Uint16(hdr[4:]); f != snapshotFormat {
		return state{}, fmt.Errorf("%w: format %d, this build reads %d", ErrSnapshotFormat, f, snapshotFormat)
	}
	if reserved := binary.BigEndian.Uint16(hdr[6:]); reserved != 0 {
		return state{}, corruptf(6, "reserved header field is %d, want 0", reserved)
	}
	w.applied = binary.BigEndian.Uint64(hdr[8:])
	want := binary.BigEndian.Uint64(hdr[16:])

	// A chunk is cut once its payload reaches chunkTarget, so it can exceed
	// that by at most one record of the largest size the limits allow.
	maxPayload := chunkTarget + 1 + 3*binary.MaxVarintLen64 + 12 + l.maxKey + l.maxValue
	var records, payloadBytes uint64
	var prev []byte
	for {
		start := sr.off
		ch, err := sr.read(chunkHeaderLen, "chunk header")
		if err != nil {
			return state{}, err
		}
		plen, n := int(binary.BigEndian.Uint32(ch)), int(binary.BigEndian.Uint32(ch[4:]))
		if plen == 0 && n == 0 {
			break
		}
		switch {
		case plen > maxPayload:
			return state{}, corruptf(start, "chunk payload of %d bytes exceeds the %d the limits allow", plen, maxPayload)
		case n == 0 || n > plen/minRecordLen:
			return state{}, corruptf(start, "chunk claims %d records in %d bytes", n, plen)
		}
		hdrCopy := [chunkHeaderLen]byte(ch)
		payload, err := sr.readSealed(hdrCopy[:], plen, "chunk")
		if err != nil {
			return state{}, err
		}
		d := decoder{b: payload, base: start + chunkHeaderLen, sentinel: ErrCorruptSnapshot}
		for range n {
			recStart := d.base + int64(d.off)
			kind := d.byte("record kind")
			if d.err == nil && kind != opPut && kind != opDelete {
				d.failf("record kind %d is not put or delete", kind)
			}
			st, key, value := d.recordBody(kind == opDelete)
			if d.err != nil {
				return state{}, d.err
			}
			wr := write{key: key, value: value, stamp: st, tombstone: kind == opDelete}
			if err := l.write(wr); err != nil {
				return state{}, fmt.Errorf("fsm: snapshot record at byte %d: %w", recStart, prefixField(err, fmt.Sprintf("records[%d]", records)))
			}
			if prev != nil && bytes.Compare(prev, key) >= 0 {
				return state{}, corruptf(recStart, "key %q does not sort after the previous key %q", key, prev)
			}
			it := newItem(wr)
			w.insert(it)
			prev = it.key
			records++
		}
		if d.off != len(payload) {
			return state{}, corruptf(d.base+int64(d.off), "%d bytes after the chunk's %d records", len(payload)-d.off, n)
		}
		payloadBytes += uint64(plen)
	}

	start := sr.off
	tr, err := sr.readSealed(nil, trailerLen, "trailer")
	if err != nil {
		return state{}, err
	}
	if tRecords, tBytes := binary.BigEndian.Uint64(tr), binary.BigEndian.Uint64(tr[8:]); tRecords != records || tBytes != payloadBytes || want != records {
		return state{}, corruptf(start, "header claims %d records, trailer %d records in %d bytes, stream holds %d in %d",
			want, tRecords, tBytes, records, payloadBytes)
	}
	switch _, err := sr.r.ReadByte(); {
	case err == nil:
		return state{}, corruptf(sr.off, "data after the trailer")
	case !errors.Is(err, io.EOF):
		return state{}, fmt.Errorf("fsm: reading snapshot end at byte %d: %w", sr.off, err)
	}
	return w, nil
}
