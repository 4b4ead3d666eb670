package shard

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ringkv/ringkv/fsm"
	"github.com/ringkv/ringkv/wal"
)

// Re-offering fast writes.
//
// The records of an ended epoch of the journal (journal.go) are fast writes
// acknowledged by this replica as primary that it may not have applied: it
// lost leadership, raft refused or did not commit their entries, or the
// process restarted. runReoffers hands them, oldest first and many per
// entry, to whichever replica leads, itself included, which proposes them
// again with their original (version, timestamp): the conflict rule decides
// whether each still wins, and one that did commit is "already applied".
// Records leave the journal once delivered.

func (r *Replica) signalReoffers() {
	select {
	case r.reofferCh <- struct{}{}:
	default:
	}
}

// runReoffers owns the removal of records from the journal: it truncates
// the released ones (coalescing the releases that came in while it wrote
// the last truncation), and delivers the re-offer path's records until none
// is left, or until the replica closes: a round stops between deliveries
// then, and leaves the rest in the journal for the next start.
func (r *Replica) runReoffers() {
	defer r.wg.Done()
	// A round that leaves records behind (no primary known yet, no quorum)
	// comes back an election timeout later; with none left only a signal
	// wakes it, so that an idle replica costs no wake-ups. The timer starts
	// armed for the records Open found.
	retry := time.NewTimer(r.cfg.Raft.ElectionTimeout)
	defer retry.Stop()
	truncated := r.journal.released()
	for {
		select {
		case <-r.closeCh:
			return
		case <-r.reofferCh:
		case <-retry.C:
		}
		for !r.closing() {
			truncated = r.truncateJournal(truncated)
			if !r.deliverReoffer() {
				break
			}
		}
		truncated = r.truncateJournal(truncated)
		if r.reoffersLeft() {
			retry.Reset(r.cfg.Raft.ElectionTimeout)
		} else {
			retry.Stop()
		}
	}
}

// truncateJournal removes the records released since done from the WAL and
// returns how far the journal is truncated.
func (r *Replica) truncateJournal(done uint64) uint64 {
	upTo := r.journal.released()
	if upTo <= done {
		return done
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.OpTimeout)
	defer cancel()
	if err := r.cfg.WAL.TruncatePrefix(ctx, r.journal.stream, upTo); err != nil {
		// Kept records are delivered again after a restart: harmless.
		r.log.Warn("truncating the fast-write journal", "error", err)
		return done
	}
	return upTo
}

func (r *Replica) reoffersLeft() bool {
	lo, hi := r.journal.reofferRange(1)
	return lo <= hi
}

// closing reports whether Close has begun.
func (r *Replica) closing() bool {
	select {
	case <-r.closeCh:
		return true
	default:
		return false
	}
}

// deliverReoffer hands the oldest records of the re-offer path to the
// primary and reports whether it should be called again at once. It
// delivers as one Batch entry the longest run of records that this
// replica's partition still owns and that pass the primary's own check; a
// record whose key a split handed to another partition goes alone to that
// partition's primary (Config.Rehome). A record refused for good (it does
// not decode, or breaks the limits) is dropped, with an error logged and
// counted, so that it cannot hold up the records behind it; after any other
// failure (no primary known, no quorum, unreachable) the records stay first
// and are offered again in the next round.
func (r *Replica) deliverReoffer() bool {
	lo, hi := r.journal.reofferRange(maxRunWrites)
	// Past the WAL's last index: appends not durable yet, for a later round.
	if hi = min(hi, r.cfg.WAL.LastIndex(r.journal.stream)); lo > hi {
		return false
	}
	var recs [][]byte
	size := 0
	err := r.cfg.WAL.Range(r.journal.stream, lo, hi, func(_ uint64, data []byte) bool {
		if len(recs) > 0 && size+len(data) > maxRunBytes {
			return false
		}
		recs, size = append(recs, data), size+len(data)
		return true
	})
	switch {
	case errors.Is(err, wal.ErrNotFound) && len(recs) == 0:
		// The append of the first record is not durable yet: the next
		// round finds it.
		return false
	case err != nil && len(recs) == 0:
		r.log.Warn("reading the fast-write journal to re-offer it", "error", err)
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.OpTimeout)
	defer cancel()
	// The primary's own check, done here first: what it refuses for good
	// need not reach it, whatever error its answer would come back as.
	n := 0
	if err = checkReoffer(r.cfg.Limits, recs[0]); err == nil {
		if key := r.handedOver(recs[0]); key != nil {
			// A split gave the key to another partition, whose primary
			// takes it now; this group's would refuse it.
			if r.cfg.Rehome == nil {
				return false
			}
			n, err = 1, r.cfg.Rehome(ctx, key, recs[0])
		} else {
			n = 1
			for n < len(recs) && checkReoffer(r.cfg.Limits, recs[n]) == nil && r.handedOver(recs[n]) == nil {
				n++
			}
			err = r.offer(ctx, recs[:n])
			if n > 1 && refusedForGood(err) {
				// One of them is refused: find it one record at a time.
				n, err = 1, r.offer(ctx, recs[:1])
			}
		}
	}
	switch {
	case err == nil:
		r.stats.Reoffered.Add(uint64(n))
		r.journal.reoffered(lo+uint64(n)-1, r.cfg.OnReplicated)
		return true
	case refusedForGood(err):
		r.stats.ReofferDropped.Add(1)
		r.log.Error("dropped a re-offered fast write the primary refuses for good", "error", err, "bytes", len(recs[0]))
		r.journal.reoffered(lo, nil)
		return true
	default:
		r.log.Debug("re-offer not delivered yet", "error", err)
		return false
	}
}

// offer proposes records, as one entry, through the primary: this replica
// if it leads, else the one it knows through Config.Reoffer.
func (r *Replica) offer(ctx context.Context, recs [][]byte) error {
	entry := recs[0]
	if len(recs) > 1 {
		writes := make([][]byte, len(recs))
		for i, rec := range recs {
			writes[i] = rec[1:]
		}
		var err error
		if entry, err = fsm.JoinWrites([]byte{flagFast}, writes...); err != nil {
			return err
		}
	}
	if r.IsPrimary() {
		return r.Reoffer(ctx, entry)
	}
	if _, addr := r.Leader(); addr != "" && r.cfg.Reoffer != nil {
		return r.cfg.Reoffer(ctx, addr, r.cfg.Partition, entry)
	}
	return errNoPrimaryKnown
}

// errNoPrimaryKnown: a re-offer waits for a primary.
var errNoPrimaryKnown = errors.New("no primary known")

// handedOver returns the key entry writes if this replica's store no
// longer owns it (a split applied here handed it to another partition),
// else nil.
func (r *Replica) handedOver(entry []byte) []byte {
	_, cmd, err := decodeEntry(entry)
	if err != nil {
		return nil
	}
	if key, _ := writeOf(cmd); key != nil && r.store.Owns(key) != nil {
		return key
	}
	return nil
}

// checkReoffer decodes a re-offered entry and checks its command against
// limits.
func checkReoffer(limits fsm.Options, entry []byte) error {
	_, cmd, err := decodeEntry(entry)
	if err != nil {
		return err
	}
	return limits.Validate(cmd)
}

// refusedForGood reports whether a re-offer failed because of the entry
// itself, which no primary can take: it does not decode, or its command
// breaks the limits. Offering it again can only fail again.
func refusedForGood(err error) bool {
	var le *fsm.LimitError
	return errors.Is(err, fsm.ErrMalformedCommand) || errors.As(err, &le)
}

// Reoffer proposes fast writes a primary acknowledged and may not have
// applied (one write, or a Batch of them) again, with its
// original stamp, and waits until it is applied. Only the primary accepts
// it. An entry that does not decode or breaks the limits is refused before
// it reaches the log. The answer is what applying the entry did: nil once it
// is applied, whether its writes won, were already applied or lost to newer
// ones (counted in Stats.ReofferLost); Apply's error if Apply refused it.
func (r *Replica) Reoffer(ctx context.Context, entry []byte) error {
	if err := checkReoffer(r.cfg.Limits, entry); err != nil {
		return err
	}
	if !r.IsPrimary() {
		return r.notPrimary()
	}
	ctx, cancel := r.opContext(ctx)
	defer cancel()
	future := r.raft.Apply(entry, r.cfg.OpTimeout)
	select {
	case <-futureDone(future):
	case <-ctx.Done():
		return r.noQuorum("re-offer", ctx.Err())
	}
	if err := future.Error(); err != nil {
		return r.proposeError("re-offer", err)
	}
	lost, err := reofferResult(r.cfg.Partition, future.Response())
	if err != nil {
		return err
	}
	r.stats.ReofferLost.Add(uint64(lost))
	return nil
}

// reofferResult reads what applying a re-offered entry did: how many of its
// writes lost the conflict rule, or why Apply refused it.
func reofferResult(partition uint32, response interface{}) (lost int, err error) {
	res, ok := response.(applyResult)
	if !ok {
		return 0, fmt.Errorf("partition %d: unexpected apply response %T", partition, response)
	}
	if res.err != nil {
		return 0, fmt.Errorf("partition %d: re-offered entry refused: %w", partition, res.err)
	}
	for _, w := range res.res.Writes {
		if w.Outcome == fsm.Lost {
			lost++
		}
	}
	return lost, nil
}
