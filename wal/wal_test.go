package wal

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestAppendGetRangeSurviveReopen(t *testing.T) {
	for _, cache := range []int{-1, 2, 0} {
		fs := NewMemFS()
		opts := smallOpts(fs)
		opts.CacheEntries = cache
		w := mustOpen(t, testDir, opts)
		appendN(t, w, 1, 1, 50)
		appendN(t, w, 2, 7, 30)
		checkStream(t, w, 1, 1, 50)
		checkStream(t, w, 2, 7, 30)
		mustClose(t, w)
		w = mustOpen(t, testDir, opts)
		checkStream(t, w, 1, 1, 50)
		checkStream(t, w, 2, 7, 30)
		if got := w.Streams(); len(got) != 2 || got[0] != 1 || got[1] != 2 {
			t.Fatalf("Streams() = %v", got)
		}
		mustClose(t, w)
	}
}

func TestAppendRejectsBadInputAndChangesNothing(t *testing.T) {
	big := make([]byte, 1025)
	tests := []struct {
		name    string
		entries []Entry
		want    error
	}{
		{"gap", []Entry{{1, 7, nil}}, ErrOutOfOrder},
		{"repeat last", []Entry{{1, 5, nil}}, ErrOutOfOrder},
		{"before first", []Entry{{1, 2, nil}}, ErrOutOfOrder},
		{"index zero", []Entry{{3, 0, nil}}, ErrInvalid},
		{"data too large", []Entry{{1, 6, big}}, ErrInvalid},
		{"second entry not consecutive", []Entry{{1, 6, nil}, {1, 8, nil}}, ErrOutOfOrder},
		{"second stream out of order", []Entry{{3, 1, nil}, {1, 9, nil}}, ErrOutOfOrder},
		{"same stream twice in one call", []Entry{{3, 1, nil}, {3, 1, nil}}, ErrOutOfOrder},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fs := NewMemFS()
			opts := smallOpts(fs)
			opts.MaxEntrySize = 1024
			w := mustOpen(t, testDir, opts)
			defer mustClose(t, w)
			appendN(t, w, 1, 1, 5)
			syncs := w.Stats().Syncs
			err := w.Append(context.Background(), tc.entries...)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Append: %v, want %v", err, tc.want)
			}
			var oe *OrderError
			var ae *ArgError
			if !errors.As(err, &oe) && !errors.As(err, &ae) {
				t.Fatalf("Append error %T is neither *OrderError nor *ArgError", err)
			}
			checkStream(t, w, 1, 1, 5)
			checkStream(t, w, 3, 0, 0)
			if w.Stats().Syncs != syncs {
				t.Fatalf("a rejected append was written")
			}
		})
	}
}

func TestOrderErrorNamesExpectedIndex(t *testing.T) {
	w := mustOpen(t, testDir, smallOpts(NewMemFS()))
	defer mustClose(t, w)
	appendN(t, w, 4, 10, 12)
	var oe *OrderError
	if err := w.Append(context.Background(), Entry{Stream: 4, Index: 20}); !errors.As(err, &oe) || *oe != (OrderError{4, 20, 13}) {
		t.Fatalf("got %v, want OrderError{4, 20, 13}", err)
	}
	if !strings.Contains(oe.Error(), "want 13") {
		t.Fatalf("message %q does not name the expected index", oe.Error())
	}
}

func TestTruncateSuffix(t *testing.T) {
	tests := []struct {
		from, wantFirst, wantLast uint64
	}{
		{from: 1, wantFirst: 0, wantLast: 0},
		{from: 3, wantFirst: 0, wantLast: 0}, // the stream starts at 3: everything goes
		{from: 4, wantFirst: 3, wantLast: 3},
		{from: 8, wantFirst: 3, wantLast: 7},
		{from: 9, wantFirst: 3, wantLast: 8},
		{from: 100, wantFirst: 3, wantLast: 8},
	}
	for _, tc := range tests {
		fs := NewMemFS()
		w := mustOpen(t, testDir, smallOpts(fs))
		appendN(t, w, 1, 3, 8)
		if err := w.TruncateSuffix(context.Background(), 1, tc.from); err != nil {
			t.Fatal(err)
		}
		checkStream(t, w, 1, tc.wantFirst, tc.wantLast)
		mustClose(t, w)
		w = mustOpen(t, testDir, smallOpts(fs))
		checkStream(t, w, 1, tc.wantFirst, tc.wantLast)
		// Raft rewrites from `from`, which an emptied stream also accepts.
		next, first := min(tc.from, tc.wantLast+1), tc.wantFirst
		if tc.wantLast == 0 {
			first = next
		}
		appendN(t, w, 1, next, next+2)
		checkStream(t, w, 1, first, next+2)
		mustClose(t, w)
	}
}

func TestTruncatePrefix(t *testing.T) {
	tests := []struct {
		upTo, wantFirst, wantLast uint64
	}{
		{upTo: 1, wantFirst: 3, wantLast: 8},
		{upTo: 3, wantFirst: 4, wantLast: 8},
		{upTo: 7, wantFirst: 8, wantLast: 8},
		{upTo: 8, wantFirst: 0, wantLast: 0},
		{upTo: 50, wantFirst: 0, wantLast: 0},
	}
	for _, tc := range tests {
		fs := NewMemFS()
		w := mustOpen(t, testDir, smallOpts(fs))
		appendN(t, w, 1, 3, 8)
		if err := w.TruncatePrefix(context.Background(), 1, tc.upTo); err != nil {
			t.Fatal(err)
		}
		checkStream(t, w, 1, tc.wantFirst, tc.wantLast)
		mustClose(t, w)
		w = mustOpen(t, testDir, smallOpts(fs))
		checkStream(t, w, 1, tc.wantFirst, tc.wantLast)
		if tc.wantLast != 0 {
			appendN(t, w, 1, 9, 9)
			checkStream(t, w, 1, tc.wantFirst, 9)
		}
		mustClose(t, w)
	}
}

// After a snapshot install Raft empties the log and appends past the
// snapshot index, which need not follow the old last index.
func TestResetStreamToArbitraryIndex(t *testing.T) {
	fs := NewMemFS()
	w := mustOpen(t, testDir, smallOpts(fs))
	appendN(t, w, 1, 1, 10)
	if err := w.TruncatePrefix(context.Background(), 1, 10); err != nil {
		t.Fatal(err)
	}
	appendN(t, w, 1, 1000, 1003)
	checkAcrossReopen(t, w, smallOpts(fs), func(w *WAL) { checkStream(t, w, 1, 1000, 1003) })
}

func TestState(t *testing.T) {
	fs := NewMemFS()
	w := mustOpen(t, testDir, smallOpts(fs))
	ctx := context.Background()
	steps := []struct {
		stream uint64
		key    string
		value  string
	}{
		{1, "term", "1"},
		{1, "vote", "n2"},
		{2, "term", "9"},
		{1, "term", "2"},
		{1, "empty", ""},
	}
	for _, s := range steps {
		if err := w.SetState(ctx, s.stream, s.key, []byte(s.value)); err != nil {
			t.Fatal(err)
		}
	}
	want := map[[2]string]string{{"1", "term"}: "2", {"1", "vote"}: "n2", {"2", "term"}: "9", {"1", "empty"}: ""}
	got, _ := w.State(1, "term")
	got[0] = 'X' // the caller owns the copy
	checkAcrossReopen(t, w, smallOpts(fs), func(w *WAL) {
		for k, v := range want {
			stream := uint64(k[0][0] - '0')
			got, ok := w.State(stream, k[1])
			if !ok || string(got) != v {
				t.Fatalf("State(%d, %q) = %q, %v; want %q", stream, k[1], got, ok, v)
			}
		}
		if _, ok := w.State(1, "missing"); ok {
			t.Fatal("State of a missing key reported present")
		}
	})
}

func TestStateRejectsBadInput(t *testing.T) {
	w := mustOpen(t, testDir, Options{FS: NewMemFS(), SegmentSize: MinSegmentSize, MaxEntrySize: 16})
	defer mustClose(t, w)
	tests := []struct {
		name, key string
		value     []byte
		field     string
	}{
		{"empty key", "", nil, "key"},
		{"long key", strings.Repeat("k", 256), nil, "key"},
		{"big value", "k", make([]byte, 17), "value"},
	}
	for _, tc := range tests {
		var ae *ArgError
		err := w.SetState(context.Background(), 1, tc.key, tc.value)
		if !errors.As(err, &ae) || ae.Field != tc.field || !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: got %v, want ArgError on %s", tc.name, err, tc.field)
		}
	}
	if len(w.Streams()) != 0 {
		t.Fatal("rejected SetState created a stream")
	}
}

func TestDeleteStream(t *testing.T) {
	fs := NewMemFS()
	w := mustOpen(t, testDir, smallOpts(fs))
	ctx := context.Background()
	appendN(t, w, 1, 1, 20)
	appendN(t, w, 2, 1, 5)
	if err := w.SetState(ctx, 1, "term", []byte("3")); err != nil {
		t.Fatal(err)
	}
	if err := w.DeleteStream(ctx, 1); err != nil {
		t.Fatal(err)
	}
	check := func() {
		t.Helper()
		checkStream(t, w, 1, 0, 0)
		checkStream(t, w, 2, 1, 5)
		if _, ok := w.State(1, "term"); ok {
			t.Fatal("state survived DeleteStream")
		}
		if got := w.Streams(); len(got) != 1 || got[0] != 2 {
			t.Fatalf("Streams() = %v, want [2]", got)
		}
	}
	check()
	mustClose(t, w)
	w = mustOpen(t, testDir, smallOpts(fs))
	check()
	appendN(t, w, 1, 40, 41) // a deleted stream starts afresh
	checkStream(t, w, 1, 40, 41)
	mustClose(t, w)
}

func TestReadErrors(t *testing.T) {
	w := mustOpen(t, testDir, smallOpts(NewMemFS()))
	defer mustClose(t, w)
	appendN(t, w, 1, 5, 9)
	notFound := []struct{ stream, lo, hi uint64 }{
		{2, 1, 1}, {1, 0, 0}, {1, 4, 4}, {1, 10, 10}, {1, 4, 6}, {1, 8, 10},
	}
	for _, tc := range notFound {
		if _, err := w.Get(tc.stream, tc.lo); tc.lo == tc.hi && !errors.Is(err, ErrNotFound) {
			t.Errorf("Get(%d, %d): %v, want ErrNotFound", tc.stream, tc.lo, err)
		}
		called := false
		err := w.Range(tc.stream, tc.lo, tc.hi, func(uint64, []byte) bool { called = true; return true })
		if !errors.Is(err, ErrNotFound) || called {
			t.Errorf("Range(%d, %d, %d): %v, called %v; want ErrNotFound before any call", tc.stream, tc.lo, tc.hi, err, called)
		}
	}
	var ae *ArgError
	if err := w.Range(1, 7, 6, func(uint64, []byte) bool { return true }); !errors.As(err, &ae) || ae.Field != "hi" {
		t.Errorf("Range with hi < lo: %v, want ArgError on hi", err)
	}
	var seen []uint64
	if err := w.Range(1, 5, 9, func(i uint64, _ []byte) bool { seen = append(seen, i); return i < 7 }); err != nil || len(seen) != 3 {
		t.Errorf("Range stopping at 7: err %v, visited %v", err, seen)
	}
}

func TestArgErrorsNameFieldAndLimit(t *testing.T) {
	w := mustOpen(t, testDir, smallOpts(NewMemFS()))
	defer mustClose(t, w)
	ctx := context.Background()
	tests := []struct {
		err   error
		field string
	}{
		{w.TruncateSuffix(ctx, 1, 0), "from"},
		{w.TruncatePrefix(ctx, 1, 0), "upTo"},
		{w.Append(ctx, Entry{Stream: 1}), "Entry.Index"},
	}
	for _, tc := range tests {
		var ae *ArgError
		if !errors.As(tc.err, &ae) || ae.Field != tc.field || !strings.Contains(tc.err.Error(), tc.field) || ae.Limit == "" {
			t.Errorf("got %v, want an ArgError naming %s and its limit", tc.err, tc.field)
		}
	}
}

func TestOptionsValidation(t *testing.T) {
	tests := []struct {
		opts  Options
		field string
	}{
		{Options{SegmentSize: 100}, "Options.SegmentSize"},
		{Options{SegmentSize: 2 << 30}, "Options.SegmentSize"},
		{Options{MaxEntrySize: -1}, "Options.MaxEntrySize"},
		{Options{MaxEntrySize: 1 << 30}, "Options.MaxEntrySize"},
		{Options{CompactSegments: -1}, "Options.CompactSegments"},
		{Options{CompactLiveRatio: 1.5}, "Options.CompactLiveRatio"},
		{Options{CompactLiveRatio: -0.1}, "Options.CompactLiveRatio"},
	}
	for _, tc := range tests {
		fs := NewMemFS()
		tc.opts.FS = fs
		var ae *ArgError
		if _, err := Open(testDir, tc.opts); !errors.As(err, &ae) || ae.Field != tc.field {
			t.Errorf("Open(%+v): %v, want ArgError on %s", tc.opts, err, tc.field)
		}
		if names, _ := fs.ReadDir(testDir); len(names) != 0 {
			t.Errorf("Open with bad options created %v", names)
		}
	}
}

func TestReturnedAndPassedSlicesAreNotShared(t *testing.T) {
	for _, cache := range []int{-1, 0} {
		w := mustOpen(t, testDir, Options{FS: NewMemFS(), SegmentSize: MinSegmentSize, CacheEntries: cache})
		data := []byte("original")
		if err := w.Append(context.Background(), Entry{Stream: 1, Index: 1, Data: data}); err != nil {
			t.Fatal(err)
		}
		copy(data, "XXXXXXXX")
		got, _ := w.Get(1, 1)
		if string(got) != "original" {
			t.Fatalf("cache %d: stored data changed with the caller's buffer: %q", cache, got)
		}
		got[0] = 'Y'
		if again, _ := w.Get(1, 1); string(again) != "original" {
			t.Fatalf("cache %d: modifying a returned slice changed the stored data: %q", cache, again)
		}
		mustClose(t, w)
	}
}

func TestClosed(t *testing.T) {
	w := mustOpen(t, testDir, smallOpts(NewMemFS()))
	appendN(t, w, 1, 1, 3)
	mustClose(t, w)
	ctx := context.Background()
	for name, err := range map[string]error{
		"Append":         w.Append(ctx, Entry{Stream: 1, Index: 4}),
		"TruncateSuffix": w.TruncateSuffix(ctx, 1, 2),
		"TruncatePrefix": w.TruncatePrefix(ctx, 1, 2),
		"SetState":       w.SetState(ctx, 1, "k", nil),
		"DeleteStream":   w.DeleteStream(ctx, 1),
		"Close":          w.Close(),
		"Range":          w.Range(1, 1, 2, func(uint64, []byte) bool { return true }),
	} {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
	if _, err := w.Get(1, 1); !errors.Is(err, ErrClosed) {
		t.Errorf("Get after Close: %v, want ErrClosed", err)
	}
}

func TestSecondOpenIsLocked(t *testing.T) {
	for name, fs := range map[string]FS{"mem": NewMemFS(), "os": OSFS()} {
		dir := testDir
		if name == "os" {
			dir = t.TempDir()
		}
		w := mustOpen(t, dir, Options{FS: fs})
		if _, err := Open(dir, Options{FS: fs}); !errors.Is(err, ErrLocked) {
			t.Errorf("%s: second Open: %v, want ErrLocked", name, err)
		}
		mustClose(t, w)
		mustClose(t, mustOpen(t, dir, Options{FS: fs}))
	}
}

// stalled opens a WAL whose writer blocks inside the OnSync of its first
// batch until release is called, so that tests can queue requests behind it.
type stalled struct {
	*WAL
	entered chan struct{}
	gate    chan struct{}
	mu      sync.Mutex
	batches []int // records per batch
}

func openStalled(t *testing.T, fs FS) *stalled {
	s := &stalled{entered: make(chan struct{}, 1), gate: make(chan struct{})}
	opts := Options{FS: fs, SegmentSize: MinSegmentSize, OnSync: func(_ time.Duration, records, _ int) {
		s.mu.Lock()
		s.batches = append(s.batches, records)
		first := len(s.batches) == 1
		s.mu.Unlock()
		if first {
			s.entered <- struct{}{}
			<-s.gate
		}
	}}
	s.WAL = mustOpen(t, testDir, opts)
	go s.Append(context.Background(), Entry{Stream: 99, Index: 1})
	<-s.entered
	return s
}

func (s *stalled) release() { close(s.gate) }

func (s *stalled) queued() int {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	return len(s.queue)
}

// Concurrent appenders share one write and one sync, and an invalid
// request in the batch fails alone.
func TestGroupCommitSharesOneSync(t *testing.T) {
	s := openStalled(t, NewMemFS())
	const n = 20
	errs := make([]error, n+1)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			errs[i] = s.Append(context.Background(), Entry{Stream: uint64(i), Index: 1, Data: payload(uint64(i), 1, 40)})
		})
	}
	waitFor(t, "appenders to queue", func() bool { return s.queued() == n })
	wg.Go(func() { errs[n] = s.Append(context.Background(), Entry{Stream: 0, Index: 5}) })
	waitFor(t, "the invalid append to queue", func() bool { return s.queued() == n+1 })
	s.release()
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("append %d: %v", i, errs[i])
		}
		checkStream(t, s.WAL, uint64(i), 1, 1)
	}
	if !errors.Is(errs[n], ErrOutOfOrder) {
		t.Fatalf("invalid append: %v, want ErrOutOfOrder", errs[n])
	}
	// OnSync runs after the batch's callers are woken.
	waitFor(t, "the second OnSync", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.batches) == 2
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.batches[1] != n {
		t.Fatalf("records per sync = %v, want [1 %d]", s.batches, n)
	}
	if st := s.Stats(); st.Syncs != 2 || st.Records != n+1 {
		t.Fatalf("Stats: %d syncs, %d records; want 2, %d", st.Syncs, st.Records, n+1)
	}
	mustClose(t, s.WAL)
}

func TestContextEndsBeforeWrite(t *testing.T) {
	fs := NewMemFS()
	s := openStalled(t, fs)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Append(ctx, Entry{Stream: 1, Index: 1}) }()
	waitFor(t, "append to queue", func() bool { return s.queued() == 1 })
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Append: %v, want context.Canceled", err)
	}
	s.release()
	if err := s.Append(context.Background(), Entry{Stream: 2, Index: 1}); err != nil {
		t.Fatal(err)
	}
	checkStream(t, s.WAL, 1, 0, 0)
	if err := s.Append(ctx, Entry{Stream: 1, Index: 1}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Append with an ended context: %v", err)
	}
	mustClose(t, s.WAL)
	w := mustOpen(t, testDir, Options{FS: fs, SegmentSize: MinSegmentSize})
	defer mustClose(t, w)
	checkStream(t, w, 1, 0, 0)
}

func TestIOErrorIsSticky(t *testing.T) {
	for _, op := range []Op{OpWrite, OpSync} {
		t.Run(string(op), func(t *testing.T) {
			fs := NewMemFS()
			w := mustOpen(t, testDir, smallOpts(fs))
			appendN(t, w, 1, 1, 3)
			injected := errors.New("injected")
			fs.SetFault(func(o Op, _ string) error {
				if o == op {
					return injected
				}
				return nil
			})
			err := w.Append(context.Background(), Entry{Stream: 1, Index: 4})
			if !errors.Is(err, injected) || !errors.Is(err, ErrClosed) {
				t.Fatalf("Append during fault: %v, want ErrClosed wrapping the injected error", err)
			}
			fs.SetFault(nil)
			if err := w.Append(context.Background(), Entry{Stream: 1, Index: 4}); !errors.Is(err, ErrClosed) || !errors.Is(err, injected) {
				t.Fatalf("Append after fault: %v, want the sticky error", err)
			}
			checkStream(t, w, 1, 1, 3)
			if err := w.Close(); !errors.Is(err, injected) {
				t.Fatalf("Close: %v, want the sticky error", err)
			}
			fs.Crash()
			w = mustOpen(t, testDir, smallOpts(fs))
			defer mustClose(t, w)
			checkStream(t, w, 1, 1, 3)
			appendN(t, w, 1, 4, 5)
		})
	}
}

func TestStatsAndOnSync(t *testing.T) {
	var mu sync.Mutex
	var calls, records, bytes int
	opts := smallOpts(NewMemFS())
	opts.OnSync = func(d time.Duration, r, b int) {
		mu.Lock()
		defer mu.Unlock()
		if d < 0 {
			t.Errorf("negative sync duration %v", d)
		}
		calls++
		records += r
		bytes += b
	}
	w := mustOpen(t, testDir, opts)
	defer mustClose(t, w)
	appendN(t, w, 1, 1, 10)
	if err := w.SetState(context.Background(), 1, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	st := w.Stats()
	waitFor(t, "OnSync of the last batch, which runs after its caller is woken", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return calls == 11
	})
	mu.Lock()
	defer mu.Unlock()
	if calls != 11 || records != 11 || st.Syncs != 11 || st.Records != 11 || uint64(bytes) != st.BytesWritten {
		t.Fatalf("OnSync saw %d calls, %d records, %d bytes; Stats %+v", calls, records, bytes, st)
	}
	if want := int64(11*minRecordSize + 10*40 + 3 + 11*batchRecordSize); int64(st.BytesWritten) != want {
		t.Fatalf("BytesWritten = %d, want %d", st.BytesWritten, want)
	}
	if st.Streams != 1 || st.Segments < 1 || st.SizeBytes < int64(st.Segments)*MinSegmentSize || st.LiveBytes <= 0 {
		t.Fatalf("implausible Stats %+v", st)
	}
}

// Readers see consistent data while appends, truncations and reclamation
// run: every entry read is one that was appended under that index.
func TestConcurrentReadsAndWrites(t *testing.T) {
	fs := NewMemFS()
	w := mustOpen(t, testDir, smallOpts(fs))
	defer mustClose(t, w)
	const streams, perStream = 4, 300
	ctx, cancel := context.WithCancel(context.Background())
	var writers, readers sync.WaitGroup
	for s := range uint64(streams) {
		writers.Go(func() {
			for i := uint64(1); i <= perStream; i++ {
				if err := w.Append(ctx, Entry{Stream: s, Index: i, Data: payload(s, i, 40)}); err != nil {
					t.Error(err)
					return
				}
				if i%50 == 0 {
					if err := w.TruncatePrefix(ctx, s, i-20); err != nil {
						t.Error(err)
						return
					}
				}
			}
		})
	}
	for r := range 3 {
		readers.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(r), 1))
			for ctx.Err() == nil {
				s := rng.Uint64N(streams)
				first, last := w.FirstIndex(s), w.LastIndex(s)
				if last == 0 {
					continue
				}
				lo := first + rng.Uint64N(last-first+1)
				err := w.Range(s, lo, last, func(i uint64, d []byte) bool {
					if !bytes.Equal(d, payload(s, i, 40)) {
						t.Errorf("stream %d index %d: read %q", s, i, d)
					}
					return true
				})
				if err != nil && !errors.Is(err, ErrNotFound) {
					t.Error(err)
				}
			}
		})
	}
	writers.Wait()
	cancel()
	readers.Wait()
	for s := range uint64(streams) {
		checkStream(t, w, s, perStream-20+1, perStream)
	}
	waitFor(t, "a segment to be reclaimed", func() bool { return w.Stats().SegmentsDeleted > 0 })
}

func TestDiskReadVerifiesChecksum(t *testing.T) {
	fs := NewMemFS()
	w := mustOpen(t, testDir, Options{FS: fs, SegmentSize: MinSegmentSize, CacheEntries: -1})
	defer mustClose(t, w)
	appendN(t, w, 1, 1, 2)
	f, err := fs.Open(segPath(testDir, 1))
	if err != nil {
		t.Fatal(err)
	}
	// Entry 2 is the last record; flip the last byte of its payload.
	off := int64(segmentHeaderSize + 2*(batchRecordSize+minRecordSize+40) - 1)
	if _, err := f.WriteAt([]byte{0xff}, off); err != nil {
		t.Fatal(err)
	}
	var ce *CorruptionError
	if _, err := w.Get(1, 2); !errors.As(err, &ce) || ce.Segment != segmentName(1) {
		t.Fatalf("Get of a damaged record: %v, want CorruptionError in %s", err, segmentName(1))
	}
	if _, err := w.Get(1, 1); err != nil {
		t.Fatalf("Get of an intact record: %v", err)
	}
}

// TestAppendAsyncKeepsCallOrder: appends queued without waiting reach the
// log in the order of the calls, each channel reports its own outcome (an
// append out of order fails alone), and the data is there after a reopen.
func TestAppendAsyncKeepsCallOrder(t *testing.T) {
	fs := NewMemFS()
	w := mustOpen(t, "/wal", smallOpts(fs))
	var dones []<-chan error
	for i := uint64(1); i <= 100; i++ {
		dones = append(dones, w.AppendAsync(Entry{Stream: 9, Index: i, Data: payload(9, i, 50)}))
	}
	gap := w.AppendAsync(Entry{Stream: 9, Index: 200, Data: []byte("gap")})
	for i, done := range dones {
		if err := <-done; err != nil {
			t.Fatalf("append %d: %v", i+1, err)
		}
	}
	var oe *OrderError
	if err := <-gap; !errors.As(err, &oe) {
		t.Fatalf("an append out of order: %v, want *OrderError", err)
	}
	if err := <-w.AppendAsync(); err != nil {
		t.Fatalf("no entries: %v", err)
	}
	mustClose(t, w)
	if err := <-w.AppendAsync(Entry{Stream: 9, Index: 101, Data: []byte("x")}); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v, want ErrClosed", err)
	}
	w = mustOpen(t, "/wal", smallOpts(fs))
	defer mustClose(t, w)
	if last := w.LastIndex(9); last != 100 {
		t.Fatalf("last index after reopening %d, want 100", last)
	}
	for i := uint64(1); i <= 100; i++ {
		got, err := w.Get(9, i)
		if err != nil || !bytes.Equal(got, payload(9, i, 50)) {
			t.Fatalf("entry %d after reopening: %v", i, err)
		}
	}
}
