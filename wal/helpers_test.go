package wal

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/ringkv/ringkv/internal/testing/wait"
)

const testDir = "/wal"

// smallOpts are options that make segments roll and reclamation run after
// a few dozen records.
func smallOpts(fs FS) Options {
	return Options{FS: fs, SegmentSize: MinSegmentSize, CacheEntries: 4, CompactSegments: 2}
}

func mustOpen(t testing.TB, dir string, opts Options) *WAL {
	t.Helper()
	w, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return w
}

func mustClose(t testing.TB, w *WAL) {
	t.Helper()
	if err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// payload is the deterministic data of an entry, so that any entry can be
// checked without remembering what was written.
func payload(stream, index uint64, size int) []byte {
	b := fmt.Appendf(nil, "s%d/i%d/", stream, index)
	for len(b) < size {
		b = append(b, byte('a'+(stream*7+index+uint64(len(b)))%26))
	}
	return b
}

func appendN(t testing.TB, w *WAL, stream, from, to uint64) {
	t.Helper()
	for i := from; i <= to; i++ {
		if err := w.Append(context.Background(), Entry{Stream: stream, Index: i, Data: payload(stream, i, 40)}); err != nil {
			t.Fatalf("Append(%d, %d): %v", stream, i, err)
		}
	}
}

// checkStream verifies that stream holds exactly first..last with their
// payloads, through both Get and Range.
func checkStream(t testing.TB, w *WAL, stream, first, last uint64) {
	t.Helper()
	if f, l := w.FirstIndex(stream), w.LastIndex(stream); f != first || l != last {
		t.Fatalf("stream %d: span [%d, %d], want [%d, %d]", stream, f, l, first, last)
	}
	if last == 0 {
		return
	}
	for i := first; i <= last; i++ {
		got, err := w.Get(stream, i)
		if err != nil {
			t.Fatalf("Get(%d, %d): %v", stream, i, err)
		}
		if want := payload(stream, i, 40); !bytes.Equal(got, want) {
			t.Fatalf("Get(%d, %d) = %q, want %q", stream, i, got, want)
		}
	}
	next := first
	err := w.Range(stream, first, last, func(i uint64, d []byte) bool {
		if i != next || !bytes.Equal(d, payload(stream, i, 40)) {
			t.Fatalf("Range(%d) visited %d with %q, want %d", stream, i, d, next)
		}
		next++
		return true
	})
	if err != nil || next != last+1 {
		t.Fatalf("Range(%d, %d, %d): err %v, stopped at %d", stream, first, last, err, next)
	}
}

// waitFor waits for cond, at most 30 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	wait.Until(t, 30*time.Second, what, cond)
}

// readFile returns the whole content of name through fs.
func readFile(t testing.TB, fs FS, name string) []byte {
	t.Helper()
	f, err := fs.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	size, err := f.Size()
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, size)
	if _, err := f.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t testing.TB, fs FS, name string, data []byte) {
	t.Helper()
	f, err := fs.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := fs.SyncDir(filepath.Dir(name)); err != nil {
		t.Fatal(err)
	}
}

func segPath(dir string, seq uint64) string { return filepath.Join(dir, segmentName(seq)) }

// checkAcrossReopen runs check on w, then closes w and runs check again on
// the WAL reopened from the same files.
func checkAcrossReopen(t *testing.T, w *WAL, opts Options, check func(w *WAL)) {
	t.Helper()
	check(w)
	mustClose(t, w)
	w = mustOpen(t, testDir, opts)
	defer mustClose(t, w)
	check(w)
}
