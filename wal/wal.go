package wal

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

const (
	DefaultSegmentSize      = 64 << 20
	MinSegmentSize          = 4 << 10
	MaxSegmentSize          = 1 << 30
	DefaultCacheEntries     = 1024
	DefaultMaxEntrySize     = 16 << 20
	DefaultCompactSegments  = 4
	DefaultCompactLiveRatio = 0.5

	maxEntryLimit   = 256 << 20
	maxRequestBytes = 1 << 30 // keeps every offset within a uint32
	maxKeyLen       = 255
	maxBatchBytes   = 4 << 20
	compactChunk    = 256 << 10
	rangeChunk      = 64
)

// Options configure a WAL. The zero value of every field selects its default.
type Options struct {
	// FS is the file system; default OSFS().
	FS FS
	// SegmentSize is the size at which segments roll and to which they are
	// preallocated; default 64 MiB, at least 4 KiB, at most 1 GiB.
	SegmentSize int64
	// CacheEntries is how many of each stream's most recent entries are kept
	// in memory; default 1024, negative disables the cache.
	CacheEntries int
	// MaxEntrySize bounds Entry.Data and state values; default 16 MiB, at
	// most 256 MiB.
	MaxEntrySize int
	// CompactSegments and CompactLiveRatio are the rewrite policy: when more
	// than CompactSegments segments exist and live bytes are below
	// CompactLiveRatio of written bytes, the oldest segment's live records
	// are copied forward and it is deleted. Defaults 4 and 0.5; the ratio is
	// in (0, 1].
	CompactSegments  int
	CompactLiveRatio float64
	// OnSync, if set, is called by the writer after each sync with its
	// duration and the records and bytes it covered. It must not block.
	OnSync func(d time.Duration, records int, bytes int)
}

func (o Options) withDefaults() (Options, error) {
	if o.FS == nil {
		o.FS = OSFS()
	}
	if o.SegmentSize == 0 {
		o.SegmentSize = DefaultSegmentSize
	}
	if o.SegmentSize < MinSegmentSize || o.SegmentSize > MaxSegmentSize {
		return o, &ArgError{"Options.SegmentSize", o.SegmentSize, fmt.Sprintf("between %d and %d bytes", MinSegmentSize, MaxSegmentSize)}
	}
	switch {
	case o.CacheEntries == 0:
		o.CacheEntries = DefaultCacheEntries
	case o.CacheEntries < 0:
		o.CacheEntries = 0
	}
	if o.MaxEntrySize == 0 {
		o.MaxEntrySize = DefaultMaxEntrySize
	}
	if o.MaxEntrySize < 0 || o.MaxEntrySize > maxEntryLimit {
		return o, &ArgError{"Options.MaxEntrySize", o.MaxEntrySize, fmt.Sprintf("between 1 and %d bytes", maxEntryLimit)}
	}
	if o.CompactSegments == 0 {
		o.CompactSegments = DefaultCompactSegments
	}
	if o.CompactSegments < 0 {
		return o, &ArgError{"Options.CompactSegments", o.CompactSegments, "at least 1"}
	}
	if o.CompactLiveRatio == 0 {
		o.CompactLiveRatio = DefaultCompactLiveRatio
	}
	if !(o.CompactLiveRatio > 0 && o.CompactLiveRatio <= 1) {
		return o, &ArgError{"Options.CompactLiveRatio", o.CompactLiveRatio, "in (0, 1]"}
	}
	return o, nil
}

// Entry is one log entry of a stream.
type Entry struct {
	Stream uint64
	Index  uint64
	Data   []byte
}

// RecoveryInfo describes what Open found.
type RecoveryInfo struct {
	Segments int   // segment files replayed
	Records  int64 // records replayed, not counting batch records
	// TornSegment and TornOffset locate a torn tail cut off the last
	// segment (empty when there was none); DroppedBytes counts the bytes
	// dropped, from TornOffset to the last non-zero byte.
	TornSegment  string
	TornOffset   int64
	DroppedBytes int64
}

// Stats are counters for metrics.
type Stats struct {
	SizeBytes       int64  // bytes of segment files on disk, preallocation included
	LiveBytes       int64  // encoded bytes of live records
	Segments        int    // segment files
	Streams         int    // streams holding entries or state
	Syncs           uint64 // fdatasyncs of batches
	Records         uint64 // records written, compaction copies included
	BytesWritten    uint64 // bytes written by batches
	SegmentsDeleted uint64 // segments reclaimed
	Compactions     uint64 // segments whose live records were copied forward
}

// WAL is a shared write-ahead log. All methods are safe for concurrent use.
type WAL struct {
	dir      string
	opts     Options
	fs       FS
	lock     interface{ Close() error }
	recovery RecoveryInfo

	mu     sync.RWMutex // guards idx, segment sizes and closed
	idx    *index
	closed bool

	qmu     sync.Mutex // guards the fields below
	qcond   *sync.Cond
	queue   []*request
	wakeAt  int // queue length at which submit wakes the writer
	closing bool
	failed  error
	exited  chan struct{}

	writer // owned by the writer goroutine

	syncs, records, bytesWritten, deleted, compactions atomic.Uint64
}

// Open opens or creates the WAL in dir and replays it. See the package
// documentation for what counts as a torn tail and what as corruption.
func Open(dir string, opts Options) (*WAL, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := opts.FS.MkdirAll(dir); err != nil {
		return nil, fmt.Errorf("wal: %w", err)
	}
	lock, err := opts.FS.Lock(filepath.Join(dir, "LOCK"))
	if err != nil {
		return nil, err
	}
	w := &WAL{
		dir:    dir,
		opts:   opts,
		fs:     opts.FS,
		lock:   lock,
		idx:    newIndex(opts.CacheEntries),
		exited: make(chan struct{}),
		wakeAt: 1,
	}
	w.qcond = sync.NewCond(&w.qmu)
	w.writer.init(opts.SegmentSize)
	if err := w.recover(); err != nil {
		w.release()
		return nil, err
	}
	if err := w.reclaim(); err != nil {
		w.release()
		return nil, err
	}
	go w.run()
	return w, nil
}

// release closes every file and the lock.
func (w *WAL) release() {
	for _, s := range w.idx.segs {
		s.release()
	}
	w.idx.segs = nil
	w.lock.Close()
}

// Close waits for queued requests to complete, stops the writer and closes
// the files. It returns the error that made the WAL refuse writes, if any.
func (w *WAL) Close() error {
	w.qmu.Lock()
	if w.closing {
		w.qmu.Unlock()
		return ErrClosed
	}
	w.closing = true
	w.qcond.Signal()
	w.qmu.Unlock()
	<-w.exited

	w.mu.Lock()
	w.closed = true
	w.release()
	w.mu.Unlock()

	w.qmu.Lock()
	defer w.qmu.Unlock()
	return w.failed
}

// Recovery reports what Open found.
func (w *WAL) Recovery() RecoveryInfo { return w.recovery }

// Stats returns current counters.
func (w *WAL) Stats() Stats {
	w.mu.RLock()
	s := Stats{
		LiveBytes: w.idx.live,
		Segments:  len(w.idx.segs),
		Streams:   len(w.idx.streams),
	}
	for _, seg := range w.idx.segs {
		s.SizeBytes += seg.fileSize
	}
	w.mu.RUnlock()
	s.Syncs = w.syncs.Load()
	s.Records = w.records.Load()
	s.BytesWritten = w.bytesWritten.Load()
	s.SegmentsDeleted = w.deleted.Load()
	s.Compactions = w.compactions.Load()
	return s
}

// FirstIndex returns the stream's first index, 0 if it has no entries.
func (w *WAL) FirstIndex(stream uint64) uint64 {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if st := w.idx.streams[stream]; st != nil && len(st.locs) > 0 {
		return st.first
	}
	return 0
}

// LastIndex returns the stream's last index, 0 if it has no entries.
func (w *WAL) LastIndex(stream uint64) uint64 {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if st := w.idx.streams[stream]; st != nil {
		return st.last()
	}
	return 0
}

// Streams returns the ids of the streams holding entries or state, ascending.
func (w *WAL) Streams() []uint64 {
	w.mu.RLock()
	defer w.mu.RUnlock()
	ids := make([]uint64, 0, len(w.idx.streams))
	for id := range w.idx.streams {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// State returns a copy of the stream's value for key.
func (w *WAL) State(stream uint64, key string) ([]byte, bool) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if st := w.idx.streams[stream]; st != nil {
		if sv, ok := st.states[key]; ok {
			return slices.Clone(sv.value), true
		}
	}
	return nil, false
}

// Get returns a copy of the data of one entry, or an error matching
// ErrNotFound if the stream does not hold that index.
func (w *WAL) Get(stream, index uint64) ([]byte, error) {
	var data []byte
	err := w.Range(stream, index, index, func(_ uint64, d []byte) bool {
		data = d
		return false
	})
	return data, err
}

// Range calls fn for every entry of stream with lo ≤ index ≤ hi, in order,
// until fn returns false. The range must lie within [FirstIndex, LastIndex]
// or Range returns an error matching ErrNotFound without calling fn; if a
// concurrent truncation removes entries not yet visited, Range stops with
// such an error. fn owns data and runs with no lock held.
func (w *WAL) Range(stream, lo, hi uint64, fn func(index uint64, data []byte) bool) error {
	if hi < lo {
		return &ArgError{"hi", hi, fmt.Sprintf("at least lo (%d)", lo)}
	}
	refs := make([]entryRef, 0, min(hi-lo+1, rangeChunk))
	for i := lo; ; {
		n := min(hi-i, rangeChunk-1) + 1
		var err error
		if refs, err = w.refs(refs[:0], stream, i, i+n-1); err != nil {
			return err
		}
		for k, r := range refs {
			data, err := r.read(stream, i+uint64(k))
			if err == nil && !fn(i+uint64(k), data) {
				err = errStop
			}
			if err != nil {
				releaseRefs(refs[k+1:])
				if err == errStop {
					return nil
				}
				return err
			}
		}
		if hi-i < n {
			return nil
		}
		i += n
	}
}

var errStop = errors.New("stop")

// entryRef is how to read one entry: its cached data, or its location with
// a reference held on the segment.
type entryRef struct {
	data []byte
	seg  *segment
	at   loc
}

// refs appends references to entries lo..hi of stream, all of which must
// exist.
func (w *WAL) refs(dst []entryRef, stream, lo, hi uint64) ([]entryRef, error) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed {
		return dst, ErrClosed
	}
	st := w.idx.streams[stream]
	if st == nil || !st.has(lo) || !st.has(hi) {
		return dst, fmt.Errorf("%w: stream %d has no entries %d..%d", ErrNotFound, stream, lo, hi)
	}
	for i := lo; i <= hi; i++ {
		if d, ok := st.cached(i); ok {
			dst = append(dst, entryRef{data: d})
			continue
		}
		at := st.loc(i)
		seg := w.idx.seg(at.seq)
		seg.acquire()
		dst = append(dst, entryRef{seg: seg, at: at})
	}
	return dst, nil
}

func (r entryRef) read(stream, index uint64) ([]byte, error) {
	if r.seg == nil {
		return slices.Clone(r.data), nil
	}
	defer r.seg.release()
	return r.seg.readEntry(r.at, stream, index)
}

func releaseRefs(refs []entryRef) {
	for _, r := range refs {
		if r.seg != nil {
			r.seg.release()
		}
	}
}

// Append durably appends entries, which may belong to several streams.
// Each stream's entries must continue it: the first index is LastIndex+1,
// or any index ≥ 1 if the stream has no entries, and the following ones
// are consecutive. Otherwise Append returns an *OrderError and writes
// nothing. If ctx ends first Append returns ctx.Err() only when nothing was
// written; once the writer has taken the request it waits for the result.
// Data is copied.
func (w *WAL) Append(ctx context.Context, entries ...Entry) error {
	if len(entries) == 0 {
		return nil
	}
	if err := w.checkAppend(entries); err != nil {
		return err
	}
	return w.submit(ctx, &request{op: opAppend, entries: entries})
}

// AppendAsync is Append without the wait: the request is queued for the
// writer before AppendAsync returns, so the appends of one caller reach the
// log in the order of its calls, and the channel receives the result once
// the write is durable (or has failed). It cannot be cancelled: once
// queued, the entries are written. Data is copied before the channel
// receives the result; the caller must not change it before then.
func (w *WAL) AppendAsync(entries ...Entry) <-chan error {
	r := &request{op: opAppend, entries: entries}
	if len(entries) == 0 {
		done := make(chan error, 1)
		done <- nil
		return done
	}
	err := w.checkAppend(entries)
	if err == nil {
		err = w.enqueue(r)
	}
	if err != nil {
		done := make(chan error, 1)
		done <- err
		return done
	}
	return r.done
}

// checkAppend checks what Append and AppendAsync check before queueing.
func (w *WAL) checkAppend(entries []Entry) error {
	total := 0
	for _, e := range entries {
		if e.Index == 0 {
			return &ArgError{"Entry.Index", 0, "at least 1"}
		}
		if len(e.Data) > w.opts.MaxEntrySize {
			return &ArgError{"Entry.Data", fmt.Sprintf("of %d bytes", len(e.Data)), fmt.Sprintf("at most %d bytes (Options.MaxEntrySize)", w.opts.MaxEntrySize)}
		}
		total += minRecordSize + len(e.Data)
	}
	if total > maxRequestBytes {
		return &ArgError{"entries", fmt.Sprintf("of %d encoded bytes", total), fmt.Sprintf("at most %d bytes per call", maxRequestBytes)}
	}
	return nil
}

// TruncateSuffix durably removes the stream's entries with index ≥ from;
// the next append may then start at from (or anywhere if none remain).
func (w *WAL) TruncateSuffix(ctx context.Context, stream, from uint64) error {
	if from == 0 {
		return &ArgError{"from", 0, "at least 1"}
	}
	return w.submit(ctx, &request{op: opTruncateSuffix, stream: stream, index: from})
}

// TruncatePrefix durably removes the stream's entries with index ≤ upTo;
// FirstIndex becomes upTo+1 if entries remain. If upTo ≥ LastIndex the
// stream is left empty and its next append may start at any index, which
// is how a stream is reset to start after an installed snapshot.
func (w *WAL) TruncatePrefix(ctx context.Context, stream, upTo uint64) error {
	if upTo == 0 {
		return &ArgError{"upTo", 0, "at least 1"}
	}
	return w.submit(ctx, &request{op: opTruncatePrefix, stream: stream, index: upTo})
}

// SetState durably sets the stream's value for key. Value is copied.
func (w *WAL) SetState(ctx context.Context, stream uint64, key string, value []byte) error {
	if len(key) == 0 || len(key) > maxKeyLen {
		return &ArgError{"key", fmt.Sprintf("%q", key), fmt.Sprintf("1 to %d bytes", maxKeyLen)}
	}
	if len(value) > w.opts.MaxEntrySize {
		return &ArgError{"value", fmt.Sprintf("of %d bytes", len(value)), fmt.Sprintf("at most %d bytes (Options.MaxEntrySize)", w.opts.MaxEntrySize)}
	}
	return w.submit(ctx, &request{op: opSetState, stream: stream, key: key, value: value})
}

// DeleteStream durably removes the stream's entries and state.
func (w *WAL) DeleteStream(ctx context.Context, stream uint64) error {
	return w.submit(ctx, &request{op: opDeleteStream, stream: stream})
}

// Every record offset must fit the uint32 of loc: a segment holds at most
// MaxSegmentSize bytes plus one batch, and a batch at most maxBatchBytes
// plus one request. The conversion fails to compile if that overflows.
const _ = uint32(MaxSegmentSize + maxBatchBytes + maxRequestBytes + segmentHeaderSize)
