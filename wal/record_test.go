package wal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"strings"
	"testing"
)

func TestRecordRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		enc  []byte
		want record
	}{
		{"entry", appendRecord(nil, recEntry, 7, 42, []byte("data")), record{recEntry, 7, 42, []byte("data")}},
		{"empty entry", appendRecord(nil, recEntry, 1<<63, 1, nil), record{recEntry, 1 << 63, 1, []byte{}}},
		{"truncate-suffix", appendRecord(nil, recTruncateSuffix, 3, 9, nil), record{recTruncateSuffix, 3, 9, []byte{}}},
		{"truncate-prefix", appendRecord(nil, recTruncatePrefix, 3, 9, nil), record{recTruncatePrefix, 3, 9, []byte{}}},
		{"delete-stream", appendRecord(nil, recDeleteStream, 3, 0, nil), record{recDeleteStream, 3, 0, []byte{}}},
		{"batch", appendRecord(nil, recBatch, 5, 1000, []byte{29, 0, 0, 0}), record{recBatch, 5, 1000, []byte{29, 0, 0, 0}}},
		{"set-state", appendState(nil, 2, "term", []byte("17")), record{recState, 2, 0, []byte("\x04term17")}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			trailing := append(bytes.Clone(tc.enc), 0xAA, 0xBB)
			r, n, err := decodeRecord(trailing)
			if err != nil {
				t.Fatal(err)
			}
			if n != len(tc.enc) || r.typ != tc.want.typ || r.stream != tc.want.stream || r.index != tc.want.index || !bytes.Equal(r.payload, tc.want.payload) {
				t.Fatalf("decoded %+v (%d bytes), want %+v (%d bytes)", r, n, tc.want, len(tc.enc))
			}
			if got := int(binary.LittleEndian.Uint32(tc.enc)); got != len(tc.enc)-recordHeaderSize {
				t.Fatalf("length field %d, want %d", got, len(tc.enc)-recordHeaderSize)
			}
		})
	}
}

// reseal recomputes the CRC so that a test can build records whose fields,
// not checksum, are wrong.
func reseal(b []byte) []byte {
	endRecord(b, 0)
	return b
}

func TestDecodeRecordErrors(t *testing.T) {
	good := appendRecord(nil, recEntry, 1, 1, []byte("payload"))
	mut := func(f func(b []byte)) []byte {
		b := bytes.Clone(good)
		f(b)
		return b
	}
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, errShort},
		{"partial length", good[:3], errShort},
		{"zero length", make([]byte, 40), errEnd},
		{"length below minimum", mut(func(b []byte) { binary.LittleEndian.PutUint32(b, 16) }), errLength},
		{"length above maximum", mut(func(b []byte) { binary.LittleEndian.PutUint32(b, maxRecordBody+1) }), errLength},
		{"truncated body", good[:len(good)-1], errShort},
		{"flipped payload bit", mut(func(b []byte) { b[len(b)-1] ^= 1 }), errChecksum},
		{"flipped crc bit", mut(func(b []byte) { b[5] ^= 1 }), errChecksum},
		{"unknown type", reseal(mut(func(b []byte) { b[24] = 99 })), errType},
		{"type zero", reseal(mut(func(b []byte) { b[24] = 0 })), errType},
		{"entry index zero", reseal(mut(func(b []byte) { binary.LittleEndian.PutUint64(b[16:], 0) })), errFields},
		{"truncate with payload", reseal(mut(func(b []byte) { b[24] = byte(recTruncateSuffix) })), errFields},
		{"batch with other payload", reseal(mut(func(b []byte) { b[24] = byte(recBatch) })), errFields},
		{"batch shorter than itself", appendRecord(nil, recBatch, 1, 0, []byte{28, 0, 0, 0}), errFields},
		{"state with index", appendRecord(nil, recState, 1, 3, []byte{1, 'k'}), errFields},
		{"state empty key", reseal(appendRecord(nil, recState, 1, 0, []byte{0, 'x'})), errStateBody},
		{"state key past end", reseal(appendRecord(nil, recState, 1, 0, []byte{5, 'x'})), errStateBody},
		{"delete with index", reseal(appendRecord(nil, recDeleteStream, 1, 3, nil)), errFields},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, n, err := decodeRecord(tc.in)
			if !errors.Is(err, tc.want) || n != 0 {
				t.Fatalf("decodeRecord: n=%d err=%v, want %v", n, err, tc.want)
			}
		})
	}
}

func TestBatchRecordPosition(t *testing.T) {
	buf := make([]byte, 100)
	putBatchRecord(buf[30:], 7, 30)
	tests := []struct {
		off  int
		seq  uint64
		want bool
	}{
		{30, 7, true},
		{30, 8, false}, // another segment's batch record
		{29, 7, false},
		{31, 7, false},
		{90, 7, false}, // runs past the end
	}
	for _, tc := range tests {
		if got := isBatchRecordAt(buf, tc.off, tc.seq); got != tc.want {
			t.Errorf("isBatchRecordAt(%d, %d) = %v, want %v", tc.off, tc.seq, got, tc.want)
		}
	}
	if !batchRecordAfter(buf, 1, 7) || batchRecordAfter(buf, 31, 7) {
		t.Error("batchRecordAfter does not find exactly the record at 30")
	}
}

func TestSegmentHeader(t *testing.T) {
	good := appendSegmentHeader(nil, 12)
	if len(good) != segmentHeaderSize {
		t.Fatalf("header is %d bytes, want %d", len(good), segmentHeaderSize)
	}
	withVersion := bytes.Clone(good)
	binary.LittleEndian.PutUint32(withVersion[8:], 2)
	binary.LittleEndian.PutUint32(withVersion[20:], crc32.Checksum(withVersion[:20], castagnoli))
	tests := []struct {
		name string
		in   []byte
		seq  uint64
		want string // substring of the error, "" for success
	}{
		{"good", good, 12, ""},
		{"short", good[:10], 12, "shorter"},
		{"foreign", []byte("#!/bin/sh\necho not a segment at all"), 12, "magic"},
		{"bad crc", append(bytes.Clone(good[:20]), 0, 0, 0, 0), 12, "checksum"},
		{"other version", withVersion, 12, "version 2"},
		{"renamed", good, 13, "names segment 12"},
	}
	for _, tc := range tests {
		err := checkSegmentHeader(tc.in, tc.seq)
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestParseSegmentName(t *testing.T) {
	tests := []struct {
		name string
		seq  uint64
		ok   bool
	}{
		{segmentName(1), 1, true},
		{segmentName(1 << 40), 1 << 40, true},
		{"00000000000000000000.wal", 0, false},
		{"0000000000000000001.wal", 0, false},
		{"0000000000000000000x.wal", 0, false},
		{"00000000000000000001.wal.tmp", 0, false},
		{"LOCK", 0, false},
	}
	for _, tc := range tests {
		if seq, ok := parseSegmentName(tc.name); seq != tc.seq || ok != tc.ok {
			t.Errorf("parseSegmentName(%q) = %d, %v; want %d, %v", tc.name, seq, ok, tc.seq, tc.ok)
		}
	}
}
