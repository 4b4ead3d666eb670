package shard

import (
	"context"
	"fmt"
)

// PurgeTombstones has the group remove the tombstones older than the
// tombstone grace period (Config.Limits.TombstoneGrace) and reports how many
// the apply removed. Only the primary accepts it; every other replica
// answers a *NotPrimaryError.
//
// The primary picks the cutoff, its HLC now minus the grace
// (fsm.Store.PurgeCommand), and proposes it as a log entry: every replica
// removes exactly the tombstones stamped before that cutoff, at the same
// point of the log, so Apply reads no clock and stays deterministic. It
// waits, as a write does, until the primary has applied its term's marker,
// then until its entry is committed and applied. A primary whose store holds
// no tombstone proposes nothing and reports 0: there is nothing a purge
// could remove, and an idle partition's log does not grow by an entry each
// round.
//
// A purge has no client waiting on it and removing what is already gone
// does nothing, so an outcome left unknown (ErrNoQuorum: leadership lost
// with the entry in flight, a timeout) needs no settling: the next round
// proposes another.
func (r *Replica) PurgeTombstones(ctx context.Context) (purged int, err error) {
	if !r.IsPrimary() {
		return 0, r.notPrimary()
	}
	ctx, cancel := r.opContext(ctx)
	defer cancel()
	// Not for the cutoff's sake (a purge applies at its own place in the
	// log, whatever the store held when it was proposed) but for the check
	// below: a new primary's store may still miss its predecessors' deletes,
	// and would skip a purge they need.
	const what = "tombstone purge"
	if err := r.readyFor(ctx, what); err != nil {
		return 0, err
	}
	if r.store.Tombstones() == 0 {
		return 0, nil
	}
	future := r.raft.Apply(encodeEntry(0, r.store.PurgeCommand(r.cfg.Clock.Now())), r.cfg.OpTimeout)
	select {
	case <-futureDone(future):
	case <-ctx.Done():
		return 0, r.noQuorum(what, ctx.Err())
	}
	if err := future.Error(); err != nil {
		return 0, r.proposeError(what, err)
	}
	res, ok := future.Response().(applyResult)
	if !ok {
		return 0, fmt.Errorf("partition %d: unexpected apply response %T", r.cfg.Partition, future.Response())
	}
	if res.err != nil {
		return 0, fmt.Errorf("partition %d: tombstone purge: %w", r.cfg.Partition, res.err)
	}
	return res.res.Purged, nil
}

// Tombstones is the number of tombstones in the replica's store awaiting a
// purge, for metrics.
func (r *Replica) Tombstones() int { return r.store.Tombstones() }
