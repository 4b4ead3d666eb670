package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

type recordType uint8

const (
	recBatch          recordType = 1
	recEntry          recordType = 2
	recTruncateSuffix recordType = 3
	recTruncatePrefix recordType = 4
	recState          recordType = 5
	recDeleteStream   recordType = 6
)

const (
	recordHeaderSize = 8  // length + CRC
	recordFixedBody  = 17 // stream + index + type
	minRecordSize    = recordHeaderSize + recordFixedBody
	maxRecordBody    = recordFixedBody + maxEntryLimit // no valid record is longer
	batchRecordSize  = minRecordSize + 4               // payload: length of the batch

	segmentHeaderSize = 24
	segmentVersion    = 1
	segmentMagic      = "ringkvWL"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// record is one decoded record; payload aliases the buffer it was decoded from.
type record struct {
	typ     recordType
	stream  uint64
	index   uint64
	payload []byte
}

// Reasons a record fails to decode. errEnd is not damage: a zero length
// field marks the end of written data in a preallocated segment.
var (
	errEnd       = errors.New("end of data")
	errShort     = errors.New("record extends past end of file")
	errLength    = errors.New("invalid record length")
	errChecksum  = errors.New("checksum mismatch")
	errType      = errors.New("unknown record type")
	errFields    = errors.New("invalid record fields")
	errStateBody = errors.New("invalid set-state payload")
)

// beginRecord appends the fixed part of a record whose length and CRC are
// filled in by endRecord once the payload has been appended after it.
func beginRecord(dst []byte, typ recordType, stream, index uint64) ([]byte, int) {
	start := len(dst)
	dst = append(dst, make([]byte, recordHeaderSize)...)
	dst = binary.LittleEndian.AppendUint64(dst, stream)
	dst = binary.LittleEndian.AppendUint64(dst, index)
	return append(dst, byte(typ)), start
}

func endRecord(dst []byte, start int) {
	body := dst[start+recordHeaderSize:]
	binary.LittleEndian.PutUint32(dst[start:], uint32(len(body)))
	binary.LittleEndian.PutUint32(dst[start+4:], crc32.Checksum(body, castagnoli))
}

// appendRecord appends a complete record whose payload is one slice.
func appendRecord(dst []byte, typ recordType, stream, index uint64, payload []byte) []byte {
	dst, start := beginRecord(dst, typ, stream, index)
	dst = append(dst, payload...)
	endRecord(dst, start)
	return dst
}

func appendState(dst []byte, stream uint64, key string, value []byte) []byte {
	dst, start := beginRecord(dst, recState, stream, 0)
	dst = append(dst, byte(len(key)))
	dst = append(dst, key...)
	dst = append(dst, value...)
	endRecord(dst, start)
	return dst
}

// parseState splits a set-state payload into key and value (aliasing it).
func parseState(p []byte) (string, []byte, error) {
	if len(p) < 1 || p[0] == 0 || len(p) < 1+int(p[0]) {
		return "", nil, errStateBody
	}
	n := 1 + int(p[0])
	return string(p[1:n]), p[n:], nil
}

// decodeRecord decodes and verifies the record at the start of b, returning
// it and its encoded size. It never returns a record that fails its checksum
// or whose fields are inconsistent with its type.
func decodeRecord(b []byte) (record, int, error) {
	if len(b) < 4 {
		return record{}, 0, errShort
	}
	length := binary.LittleEndian.Uint32(b)
	if length == 0 {
		return record{}, 0, errEnd
	}
	if length < recordFixedBody || length > maxRecordBody {
		return record{}, 0, fmt.Errorf("%w %d", errLength, length)
	}
	n := recordHeaderSize + int(length)
	if len(b) < n {
		return record{}, 0, errShort
	}
	if crc32.Checksum(b[recordHeaderSize:n], castagnoli) != binary.LittleEndian.Uint32(b[4:]) {
		return record{}, 0, errChecksum
	}
	r := parseRecord(b[:n])
	if err := r.check(); err != nil {
		return record{}, 0, err
	}
	return r, n, nil
}

// parseRecord reads the fields of a record already known to be valid.
func parseRecord(b []byte) record {
	return record{
		stream:  binary.LittleEndian.Uint64(b[8:]),
		index:   binary.LittleEndian.Uint64(b[16:]),
		typ:     recordType(b[24]),
		payload: b[minRecordSize:],
	}
}

func (r record) check() error {
	switch r.typ {
	case recEntry:
		if r.index == 0 {
			return errFields
		}
	case recTruncateSuffix, recTruncatePrefix:
		if r.index == 0 || len(r.payload) != 0 {
			return errFields
		}
	case recBatch:
		if len(r.payload) != 4 || r.batchLen() < batchRecordSize {
			return errFields
		}
	case recDeleteStream:
		if r.index != 0 || len(r.payload) != 0 {
			return errFields
		}
	case recState:
		if r.index != 0 {
			return errFields
		}
		_, _, err := parseState(r.payload)
		return err
	default:
		return fmt.Errorf("%w %d", errType, r.typ)
	}
	return nil
}

// isBatchRecordAt reports whether b[off:] holds a valid batch record written
// at offset off of segment seq. The embedded position makes a false match on
// stale or payload bytes practically impossible.
func isBatchRecordAt(b []byte, off int, seq uint64) bool {
	if off+batchRecordSize > len(b) {
		return false
	}
	r := b[off : off+batchRecordSize]
	if recordType(r[24]) != recBatch ||
		binary.LittleEndian.Uint32(r) != recordFixedBody+4 ||
		binary.LittleEndian.Uint64(r[16:]) != uint64(off) ||
		binary.LittleEndian.Uint64(r[8:]) != seq {
		return false
	}
	return crc32.Checksum(r[recordHeaderSize:], castagnoli) == binary.LittleEndian.Uint32(r[4:])
}

// putBatchRecord makes b, whose first batchRecordSize bytes are reserved,
// a batch to be written at offset off of segment seq.
func putBatchRecord(b []byte, seq uint64, off int64) {
	appendRecord(b[:0], recBatch, seq, uint64(off), binary.LittleEndian.AppendUint32(nil, uint32(len(b))))
}

// forEachRecord calls fn with each record of batch, a verified batch
// starting with its batch record, and the record's offset in batch.
func forEachRecord(batch []byte, fn func(r record, off, n int) error) error {
	for p := batchRecordSize; p < len(batch); {
		n := recordHeaderSize + int(binary.LittleEndian.Uint32(batch[p:]))
		if err := fn(parseRecord(batch[p:p+n]), p, n); err != nil {
			return err
		}
		p += n
	}
	return nil
}

// batchLen is the length of the batch a batch record starts, itself included.
func (r record) batchLen() int { return int(binary.LittleEndian.Uint32(r.payload)) }

func appendSegmentHeader(dst []byte, seq uint64) []byte {
	start := len(dst)
	dst = append(dst, segmentMagic...)
	dst = binary.LittleEndian.AppendUint32(dst, segmentVersion)
	dst = binary.LittleEndian.AppendUint64(dst, seq)
	return binary.LittleEndian.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli))
}

// checkSegmentHeader verifies that b starts with the header of segment seq.
func checkSegmentHeader(b []byte, seq uint64) error {
	if len(b) < segmentHeaderSize {
		return errors.New("file shorter than a segment header")
	}
	if string(b[:8]) != segmentMagic {
		return errors.New("bad magic: not a ringkv WAL segment")
	}
	if crc32.Checksum(b[:20], castagnoli) != binary.LittleEndian.Uint32(b[20:]) {
		return errors.New("segment header checksum mismatch")
	}
	if v := binary.LittleEndian.Uint32(b[8:]); v != segmentVersion {
		return fmt.Errorf("unsupported format version %d (want %d)", v, segmentVersion)
	}
	if s := binary.LittleEndian.Uint64(b[12:]); s != seq {
		return fmt.Errorf("header names segment %d, file name says %d", s, seq)
	}
	return nil
}
