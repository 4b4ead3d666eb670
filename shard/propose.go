package shard

import (
	"bytes"

	"github.com/ringkv/ringkv/fsm"
)

// Coalescing writes into log entries.
//
// hashicorp/raft pays per log entry: a future, a WAL record, an entry in
// every AppendEntries and its conversions, an FSM call, commit bookkeeping.
// So a primary proposes the writes that arrive while raft is busy as one
// entry, an fsm.Batch. Raft's leader loop is busy while it stores entries
// (one WAL sync); writes that arrive meanwhile queue, and when the store
// ends the whole queue is proposed at once, from the leader loop's own
// goroutine, so that the loop finds the entry waiting when it looks for
// work: handing the batch to another goroutine cost a scheduling delay
// (0.4 ms on average on a loaded 2-core machine) on every turn. A write
// that finds raft idle is proposed at once by its own goroutine, so a lone
// write waits for nothing.
//
// Invariants:
//   - Versions are assigned and writes queued in one critical section
//     (proposeMu), and at most one proposer runs, proposing in queue order,
//     so two writes to a key reach the log in version order.
//   - Every queued write is proposed: by the running proposer, or at the
//     end of the store in progress (setStoring), which starts one.
//   - raft.Apply never blocks raft's goroutine: raft's apply channel holds
//     MaxAppendEntries entries (Config.BatchApplyCh), the proposer on raft's
//     goroutine stops at maxOutstanding entries not yet done, and every
//     other caller of Apply (a re-offer, the term marker, a tombstone purge,
//     a barrier) has at most one entry waiting.
//   - An entry carries writes of one mode, named by its flags byte: a run of
//     fast writes and a run of strong ones become two entries, in order.
//   - An entry stays within maxEntryBytes unless one write alone is larger,
//     so raft's MaxAppendEntries entries fit one transport message.
//   - A single write is encoded as itself, not as a Batch of one.

const (
	// maxEntryBytes bounds a coalesced entry.
	maxEntryBytes = 1 << 20
	// maxOutstanding is half of raft's default MaxAppendEntries.
	maxOutstanding = 32
)

// queuedWrite is a write waiting to be proposed, and then for its entry's
// outcome, which is set before done is closed. (Raft's futures may not be
// read by several goroutines at once.)
type queuedWrite struct {
	cmd  fsm.Write
	fast bool
	size int
	pos  int // index of cmd among its entry's writes
	done chan struct{}

	err      error       // the entry's, from raft
	index    uint64      // the entry's, if raft dispatched it
	response interface{} // the entry's apply result
}

// enqueue adds w to the queue, with proposeMu held. If raft is idle and
// nobody is proposing, the caller becomes the proposer and must call
// proposeQueued with the returned batch.
func (r *Replica) enqueue(w *queuedWrite) (batch []*queuedWrite) {
	r.queue = append(r.queue, w)
	if r.proposing || r.storing {
		return nil
	}
	r.proposing = true
	return r.takeQueue()
}

// takeQueue runs with proposeMu held.
func (r *Replica) takeQueue() []*queuedWrite {
	batch := r.queue
	r.queue = make([]*queuedWrite, 0, len(batch))
	return batch
}

// proposeQueued proposes batch, then what queued meanwhile, until next
// ends the proposer's turn.
func (r *Replica) proposeQueued(batch []*queuedWrite) {
	for ; batch != nil; batch = r.next() {
		r.propose(batch, len(batch)) // one write per entry at most
	}
}

// next takes the writes that queued while the proposer proposed. If there
// are none, or raft is storing again (its end will propose them), it ends
// the proposer's turn and returns nil.
func (r *Replica) next() []*queuedWrite {
	r.proposeMu.Lock()
	defer r.proposeMu.Unlock()
	if len(r.queue) == 0 || r.storing {
		r.proposing = false
		return nil
	}
	return r.takeQueue()
}

// setStoring learns that the log store began (true) or ended a write. At
// the end, the writes that queued meanwhile are proposed. It runs on raft's
// goroutine: what it cannot propose without waiting for raft is left to a
// new proposer goroutine.
func (r *Replica) setStoring(on bool) {
	r.proposeMu.Lock()
	r.storing = on
	if on || len(r.queue) == 0 || r.proposing {
		r.proposeMu.Unlock()
		return
	}
	r.proposing = true
	batch := r.takeQueue()
	r.proposeMu.Unlock()
	rest := r.propose(batch, maxOutstanding-int(r.outstanding.Load()))
	if len(rest) == 0 {
		rest = r.next()
	}
	if rest != nil {
		go r.proposeQueued(rest)
	}
}

// propose hands batch to raft as at most maxEntries entries, as few as the
// invariants allow, and returns the writes left over, in order.
func (r *Replica) propose(batch []*queuedWrite, maxEntries int) (rest []*queuedWrite) {
	for ; len(batch) > 0 && maxEntries > 0; maxEntries-- {
		n, size := 1, batch[0].size
		for n < len(batch) && batch[n].fast == batch[0].fast && size+batch[n].size <= maxEntryBytes {
			size += batch[n].size
			n++
		}
		entry := batch[:n:n]
		batch = batch[n:]
		var cmd fsm.Command = entry[0].cmd
		if n > 1 {
			writes := make([]fsm.Write, n)
			for i, w := range entry {
				writes[i], w.pos = w.cmd, i
			}
			cmd = fsm.Batch{Writes: writes}
		}
		var flags byte
		if entry[0].fast {
			flags = flagFast
		}
		r.outstanding.Add(1)
		future := r.raft.Apply(encodeEntry(flags, cmd), r.cfg.OpTimeout)
		go func() {
			err := future.Error()
			r.outstanding.Add(-1)
			index, response := future.Index(), future.Response()
			for _, w := range entry {
				w.err, w.index, w.response = err, index, response
				close(w.done)
			}
		}()
	}
	return batch
}

// writeSize estimates a write's share of an entry's bytes.
func writeSize(key, value []byte) int { return len(key) + len(value) + 32 }

// forEachWrite calls fn for each write cmd carries: cmd itself if it is a
// Put or Delete, a Batch's writes in order, none otherwise.
func forEachWrite(cmd fsm.Command, fn func(reqID uint64, it fsm.Item)) {
	switch c := cmd.(type) {
	case fsm.Batch:
		for _, w := range c.Writes {
			forEachWrite(w, fn)
		}
	case fsm.Put:
		fn(c.RequestID, fsm.Item{Key: c.Key, Value: c.Value, Stamp: c.Stamp})
	case fsm.Delete:
		fn(c.RequestID, fsm.Item{Key: c.Key, Tombstone: true, Stamp: c.Stamp})
	}
}

func stampOf(w fsm.Write) fsm.Stamp {
	var st fsm.Stamp
	forEachWrite(w, func(_ uint64, it fsm.Item) { st = it.Stamp })
	return st
}

// carries reports whether cmd holds w: a write of the same kind, key and
// stamp, proposed with the same request id.
func carries(cmd fsm.Command, w fsm.Write) bool {
	found := false
	forEachWrite(w, func(wantID uint64, want fsm.Item) {
		forEachWrite(cmd, func(id uint64, it fsm.Item) {
			found = found || id == wantID && it.Stamp == want.Stamp && it.Tombstone == want.Tombstone && bytes.Equal(it.Key, want.Key)
		})
	})
	return found
}
