package wal

import (
	"context"
	"slices"
	"testing"
)

func segmentFiles(t *testing.T, fs FS) []uint64 {
	t.Helper()
	names, err := fs.ReadDir(testDir)
	if err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	for _, n := range names {
		if seq, ok := parseSegmentName(n); ok {
			seqs = append(seqs, seq)
		}
	}
	return seqs
}

func TestSegmentsDeletedOnceDead(t *testing.T) {
	fs := NewMemFS()
	opts := smallOpts(fs)
	opts.CompactSegments = 1000 // deletion alone, no rewriting
	w := mustOpen(t, testDir, opts)
	appendN(t, w, 1, 1, 300)
	before := w.Stats()
	if before.Segments < 5 || before.SegmentsDeleted != 0 {
		t.Fatalf("setup: %+v", before)
	}
	if err := w.TruncatePrefix(context.Background(), 1, 290); err != nil {
		t.Fatal(err)
	}
	// Reclamation runs after the truncation is acknowledged, a segment at a
	// time: Stats drops a segment just before its file goes, so wait for a
	// moment where the two agree.
	var after Stats
	var files []uint64
	waitFor(t, "dead segments deleted, and Stats agreeing with the files", func() bool {
		after = w.Stats()
		files = segmentFiles(t, fs)
		return after.Segments <= 2 && len(files) == after.Segments
	})
	if after.SegmentsDeleted == 0 || after.SizeBytes >= before.SizeBytes {
		t.Fatalf("after truncating all but 10 entries: %+v, files %v", after, files)
	}
	checkAcrossReopen(t, w, opts, func(w *WAL) { checkStream(t, w, 1, 291, 300) })
}

// A segment holding one live entry of a slow stream is not deleted while
// the policy does not ask for compaction.
func TestLiveRecordPinsSegmentWithoutCompaction(t *testing.T) {
	fs := NewMemFS()
	opts := smallOpts(fs)
	opts.CompactSegments = 1000
	w := mustOpen(t, testDir, opts)
	defer mustClose(t, w)
	appendN(t, w, 7, 1, 1)
	for i := uint64(1); i <= 400; i++ {
		appendN(t, w, 1, i, i)
		if err := w.TruncatePrefix(context.Background(), 1, i); err != nil {
			t.Fatal(err)
		}
	}
	if files := segmentFiles(t, fs); files[0] != 1 {
		t.Fatalf("segment 1 holds a live entry but the files are %v", files)
	}
	checkStream(t, w, 7, 1, 1)
}

// With the policy on, a slow stream's entries and state are copied forward
// and the log stays bounded.
func TestSlowStreamIsCompactedForward(t *testing.T) {
	fs := NewMemFS()
	opts := smallOpts(fs)
	w := mustOpen(t, testDir, opts)
	ctx := context.Background()
	appendN(t, w, 7, 1, 3)
	if err := w.SetState(ctx, 7, "term", []byte("4")); err != nil {
		t.Fatal(err)
	}
	maxSegs := 0
	for i := uint64(1); i <= 600; i++ {
		appendN(t, w, 1, i, i)
		if i%10 == 0 {
			if err := w.TruncatePrefix(ctx, 1, i-5); err != nil {
				t.Fatal(err)
			}
		}
		maxSegs = max(maxSegs, w.Stats().Segments)
	}
	waitFor(t, "segment 1 to be compacted away", func() bool { return !slices.Contains(segmentFiles(t, fs), 1) })
	if st := w.Stats(); st.Compactions == 0 {
		t.Fatalf("segment 1 deleted without compaction: %+v", st)
	}
	if maxSegs > opts.CompactSegments+3 {
		t.Fatalf("log grew to %d segments with a compaction threshold of %d", maxSegs, opts.CompactSegments)
	}
	checkAcrossReopen(t, w, opts, func(w *WAL) {
		checkStream(t, w, 7, 1, 3)
		checkStream(t, w, 1, 596, 600)
		if v, ok := w.State(7, "term"); !ok || string(v) != "4" {
			t.Fatalf("state after compaction = %q, %v", v, ok)
		}
	})
}

// A segment larger than the compaction window is copied through several
// windows, records straddling their edges included.
func TestCompactionReadsThroughWindows(t *testing.T) {
	fs := NewMemFS()
	opts := Options{FS: fs, SegmentSize: 2 << 20, CacheEntries: -1, CompactSegments: 2}
	w := mustOpen(t, testDir, opts)
	ctx := context.Background()
	big := func(i uint64) []byte { return payload(7, i, 3000+int(i)) }
	for i := uint64(1); i <= 500; i++ { // ~1.6 MiB of live data in segment 1
		if err := w.Append(ctx, Entry{Stream: 7, Index: i, Data: big(i)}); err != nil {
			t.Fatal(err)
		}
	}
	for i := uint64(1); slices.Contains(segmentFiles(t, fs), 1); i++ {
		if i > 5000 {
			t.Fatal("segment 1 never compacted")
		}
		if err := w.Append(ctx, Entry{Stream: 1, Index: i, Data: make([]byte, 2000)}); err != nil {
			t.Fatal(err)
		}
		if err := w.TruncatePrefix(ctx, 1, i); err != nil {
			t.Fatal(err)
		}
	}
	checkAcrossReopen(t, w, opts, func(w *WAL) {
		for i := uint64(1); i <= 500; i++ {
			if got, err := w.Get(7, i); err != nil || string(got) != string(big(i)) {
				t.Fatalf("entry %d after compaction: %v", i, err)
			}
		}
	})
}
