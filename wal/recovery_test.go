package wal

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

func entryLoc(w *WAL, stream, index uint64) loc {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return w.idx.streams[stream].loc(index)
}

// buildHistory writes a history exercising every record type and returns
// the location of its last record, an entry of stream 1 at index 30.
func buildHistory(t *testing.T, fs FS, opts Options) loc {
	t.Helper()
	ctx := context.Background()
	w := mustOpen(t, testDir, opts)
	appendN(t, w, 1, 1, 20)
	appendN(t, w, 2, 1, 10)
	if err := w.TruncateSuffix(ctx, 1, 15); err != nil {
		t.Fatal(err)
	}
	if err := w.TruncatePrefix(ctx, 2, 4); err != nil {
		t.Fatal(err)
	}
	if err := w.SetState(ctx, 1, "term", []byte("5")); err != nil {
		t.Fatal(err)
	}
	appendN(t, w, 3, 1, 3)
	if err := w.DeleteStream(ctx, 3); err != nil {
		t.Fatal(err)
	}
	appendN(t, w, 1, 15, 30)
	at := entryLoc(w, 1, 30)
	mustClose(t, w)
	return at
}

// checkHistory verifies everything buildHistory wrote before its last record.
func checkHistory(t *testing.T, w *WAL) {
	t.Helper()
	checkStream(t, w, 1, 1, 29)
	checkStream(t, w, 2, 5, 10)
	checkStream(t, w, 3, 0, 0)
	if v, ok := w.State(1, "term"); !ok || string(v) != "5" {
		t.Fatalf("state term = %q, %v", v, ok)
	}
}

// A crash while writing the last batch leaves any prefix of it, followed by
// the preallocated zeros or by the end of the file. Recovery keeps all
// before it, reports what it dropped, and the WAL continues from there.
func TestTornTailEveryCut(t *testing.T) {
	opts := Options{SegmentSize: 64 << 10, CacheEntries: 4}
	for _, zeroed := range []bool{true, false} {
		base := NewMemFS()
		opts.FS = base
		at := buildHistory(t, base, opts)
		if at.seq != 1 {
			t.Fatalf("history spans segments; want one")
		}
		orig := readFile(t, base, segPath(testDir, 1))
		// The last Append is one batch: its batch record, then the entry.
		batch := int(at.off) - batchRecordSize
		for cut := 0; cut < int(at.off+at.n)-batch; cut++ {
			img := bytes.Clone(orig[:batch+cut])
			if zeroed {
				img = append(img, make([]byte, len(orig)-len(img))...)
			}
			fs := NewMemFS()
			writeFile(t, fs, segPath(testDir, 1), img)
			opts.FS = fs
			w := mustOpen(t, testDir, opts)
			checkHistory(t, w)
			rec := w.Recovery()
			want := int64(lastNonZero(orig[batch:batch+cut]) + 1)
			if rec.DroppedBytes != want || (want > 0) != (rec.TornSegment == segmentName(1)) || (want > 0 && rec.TornOffset != int64(batch)) {
				t.Fatalf("zeroed=%v cut=%d: Recovery() = %+v, want %d bytes dropped at %d", zeroed, cut, rec, want, batch)
			}
			appendN(t, w, 1, 30, 31)
			mustClose(t, w)
			w = mustOpen(t, testDir, opts)
			checkStream(t, w, 1, 1, 31)
			if r := w.Recovery(); r.DroppedBytes != 0 {
				t.Fatalf("cut=%d: second recovery dropped %d bytes", cut, r.DroppedBytes)
			}
			mustClose(t, w)
		}
	}
}

// Any damaged byte of the last batch is a torn tail: the batch goes and
// everything before it stays.
func TestTornTailEveryFlippedByte(t *testing.T) {
	opts := Options{SegmentSize: 64 << 10, CacheEntries: 4}
	base := NewMemFS()
	opts.FS = base
	at := buildHistory(t, base, opts)
	orig := readFile(t, base, segPath(testDir, 1))
	batch := int(at.off) - batchRecordSize
	for p := batch; p < int(at.off+at.n); p++ {
		img := bytes.Clone(orig)
		img[p] ^= 0xff
		fs := NewMemFS()
		writeFile(t, fs, segPath(testDir, 1), img)
		opts.FS = fs
		w := mustOpen(t, testDir, opts)
		checkHistory(t, w)
		if rec := w.Recovery(); rec.DroppedBytes != int64(at.off+at.n)-int64(batch) || rec.TornOffset != int64(batch) {
			t.Fatalf("byte %d flipped: Recovery() = %+v, want the batch at %d dropped", p, rec, batch)
		}
		mustClose(t, w)
	}
}

// Damage followed by valid data is corruption, reported with the file and
// offset, never skipped.
func TestCorruptionBeforeTail(t *testing.T) {
	opts := Options{SegmentSize: MinSegmentSize, CacheEntries: 4, CompactSegments: 100}
	base := NewMemFS()
	opts.FS = base
	buildHistory(t, base, opts)
	w := mustOpen(t, testDir, opts)
	early := entryLoc(w, 1, 2) // in segment 1, followed by more records
	if n := w.Stats().Segments; n < 2 {
		t.Fatalf("history fits in %d segment; the test needs an older one", n)
	}
	mustClose(t, w)
	seg1 := readFile(t, base, segPath(testDir, 1))
	endOf := func(b []byte) int { // end of written data
		off := segmentHeaderSize
		for {
			_, n, err := decodeRecord(b[off:])
			if err != nil {
				return off
			}
			off += n
		}
	}
	tailStart := func(b []byte) int { // offset of the last record
		off, prev := segmentHeaderSize, 0
		for {
			_, n, err := decodeRecord(b[off:])
			if err != nil {
				return prev
			}
			prev, off = off, off+n
		}
	}
	tests := []struct {
		name   string
		seq    uint64
		damage func(b []byte) []byte
		off    int64
		reason string
	}{
		{"flipped payload bit", 1, func(b []byte) []byte { b[early.off+early.n-1] ^= 1; return b }, int64(early.off), "checksum"},
		{"flipped length bit", 1, func(b []byte) []byte { b[early.off+1] ^= 1; return b }, int64(early.off), ""},
		{"zeroed length", 1, func(b []byte) []byte { clear(b[early.off : early.off+4]); return b }, int64(early.off), "non-zero bytes after the end"},
		{"flipped batch record", 1, func(b []byte) []byte { b[segmentHeaderSize+20] ^= 1; return b }, segmentHeaderSize, "checksum"},
		{"segment header", 1, func(b []byte) []byte { b[3] ^= 1; return b }, 0, "magic"},
		{"torn tail of an older segment", 1, func(b []byte) []byte { b[tailStart(b)+30] ^= 1; return b }, int64(tailStart(seg1)), "checksum"},
		{"garbage after the end of an older segment", 1, func(b []byte) []byte { b[len(b)-1] = 7; return b }, int64(endOf(seg1)), "non-zero bytes after the end"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fs := NewMemFS()
			names, _ := base.ReadDir(testDir)
			for _, name := range names {
				p := filepath.Join(testDir, name)
				img := readFile(t, base, p)
				if seq, ok := parseSegmentName(name); ok && seq == tc.seq {
					img = tc.damage(img)
				}
				writeFile(t, fs, p, img)
			}
			opts.FS = fs
			_, err := Open(testDir, opts)
			var ce *CorruptionError
			if !errors.As(err, &ce) || !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Open: %v, want a *CorruptionError", err)
			}
			if ce.Segment != segmentName(tc.seq) || ce.Offset != tc.off || !strings.Contains(ce.Reason, tc.reason) {
				t.Fatalf("Open: %v, want %s at offset %d (%s)", err, segmentName(tc.seq), tc.off, tc.reason)
			}
			if !strings.Contains(err.Error(), segmentName(tc.seq)) {
				t.Fatalf("message %q does not name the segment", err)
			}
			if _, err := fs.Lock(filepath.Join(testDir, "LOCK")); err != nil {
				t.Fatalf("failed Open left the directory locked: %v", err)
			}
		})
	}
}

func TestDirectoryProblems(t *testing.T) {
	opts := smallOpts(nil)
	tests := []struct {
		name   string
		change func(t *testing.T, fs *MemFS)
		seg    string
		reason string
	}{
		{"missing middle segment", func(t *testing.T, fs *MemFS) {
			fs.Remove(segPath(testDir, 2))
		}, segmentName(2), "segment missing"},
		{"foreign file with a segment name", func(t *testing.T, fs *MemFS) {
			names, _ := fs.ReadDir(testDir)
			last, _ := parseSegmentName(names[len(names)-2]) // before LOCK
			writeFile(t, fs, segPath(testDir, last+1), []byte("PK\x03\x04 some zip file that is long enough"))
		}, "", "magic"},
		{"segment renamed", func(t *testing.T, fs *MemFS) {
			names, _ := fs.ReadDir(testDir)
			last, _ := parseSegmentName(names[len(names)-2])
			fs.Rename(segPath(testDir, last), segPath(testDir, last+1))
			writeFile(t, fs, segPath(testDir, last), appendSegmentHeader(nil, last))
		}, "", "names segment"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fs := NewMemFS()
			opts.FS = fs
			w := mustOpen(t, testDir, opts)
			appendN(t, w, 1, 1, 200)
			mustClose(t, w)
			tc.change(t, fs)
			_, err := Open(testDir, opts)
			var ce *CorruptionError
			if !errors.As(err, &ce) || !strings.Contains(ce.Reason, tc.reason) || (tc.seg != "" && ce.Segment != tc.seg) {
				t.Fatalf("Open: %v, want corruption %q in %q", err, tc.reason, tc.seg)
			}
		})
	}
}

// A crash while a segment was being prepared leaves a temporary file that
// Open removes; other files are left alone.
func TestOpenRemovesTemporaryFiles(t *testing.T) {
	fs := NewMemFS()
	opts := smallOpts(fs)
	w := mustOpen(t, testDir, opts)
	appendN(t, w, 1, 1, 3)
	mustClose(t, w)
	writeFile(t, fs, filepath.Join(testDir, "00000000000000000002.wal.tmp"), []byte("half-made"))
	writeFile(t, fs, filepath.Join(testDir, "notes.txt"), []byte("keep"))
	w = mustOpen(t, testDir, opts)
	defer mustClose(t, w)
	checkStream(t, w, 1, 1, 3)
	names, _ := fs.ReadDir(testDir)
	if strings.Contains(strings.Join(names, " "), ".tmp") || !strings.Contains(strings.Join(names, " "), "notes.txt") {
		t.Fatalf("directory after Open: %v", names)
	}
	appendN(t, w, 1, 4, 100) // rolls into segment 2 again
	checkStream(t, w, 1, 1, 100)
}
