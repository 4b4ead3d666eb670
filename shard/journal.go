package shard

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ringkv/ringkv/fsm"
	"github.com/ringkv/ringkv/wal"
)

// The fast-write journal.
//
// A fast write is acknowledged once it is durable on its primary. It used to
// reach that point through raft: raft.Apply waited for the partition's
// leader loop, which stores one batch of entries at a time, so a fast write
// waited for about one and a half log stores of its partition before its
// own began (docs/benchmarks.md, "Where a 64-client write's time goes"),
// and cost what a strong write costs minus one round trip. Now the primary
// appends it to the partition's journal, a stream of the node's shared WAL
// (JournalStreamOf), and acknowledges it once that append is durable: it
// shares the WAL's group commit with every other stream of the node, and no
// raft goroutine is on the way.
//
// Replication follows. Every journal record also joins the partition's
// proposal queue (journal.q); one proposer per replica (runProposer) drains
// the queue in order and proposes each run of fast writes as one entry (a
// Batch, fsm.JoinWrites), so a run that queued while raft was busy costs one
// loop turn, one log store and one AppendEntries per follower. A write that
// must follow a queued one of its key into the log (a strong write of a key
// with fast writes queued, and a split, which must follow every queued
// write) joins the same queue as an entry of its own, and the proposer hands
// its writer the future: a key's writes reach the log in version order
// whatever their mode (TestFastThenStrongKeepOrder). A strong write of a key
// with nothing queued is proposed by its writer, as before.
//
// Records leave the journal in order, as a prefix (wal.TruncatePrefix), once
// nothing needs them: a record proposed by this replica while it leads is
// released once its entry is applied (runReleaser reads the futures in
// order), by which time a majority holds it. What stops that path ends an
// epoch (endEpoch): leadership lost, or an entry raft refused or did not
// commit. The records of an ended epoch, proposed or not, go to the
// re-offer path (reoffer.go), which hands them, with their original stamps,
// to whichever replica leads (itself included) and releases them once that
// primary applied them; a record that did commit meanwhile is "already
// applied" there. A restart ends the epoch too: Open finds the records
// still in the journal and re-offers them. So a fast write leaves the
// journal only once applied by a primary, or refused for good
// (Stats.ReofferDropped), never silently.
//
// Backpressure: the journal holds at most Config.JournalEntries records and
// Config.JournalBytes bytes (plus one record per writer passing the check at
// the same moment). A fast write waits for room before it is numbered and,
// if none frees within its deadline, fails with *JournalFullError, which the
// router answers Unavailable naming the partition: replication, not the
// client, sets the pace. Stats.JournalRecords and Stats.JournalBytes show
// the depth, and Config.OnReplicated the lag of each write.
//
// # Invariants
//
//   - Records are numbered first..next-1, consecutively, in the order they
//     were queued for the WAL, which is their order in q and, for one key,
//     their version order: a writer numbers, queues and appends its record
//     under its key's propose stripe.
//   - Records ≤ reofferTo belong to the re-offer path, records above it to
//     the current epoch's proposer; first only moves forward, past records
//     one of the two paths is done with.
//   - A queue item of an ended epoch is dropped, not proposed: its record is
//     the re-offer path's.

// Defaults of the journal's bounds (Config.JournalEntries, JournalBytes).
const (
	DefaultJournalEntries = 8192
	DefaultJournalBytes   = 64 << 20
)

// An entry the proposer builds holds at most maxRunWrites writes and, past
// its first write, maxRunBytes bytes: raft stores and sends it whole, and
// followers apply it as one engine batch.
const (
	maxRunWrites = 512
	maxRunBytes  = 1 << 20
)

// JournalStreamOf is the WAL stream holding a partition's fast-write
// journal, above every Raft log stream (StreamOf).
func JournalStreamOf(partition uint32) uint64 { return 1<<32 | uint64(partition) }

type journalRecord struct {
	size int64
	at   time.Time // when it was appended
}

// queued is an item of the proposal queue: a journal record (index > 0),
// or an entry proposed in order whose writer waits for its future.
type queued struct {
	epoch  uint64
	index  uint64
	entry  []byte
	pk     *pendingKey // the overlay entry whose queued count it holds, if any
	future chan raft.ApplyFuture
}

// proposedRun is a run of journal records handed to raft, for the releaser.
type proposedRun struct {
	future raft.ApplyFuture
	epoch  uint64
	last   uint64
}

type journal struct {
	w          *wal.WAL
	stream     uint64
	maxRecords int
	maxBytes   int64
	stats      *Stats // its JournalRecords and JournalBytes

	mu        sync.Mutex
	first     uint64 // the oldest record not released
	next      uint64 // the next record's index
	recs      []journalRecord
	bytes     int64
	epoch     uint64
	reofferTo uint64
	appliedTo uint64
	q         []*queued

	room broadcast     // notified when records are released
	work chan struct{} // wakes the proposer
}

// openJournal opens the journal of stream; every record it finds belongs to
// the re-offer path.
func openJournal(w *wal.WAL, stream uint64, maxRecords int, maxBytes int64, stats *Stats) (*journal, error) {
	j := &journal{w: w, stream: stream, maxRecords: maxRecords, maxBytes: maxBytes, stats: stats, first: 1, next: 1, work: make(chan struct{}, 1)}
	last := w.LastIndex(stream)
	if last == 0 {
		return j, nil
	}
	j.first, j.next, j.reofferTo = w.FirstIndex(stream), last+1, last
	now := time.Now()
	err := w.Range(stream, j.first, last, func(_ uint64, data []byte) bool {
		j.recs = append(j.recs, journalRecord{size: int64(len(data)), at: now})
		j.bytes += int64(len(data))
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("read the fast-write journal: %w", err)
	}
	j.publish()
	return j, nil
}

func (j *journal) wake() {
	select {
	case j.work <- struct{}{}:
	default:
	}
}

// depth returns the records and bytes not released.
func (j *journal) depth() (int, int64) {
	j.mu.Lock()
	defer j.mu.Unlock()
	return len(j.recs), j.bytes
}

func (j *journal) full() bool {
	return len(j.recs) >= j.maxRecords || j.bytes >= j.maxBytes
}

// add appends a fast write's entry as the next record and queues it for the
// proposer. The caller holds the key's propose stripe and has counted the
// item in pk.queued. The channel receives the append's outcome.
func (j *journal) add(entry []byte, pk *pendingKey) <-chan error {
	j.mu.Lock()
	idx, done := j.appendLocked(entry)
	j.q = append(j.q, &queued{epoch: j.epoch, index: idx, entry: entry, pk: pk})
	j.mu.Unlock()
	j.wake()
	return done
}

// appendLocked appends entry as the next record; j.mu is held.
func (j *journal) appendLocked(entry []byte) (uint64, <-chan error) {
	idx := j.next
	done := j.w.AppendAsync(wal.Entry{Stream: j.stream, Index: idx, Data: entry})
	j.next++
	j.recs = append(j.recs, journalRecord{size: int64(len(entry)), at: time.Now()})
	j.bytes += int64(len(entry))
	j.publish()
	return idx, done
}

// publish copies the depth to the stats; j.mu is held.
func (j *journal) publish() {
	j.stats.JournalRecords.Store(int64(len(j.recs)))
	j.stats.JournalBytes.Store(j.bytes)
}

// enqueue queues an entry to be proposed after everything queued before it;
// the channel receives its future once raft took it.
func (j *journal) enqueue(entry []byte, pk *pendingKey) <-chan raft.ApplyFuture {
	it := &queued{entry: entry, pk: pk, future: make(chan raft.ApplyFuture, 1)}
	j.mu.Lock()
	it.epoch = j.epoch
	j.q = append(j.q, it)
	j.mu.Unlock()
	j.wake()
	return it.future
}

// take removes the queue's next run: one entry proposed in order, or the
// longest run of journal records within the entry bounds. Records of an
// ended epoch are removed and returned as dropped.
func (j *journal) take() (run, dropped []*queued, epoch uint64) {
	j.mu.Lock()
	defer j.mu.Unlock()
	n, size := 0, 0
	for _, it := range j.q {
		if it.index > 0 && it.epoch != j.epoch {
			dropped = append(dropped, it)
			n++
			continue
		}
		if it.future != nil {
			if len(run) == 0 {
				run, n = append(run, it), n+1
			}
			break
		}
		if len(run) == maxRunWrites || (len(run) > 0 && size+len(it.entry) > maxRunBytes) {
			break
		}
		run, size, n = append(run, it), size+len(it.entry), n+1
	}
	clear(j.q[:n])
	j.q = j.q[n:]
	return run, dropped, j.epoch
}

// queueEmpty reports whether the proposer has taken every queued item.
func (j *journal) queueEmpty() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return len(j.q) == 0
}

// endEpoch hands every record not released to the re-offer path.
func (j *journal) endEpoch() {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.epoch++
	j.reofferTo = j.next - 1
}

// applied notes that the records of epoch up to last are applied, and
// releases what it can; observe is called with the lag of each released
// record.
func (j *journal) applied(epoch, last uint64, observe func(time.Duration)) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if epoch != j.epoch {
		return // the re-offer path has them now
	}
	j.appliedTo = max(j.appliedTo, last)
	j.advance(observe)
}

// reoffered notes that the records up to last were delivered by the
// re-offer path.
func (j *journal) reoffered(last uint64, observe func(time.Duration)) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.release(last, observe)
	j.advance(observe)
}

// reofferRange returns the records the re-offer path delivers next, at most
// n of them; lo > hi when none is waiting.
func (j *journal) reofferRange(n int) (lo, hi uint64) {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.first, min(j.reofferTo, j.first+uint64(n)-1)
}

// released returns the index up to which records may leave the WAL.
func (j *journal) released() uint64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.first - 1
}

// advance releases the proposer's applied records once no record of the
// re-offer path is left before them.
func (j *journal) advance(observe func(time.Duration)) {
	if j.first > j.reofferTo {
		j.release(j.appliedTo, observe)
	}
}

func (j *journal) release(upTo uint64, observe func(time.Duration)) {
	if upTo < j.first {
		return
	}
	n := int(upTo - j.first + 1)
	now := time.Now()
	for _, rec := range j.recs[:n] {
		j.bytes -= rec.size
		if observe != nil {
			observe(now.Sub(rec.at))
		}
	}
	j.recs = j.recs[n:]
	j.first = upTo + 1
	j.publish()
	j.room.notify()
}

// waitRoom waits until the journal has room for a record, within ctx.
func (r *Replica) waitRoom(ctx context.Context) error {
	j := r.journal
	err := j.room.wait(ctx, r.closeCh, func() (bool, error) {
		j.mu.Lock()
		defer j.mu.Unlock()
		return !j.full(), nil
	})
	if err == nil || errors.Is(err, ErrClosed) {
		return err
	}
	records, bytes := j.depth()
	return &JournalFullError{Partition: r.cfg.Partition, Records: records, Bytes: bytes, Cause: err}
}

// runProposer proposes the queue's items in order (see the comment at the
// top): it ends when closeCh is closed.
func (r *Replica) runProposer() {
	defer r.wg.Done()
	j := r.journal
	for {
		select {
		case <-r.closeCh:
			return
		case <-j.work:
		}
		for !r.closing() {
			run, dropped, epoch := j.take()
			r.unqueue(dropped)
			if len(run) == 0 {
				break
			}
			if it := run[0]; it.future != nil {
				f := r.raft.Apply(it.entry, r.cfg.OpTimeout)
				r.unqueue(run)
				it.future <- f
				continue
			}
			f := r.raft.Apply(joinRun(run), r.cfg.OpTimeout)
			r.unqueue(run)
			select {
			case r.proposed <- proposedRun{future: f, epoch: epoch, last: run[len(run)-1].index}:
			case <-r.closeCh:
				return
			}
		}
	}
}

// joinRun is the entry of a run of fast writes: the write itself if alone,
// else a Batch of them.
func joinRun(run []*queued) []byte {
	if len(run) == 1 {
		return run[0].entry
	}
	writes := make([][]byte, len(run))
	size := 16
	for i, it := range run {
		writes[i] = it.entry[1:]
		size += len(it.entry)
	}
	b, err := fsm.JoinWrites(append(make([]byte, 0, size), flagFast), writes...)
	if err != nil {
		// Every record is a write this replica encoded.
		panic(fmt.Sprintf("shard: join fast writes: %v", err))
	}
	return b
}

// unqueue gives back the queued counts items held: raft has taken their
// entries (or they were dropped), so a later write of their keys may be
// proposed directly.
func (r *Replica) unqueue(items []*queued) {
	if len(items) == 0 {
		return
	}
	r.pendingMu.Lock()
	defer r.pendingMu.Unlock()
	for _, it := range items {
		if it.pk != nil {
			it.pk.queued--
		}
	}
}

// runReleaser reads the outcomes of the proposed runs in order: an applied
// run's records are released; any other outcome but shutdown ends the
// epoch, so that the re-offer path delivers what was not applied. It ends
// when closeCh is closed.
func (r *Replica) runReleaser() {
	defer r.wg.Done()
	for {
		var p proposedRun
		select {
		case <-r.closeCh:
			return
		case p = <-r.proposed:
		}
		select {
		case <-futureDone(p.future):
		case <-r.closeCh:
			return
		}
		switch err := p.future.Error(); {
		case err == nil:
			r.journal.applied(p.epoch, p.last, r.cfg.OnReplicated)
		case errors.Is(err, raft.ErrRaftShutdown):
			continue
		default:
			r.log.Debug("fast writes not applied by this primary; re-offering them", "error", err)
			r.journal.endEpoch()
		}
		r.signalReoffers()
	}
}
