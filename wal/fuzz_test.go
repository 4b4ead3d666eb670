package wal

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
)

func FuzzDecodeRecord(f *testing.F) {
	f.Add(appendRecord(nil, recEntry, 1, 1, []byte("hello")))
	f.Add(appendRecord(nil, recTruncateSuffix, 2, 9, nil))
	f.Add(appendRecord(nil, recTruncatePrefix, 2, 9, nil))
	f.Add(appendRecord(nil, recDeleteStream, 3, 0, nil))
	f.Add(appendRecord(nil, recBatch, 1, 24, []byte{29, 0, 0, 0}))
	f.Add(appendState(nil, 4, "term", []byte("12")))
	f.Add(make([]byte, 32))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4})
	f.Fuzz(func(t *testing.T, data []byte) {
		r, n, err := decodeRecord(data)
		if err != nil {
			if n != 0 {
				t.Fatalf("error %v with size %d", err, n)
			}
			return
		}
		if n < minRecordSize || n > len(data) {
			t.Fatalf("size %d outside [%d, %d]", n, minRecordSize, len(data))
		}
		if re := appendRecord(nil, r.typ, r.stream, r.index, r.payload); !bytes.Equal(re, data[:n]) {
			t.Fatalf("decoded %+v re-encodes to %x, input %x", r, re, data[:n])
		}
	})
}

// fuzzBody returns the body (after the header) of the single segment of a
// WAL that went through every kind of record.
func fuzzBody(f *testing.F, build func(w *WAL)) []byte {
	fs := NewMemFS()
	opts := Options{FS: fs, SegmentSize: 64 << 10}
	w := mustOpen(f, testDir, opts)
	build(w)
	mustClose(f, w)
	img := readFile(f, fs, segPath(testDir, 1))
	return img[segmentHeaderSize : segmentHeaderSize+lastNonZero(img[segmentHeaderSize:])+1]
}

// FuzzRecover opens a WAL whose only segment holds arbitrary bytes after a
// valid header. Open must either report corruption or produce a WAL whose
// every entry reads back, that accepts appends, and that reopens to the
// same state.
func FuzzRecover(f *testing.F) {
	f.Add([]byte{})
	f.Add(fuzzBody(f, func(w *WAL) { appendN(f, w, 1, 1, 3) }))
	f.Add(fuzzBody(f, func(w *WAL) {
		appendN(f, w, 1, 1, 6)
		appendN(f, w, 2, 4, 5)
		ctx := f.Context()
		w.TruncateSuffix(ctx, 1, 5)
		w.TruncatePrefix(ctx, 2, 4)
		w.SetState(ctx, 1, "term", []byte("3"))
		w.DeleteStream(ctx, 2)
		appendN(f, w, 1, 5, 6)
	}))
	f.Fuzz(func(t *testing.T, body []byte) {
		fs := NewMemFS()
		writeFile(t, fs, segPath(testDir, 1), append(appendSegmentHeader(nil, 1), body...))
		opts := Options{FS: fs, SegmentSize: MinSegmentSize, CacheEntries: 2}
		w, err := Open(testDir, opts)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Open failed without reporting corruption: %v", err)
			}
			return
		}
		before := snapshot(t, w)
		for _, s := range w.Streams() {
			if last := w.LastIndex(s); last > 0 && last < 1<<62 {
				if err := w.Append(t.Context(), Entry{Stream: s, Index: last + 1, Data: []byte("next")}); err != nil {
					t.Fatalf("append after recovery: %v", err)
				}
				if err := w.TruncateSuffix(t.Context(), s, last+1); err != nil {
					t.Fatal(err)
				}
			}
		}
		mustClose(t, w)
		w = mustOpen(t, testDir, opts)
		defer mustClose(t, w)
		if after := snapshot(t, w); !bytes.Equal(before, after) {
			t.Fatalf("state changed across reopen:\n%s\n%s", before, after)
		}
	})
}

// snapshot renders every observable of w, reading every entry.
func snapshot(t *testing.T, w *WAL) []byte {
	var b bytes.Buffer
	for _, s := range w.Streams() {
		first, last := w.FirstIndex(s), w.LastIndex(s)
		fmt.Fprintf(&b, "stream %d [%d, %d]:", s, first, last)
		if last > 0 {
			err := w.Range(s, first, last, func(i uint64, d []byte) bool {
				b.Write(d)
				return true
			})
			if err != nil {
				t.Fatalf("stream %d [%d, %d] does not read back: %v", s, first, last, err)
			}
		}
		for _, k := range []string{"term", "vote"} {
			if v, ok := w.State(s, k); ok {
				b.WriteString(k + "=" + string(v) + ";")
			}
		}
	}
	return b.Bytes()
}
