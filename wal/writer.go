package wal

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"
)

type opKind uint8

const (
	opAppend opKind = iota
	opTruncateSuffix
	opTruncatePrefix
	opSetState
	opDeleteStream
)

// Request states: the writer claims a pending request before encoding it,
// a caller whose context ended cancels it; whoever wins decides whether it
// is written.
const (
	reqPending uint32 = iota
	reqClaimed
	reqCancelled
)

type request struct {
	op      opKind
	entries []Entry
	stream  uint64
	index   uint64
	key     string
	value   []byte

	state atomic.Uint32
	err   error
	done  chan error
}

// submit queues r for the writer and waits for its result.
func (w *WAL) submit(ctx context.Context, r *request) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := w.enqueue(r); err != nil {
		return err
	}
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		if r.state.CompareAndSwap(reqPending, reqCancelled) {
			return ctx.Err()
		}
		return <-r.done
	}
}

// enqueue hands r to the writer; r.done receives its result.
func (w *WAL) enqueue(r *request) error {
	r.done = make(chan error, 1)
	w.qmu.Lock()
	defer w.qmu.Unlock()
	switch {
	case w.failed != nil:
		return w.failed
	case w.closing:
		return ErrClosed
	}
	w.queue = append(w.queue, r)
	if len(w.queue) >= w.wakeAt {
		w.qcond.Signal()
	}
	return nil
}

// span is a stream's index range as the writer validates against it;
// last == 0 means no entries.
type span struct{ first, last uint64 }

type undoRec struct {
	stream uint64
	prev   span
	had    bool
}

// writer is the state owned by the writer goroutine.
type writer struct {
	active     *segment
	buf        []byte
	batchLimit int
	pending    []*request
	batch      []*request
	overlay    map[uint64]span // spans changed by the batch being encoded
	undo       []undoRec       // overlay changes of the request being encoded
	compact    *compaction
	// The previous batch's request count and sync time, for gather.
	lastRequests int
	lastSync     time.Duration
}

func (wr *writer) init(segmentSize int64) {
	wr.batchLimit = int(min(maxBatchBytes, segmentSize-segmentHeaderSize))
	wr.overlay = make(map[uint64]span)
}

// run is the writer goroutine: one write and one sync per loop.
func (w *WAL) run() {
	defer close(w.exited)
	for {
		w.qmu.Lock()
		for len(w.queue) == 0 && len(w.pending) == 0 && !w.closing && w.compact == nil {
			w.qcond.Wait()
		}
		w.gather()
		w.pending = append(w.pending, w.queue...)
		clear(w.queue)
		w.queue = w.queue[:0]
		closing := w.closing
		w.qmu.Unlock()
		if len(w.pending) == 0 && closing {
			return
		}
		n, err := w.commit(w.pending)
		rest := copy(w.pending, w.pending[n:])
		clear(w.pending[rest:])
		w.pending = w.pending[:rest]
		if err != nil {
			w.fail(err)
			return
		}
	}
}

// gather waits, with qmu held, while fewer requests are queued than the
// previous batch carried, for at most half a sync time. Callers
// acknowledged together resubmit together; without the wait the first few
// to come back would be written alone and the rest would wait for the next
// sync, splitting a closed-loop load into two half-size batches forever.
// One request has nobody to wait for, so a lone writer never waits.
func (w *WAL) gather() {
	want := w.lastRequests
	if want <= 1 || len(w.queue) == 0 || len(w.queue) >= want || len(w.pending) > 0 || w.closing {
		return
	}
	expired := false
	t := time.AfterFunc(w.lastSync/2, func() {
		w.qmu.Lock()
		defer w.qmu.Unlock()
		expired = true
		w.qcond.Signal()
	})
	w.wakeAt = want
	for len(w.queue) < want && !expired && !w.closing {
		w.qcond.Wait()
	}
	w.wakeAt = 1
	t.Stop()
}

// fail makes err sticky and fails every request not yet completed.
func (w *WAL) fail(err error) {
	w.qmu.Lock()
	w.failed = fmt.Errorf("%w after I/O error: %w", ErrClosed, err)
	rest := append(w.pending, w.queue...)
	w.queue = nil
	w.qmu.Unlock()
	for _, r := range rest {
		if r.state.CompareAndSwap(reqPending, reqClaimed) {
			r.done <- w.failed
		}
	}
	w.pending = nil
}

// commit writes one batch made of compaction copies and a prefix of reqs,
// syncs it, applies it and completes its requests. It returns how many
// requests it consumed and an error if the WAL must stop.
func (w *WAL) commit(reqs []*request) (int, error) {
	buf := append(w.buf[:0], make([]byte, batchRecordSize)...)
	var err error
	if w.compact != nil {
		if buf, err = w.compact.fill(buf, w.idx, min(compactChunk, w.batchLimit/2)); err != nil {
			return 0, err
		}
	}
	userStart := len(buf)
	clear(w.overlay)
	n := 0
	for _, r := range reqs {
		if n > 0 && len(buf) >= w.batchLimit {
			break
		}
		n++
		if !r.state.CompareAndSwap(reqPending, reqClaimed) {
			continue
		}
		mark := len(buf)
		if buf, r.err = w.encode(buf, r); r.err != nil {
			buf = buf[:mark]
		}
		w.batch = append(w.batch, r)
	}
	w.buf = buf
	records := 0
	if len(buf) > batchRecordSize {
		records, err = w.write(buf, userStart)
	}
	w.lastRequests = len(w.batch)
	for _, r := range w.batch {
		if err != nil {
			r.err = fmt.Errorf("%w after I/O error: %w", ErrClosed, err)
		}
		r.done <- r.err
	}
	clear(w.batch)
	w.batch = w.batch[:0]
	if err != nil {
		return n, err
	}
	if records > 0 && w.opts.OnSync != nil {
		w.opts.OnSync(w.lastSync, records, len(buf))
	}
	return n, w.reclaim()
}

// write writes buf as one batch, syncs it and applies it to the index. It
// returns how many records the batch held.
func (w *WAL) write(buf []byte, userStart int) (int, error) {
	seg := w.active
	if seg.size+int64(len(buf)) > w.opts.SegmentSize && seg.size > segmentHeaderSize {
		var err error
		if seg, err = w.roll(); err != nil {
			return 0, err
		}
	}
	off := seg.size
	putBatchRecord(buf, seg.seq, off)
	start := time.Now()
	if _, err := seg.f.WriteAt(buf, off); err != nil {
		return 0, fmt.Errorf("write %s: %w", seg.name, err)
	}
	if err := seg.f.Sync(); err != nil {
		return 0, fmt.Errorf("sync %s: %w", seg.name, err)
	}
	w.lastSync = time.Since(start)
	records, err := w.apply(buf, seg, off, userStart)
	if err != nil {
		return 0, err
	}
	w.syncs.Add(1)
	w.records.Add(uint64(records))
	w.bytesWritten.Add(uint64(len(buf)))
	return records, nil
}

// apply applies the records of a batch written at off of seg and returns
// how many there were. Records from userStart on enter the cache.
func (w *WAL) apply(buf []byte, seg *segment, off int64, userStart int) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	seg.size += int64(len(buf))
	seg.fileSize = max(seg.fileSize, seg.size)
	w.idx.written += int64(len(buf))
	records := 0
	err := forEachRecord(buf, func(r record, p, n int) error {
		records++
		at := loc{seq: seg.seq, off: uint32(off) + uint32(p), n: uint32(n)}
		if err := w.idx.apply(r, at, p >= userStart); err != nil {
			return fmt.Errorf("apply batch at %s:%d: %w", seg.name, at.off, err)
		}
		return nil
	})
	return records, err
}

// roll makes a new segment the active one.
func (w *WAL) roll() (*segment, error) {
	seg, err := createSegment(w.fs, w.dir, w.active.seq+1, w.opts.SegmentSize)
	if err != nil {
		return nil, err
	}
	w.mu.Lock()
	w.idx.segs = append(w.idx.segs, seg)
	w.mu.Unlock()
	w.active = seg
	return seg, nil
}

// span returns the stream's span as left by the requests encoded so far.
func (w *WAL) span(id uint64) span {
	if sp, ok := w.overlay[id]; ok {
		return sp
	}
	if st := w.idx.streams[id]; st != nil && len(st.locs) > 0 {
		return span{st.first, st.last()}
	}
	return span{}
}

func (w *WAL) setSpan(id uint64, sp span) {
	prev, had := w.overlay[id]
	w.undo = append(w.undo, undoRec{id, prev, had})
	w.overlay[id] = sp
}

// encode validates r against the spans left by the requests before it in
// the batch and appends its records to buf. On error buf's new bytes must
// be discarded; the overlay is already restored.
func (w *WAL) encode(buf []byte, r *request) ([]byte, error) {
	w.undo = w.undo[:0]
	switch r.op {
	case opAppend:
		for _, e := range r.entries {
			sp := w.span(e.Stream)
			if sp.last == 0 {
				sp.first = e.Index
			} else if e.Index != sp.last+1 {
				w.rollback()
				return buf, &OrderError{Stream: e.Stream, Index: e.Index, Want: sp.last + 1}
			}
			sp.last = e.Index
			w.setSpan(e.Stream, sp)
			buf = appendRecord(buf, recEntry, e.Stream, e.Index, e.Data)
		}
	case opTruncateSuffix:
		sp := w.span(r.stream)
		if r.index <= sp.first {
			sp = span{}
		} else if r.index <= sp.last {
			sp.last = r.index - 1
		}
		w.setSpan(r.stream, sp)
		buf = appendRecord(buf, recTruncateSuffix, r.stream, r.index, nil)
	case opTruncatePrefix:
		sp := w.span(r.stream)
		if r.index >= sp.last {
			sp = span{}
		} else if r.index >= sp.first {
			sp.first = r.index + 1
		}
		w.setSpan(r.stream, sp)
		buf = appendRecord(buf, recTruncatePrefix, r.stream, r.index, nil)
	case opSetState:
		buf = appendState(buf, r.stream, r.key, r.value)
	case opDeleteStream:
		w.setSpan(r.stream, span{})
		buf = appendRecord(buf, recDeleteStream, r.stream, 0, nil)
	}
	return buf, nil
}

func (w *WAL) rollback() {
	for i := len(w.undo) - 1; i >= 0; i-- {
		u := w.undo[i]
		if u.had {
			w.overlay[u.stream] = u.prev
		} else {
			delete(w.overlay, u.stream)
		}
	}
}
