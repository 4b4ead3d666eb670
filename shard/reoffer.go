package shard

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/ringkv/ringkv/fsm"
	"github.com/ringkv/ringkv/internal/lenprefix"
)

// Re-offering fast writes.
//
// A fast write is acknowledged once it is durable in the primary's log. If
// that primary loses leadership before the entry commits, the next leader may
// overwrite it. Before the entry is cut from any replica's log (a suffix
// truncation, or the wipe after a snapshot install), it is saved under
// reofferKey in the replica's stable store, in the same log-store call, and
// handed to the current primary, which proposes it again with its original
// (version, timestamp): the conflict rule decides whether it still wins, and
// replaying it twice is harmless because an equal stamp is "already applied".

var reofferKey = []byte("ringkv.reoffer")

// onTruncated keeps the fast writes among logs about to be cut.
func (r *Replica) onTruncated(logs []*raft.Log) error {
	var keep [][]byte
	for _, l := range logs {
		if l.Type == raft.LogCommand && len(l.Data) > 0 && l.Data[0]&flagFast != 0 {
			keep = append(keep, bytes.Clone(l.Data))
		}
	}
	if len(keep) == 0 {
		return nil
	}
	r.reofferMu.Lock()
	defer r.reofferMu.Unlock()
	all := append(append([][]byte(nil), r.reoffers...), keep...)
	if err := r.stable.Set(reofferKey, encodeReoffers(all)); err != nil {
		return fmt.Errorf("save %d fast writes before truncation: %w", len(keep), err)
	}
	r.reoffers = all
	r.stats.Reoffered.Add(uint64(len(keep)))
	r.log.Warn("fast writes cut from the log; re-offering them to the primary", "count", len(keep))
	r.signalReoffers()
	return nil
}

func (r *Replica) signalReoffers() {
	select {
	case r.reofferCh <- struct{}{}:
	default:
	}
}

// runReoffers delivers saved fast writes to the primary until none is left,
// or until the replica closes: a round stops between deliveries then, and
// leaves the rest saved for the next start.
func (r *Replica) runReoffers() {
	defer r.wg.Done()
	// A round that leaves entries behind (no primary known yet, no quorum)
	// comes back an election timeout later; with the queue empty only a
	// signal wakes it, so that an idle replica costs no wake-ups. The timer
	// starts armed for the entries Open loaded.
	retry := time.NewTimer(r.cfg.Raft.ElectionTimeout)
	defer retry.Stop()
	for {
		select {
		case <-r.closeCh:
			return
		case <-r.reofferCh:
		case <-retry.C:
		}
		for !r.closing() && r.deliverReoffer() {
		}
		if r.reoffersLeft() {
			retry.Reset(r.cfg.Raft.ElectionTimeout)
		} else {
			retry.Stop()
		}
	}
}

func (r *Replica) reoffersLeft() bool {
	r.reofferMu.Lock()
	defer r.reofferMu.Unlock()
	return len(r.reoffers) > 0
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

// deliverReoffer hands the oldest saved write to the primary and reports
// whether it should be called again at once. An entry refused for good (it
// does not decode, or breaks the limits) is dropped, with an error logged
// and counted, so that it cannot hold up the entries behind it; after any
// other failure (no primary known, no quorum, unreachable) it stays first in
// the queue and is offered again in the next round.
func (r *Replica) deliverReoffer() bool {
	r.reofferMu.Lock()
	if len(r.reoffers) == 0 {
		r.reofferMu.Unlock()
		return false
	}
	entry := r.reoffers[0]
	r.reofferMu.Unlock()

	// The primary's own check, done here first: what it refuses for good
	// need not reach it, whatever error its answer would come back as.
	err := checkReoffer(r.cfg.Limits, entry)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), r.cfg.OpTimeout)
		defer cancel()
		if key := r.handedOver(entry); key != nil {
			// A split gave the key to another partition, whose primary
			// takes it now; this group's would refuse it.
			if r.cfg.Rehome == nil {
				return false
			}
			err = r.cfg.Rehome(ctx, key, entry)
		} else if r.IsPrimary() {
			err = r.Reoffer(ctx, entry)
		} else if _, addr := r.Leader(); addr != "" && r.cfg.Reoffer != nil {
			err = r.cfg.Reoffer(ctx, addr, r.cfg.Partition, entry)
		} else {
			return false
		}
	}
	switch {
	case err == nil:
		return r.popReoffer()
	case refusedForGood(err):
		if !r.popReoffer() {
			return false
		}
		r.stats.ReofferDropped.Add(1)
		r.log.Error("dropped a re-offered fast write the primary refuses for good", "error", err, "bytes", len(entry))
		return true
	default:
		r.log.Debug("re-offer not delivered yet", "error", err)
		return false
	}
}

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

// popReoffer removes the oldest entry from the queue, saved copy first.
func (r *Replica) popReoffer() bool {
	r.reofferMu.Lock()
	defer r.reofferMu.Unlock()
	rest := r.reoffers[1:]
	if err := r.stable.Set(reofferKey, encodeReoffers(rest)); err != nil {
		r.log.Error("saving re-offer queue", "error", err)
		return false
	}
	r.reoffers = rest
	return true
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

// Reoffer proposes a fast write cut from some replica's log again, with its
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

func encodeReoffers(entries [][]byte) []byte {
	var b []byte
	b = binary.AppendUvarint(b, uint64(len(entries)))
	for _, e := range entries {
		b = lenprefix.Append(b, e)
	}
	return b
}

func loadReoffers(s raft.StableStore) ([][]byte, error) {
	b, err := s.Get(reofferKey)
	if errors.Is(err, raftboltdb.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil || len(b) == 0 {
		return nil, err
	}
	n, k := binary.Uvarint(b)
	if k <= 0 {
		return nil, fmt.Errorf("re-offer queue: bad count")
	}
	b = b[k:]
	out := make([][]byte, 0, min(n, uint64(len(b))))
	for range n {
		e, rest, ok := lenprefix.Cut(b)
		if !ok {
			return nil, fmt.Errorf("re-offer queue: truncated after %d of %d entries", len(out), n)
		}
		out = append(out, e)
		b = rest
	}
	return out, nil
}
