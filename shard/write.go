package shard

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"go.opentelemetry.io/otel/attribute"

	"github.com/ringkv/ringkv/fsm"
	"github.com/ringkv/ringkv/raftgroup"
)

// WriteMode says when a write is acknowledged.
type WriteMode uint8

const (
	// Strong: after a majority committed the entry and the primary applied it.
	Strong WriteMode = iota
	// Fast: after the entry is durable in the primary's own WAL.
	Fast
)

func (m WriteMode) String() string {
	if m == Fast {
		return "fast"
	}
	return "strong"
}

// op names a write of mode in errors (a constant: naming costs a write
// nothing).
func (m WriteMode) op() string {
	if m == Fast {
		return "fast write"
	}
	return "strong write"
}

// A log entry's data: a flags byte, then the fsm command.
const flagFast byte = 1

func encodeEntry(flags byte, cmd fsm.Command) []byte {
	b, err := cmd.MarshalBinary()
	if err != nil {
		// Only a Batch holding a nil write fails, and no caller builds one.
		panic(fmt.Sprintf("shard: encode command: %v", err))
	}
	return append([]byte{flags}, b...)
}

func decodeEntry(data []byte) (flags byte, cmd fsm.Command, err error) {
	if len(data) == 0 {
		return 0, nil, fmt.Errorf("empty log entry: %w", fsm.ErrMalformedCommand)
	}
	cmd, err = fsm.DecodeCommand(data[1:])
	return data[0], cmd, err
}

// proposeStripes bounds how many writes a primary proposes at once: more
// than its clients, on the 64-client benchmark, so distinct keys rarely
// share a stripe.
const proposeStripes = 256

// stripe is the proposeMu stripe serializing the writes of key.
func (r *Replica) stripe(key []byte) *sync.Mutex {
	return &r.proposeMu[maphash.Bytes(r.proposeSeed, key)%proposeStripes]
}

// entryOverhead bounds what a write's log entry holds beside its key and
// value: the flags byte, fsm's format and op bytes, the version and length
// uvarints, the timestamp and the request id.
const entryOverhead = 64

// Put writes key=value with the next version of key and returns the write's
// (version, timestamp).
func (r *Replica) Put(ctx context.Context, key, value []byte, mode WriteMode) (fsm.Stamp, error) {
	if err := r.cfg.Limits.ValidateKey(key); err != nil {
		return fsm.Stamp{}, err
	}
	if err := r.cfg.Limits.ValidateValue(value); err != nil {
		return fsm.Stamp{}, err
	}
	return r.write(ctx, key, value, false, mode)
}

// Delete writes a tombstone for key with its next version.
func (r *Replica) Delete(ctx context.Context, key []byte, mode WriteMode) (fsm.Stamp, error) {
	if err := r.cfg.Limits.ValidateKey(key); err != nil {
		return fsm.Stamp{}, err
	}
	return r.write(ctx, key, nil, true, mode)
}

func (r *Replica) write(ctx context.Context, key, value []byte, del bool, mode WriteMode) (_ fsm.Stamp, err error) {
	if !r.IsPrimary() {
		return fsm.Stamp{}, r.notPrimary()
	}
	ctx, cancel := r.opContext(ctx)
	defer cancel()
	ctx, span := r.startSpan(ctx, "raft.apply", attribute.String("ringkv.mode", mode.String()))
	defer func() { endSpan(span, err) }()
	// Versions are numbered from the store: a new primary must first have
	// applied what earlier primaries committed, or it could hand out a
	// version that an earlier, acknowledged write already carries.
	if err := r.readyFor(ctx, mode.op()); err != nil {
		return fsm.Stamp{}, err
	}

	if mode == Fast {
		// Before the stripe: a writer waiting for room must not hold up
		// the other writes of its stripe, nor the proposer's queue.
		if err := r.waitRoom(ctx); err != nil {
			return fsm.Stamp{}, err
		}
	}
	reqID := r.nextReqID.Add(1)
	if span.IsRecording() {
		defer r.trackTrace(ctx, reqID)()
	}
	var flags byte
	if mode == Fast {
		flags = flagFast
	}
	// Room for the whole entry, allocated before the stripe is taken:
	// appending to a smaller buffer reallocates it several times per write.
	buf := append(make([]byte, 0, entryOverhead+len(key)+len(value)), flags)

	// Versions are assigned and proposed (or queued) in one critical
	// section so that two writes to a key get consecutive versions in log
	// order.
	mu := r.stripe(key)
	mu.Lock()
	if err := r.owns(key); err != nil {
		mu.Unlock()
		return fsm.Stamp{}, err
	}
	stamp := fsm.Stamp{Version: r.currentVersion(key) + 1, Timestamp: r.cfg.Clock.Now()}
	var cmd fsm.Write
	if del {
		cmd = fsm.Delete{RequestID: reqID, Key: key, Stamp: stamp}
	} else {
		cmd = fsm.Put{RequestID: reqID, Key: key, Value: value, Stamp: stamp}
	}
	// item aliases the entry, not the caller's key and value, which the
	// overlay may keep after this call returns.
	entry, item := fsm.AppendWrite(buf, cmd)
	r.pendingMu.Lock()
	pk := r.overlay[string(key)]
	if pk == nil {
		pk = &pendingKey{}
		r.overlay[string(key)] = pk
	}
	pk.version = stamp.Version
	queue := mode == Fast || pk.queued > 0
	if queue {
		pk.queued++
	}
	r.pendingMu.Unlock()

	if mode == Fast {
		start := time.Now()
		durable := r.journal.add(entry, pk)
		mu.Unlock()
		select {
		case err := <-durable:
			if err != nil {
				// The WAL failed: it refuses every write from now on.
				return fsm.Stamp{}, r.noQuorum(mode.op(), err)
			}
		case <-ctx.Done():
			return fsm.Stamp{}, r.noQuorum(mode.op(), ctx.Err())
		}
		if span.IsRecording() {
			childSpan(ctx, "wal.append", start, attribute.Int64("ringkv.partition", int64(r.cfg.Partition)))
		}
		r.showFast(pk, item)
		return stamp, nil
	}

	var future raft.ApplyFuture
	if queue {
		// A fast write of the key waits in the queue: this one follows it.
		queued := r.journal.enqueue(entry, pk)
		mu.Unlock()
		select {
		case future = <-queued:
		case <-ctx.Done():
			return fsm.Stamp{}, r.noQuorum(mode.op(), ctx.Err())
		case <-r.closeCh:
			return fsm.Stamp{}, ErrClosed
		}
	} else {
		future = r.raft.Apply(entry, r.cfg.OpTimeout)
		mu.Unlock()
	}
	done := futureDone(future)
	select {
	case <-done:
	case <-ctx.Done():
		select {
		case <-done:
		default:
			return fsm.Stamp{}, r.noQuorum(mode.op(), ctx.Err())
		}
	}
	if err := future.Error(); err != nil {
		switch {
		case errors.Is(err, raft.ErrLeadershipLost):
			return r.settle(ctx, future.Index(), cmd, mode, err)
		case refused(err):
			r.giveBack(key, pk, stamp.Version)
		}
		return fsm.Stamp{}, r.proposeError(mode.op(), err)
	}
	return writeResult(r.cfg.Partition, stamp, future.Response())
}

// settle learns what became of a write whose primary lost leadership
// after dispatching its entry at index, most often because it handed
// leadership over (SIGTERM, rebalancing) with the entry in flight. Once this
// replica, now a follower, has applied index, the entry there is committed:
// if it is the write, the write took effect; if it is another, the write's
// entry was cut, and a strong write, which nothing re-offers, provably did
// not happen, so the caller may send it to the new primary. A fast write's
// cut entry may be re-offered, and anything still unknown when the wait
// ends (waitSettled) or once the entry left the log stays unknown: the
// write may yet commit, so it never fails as if it had not happened.
func (r *Replica) settle(ctx context.Context, index uint64, cmd fsm.Command, mode WriteMode, lost error) (fsm.Stamp, error) {
	if index == 0 {
		return fsm.Stamp{}, r.noQuorum(mode.op(), lost)
	}
	if err := r.waitSettled(ctx, index); err != nil {
		return fsm.Stamp{}, r.noQuorum(mode.op(), fmt.Errorf("%w; outcome not learned: %w", lost, err))
	}
	unknown := r.noQuorum(mode.op(), lost)
	var l raft.Log
	if err := r.logs.GetLog(index, &l); err != nil {
		return fsm.Stamp{}, unknown
	}
	_, got, err := decodeEntry(l.Data)
	switch {
	case err == nil && l.Type == raft.LogCommand && sameWrite(got, cmd):
		// A split before the entry may have refused it.
		key, st := writeOf(cmd)
		switch ok, err := r.ownedAt(index, key); {
		case !ok:
			return fsm.Stamp{}, unknown
		case err != nil:
			return fsm.Stamp{}, err
		}
		return st, nil
	case mode == Strong:
		return fsm.Stamp{}, r.notPrimary()
	}
	return fsm.Stamp{}, unknown
}

// errNoLeaderHeard ends a settle wait in which this replica heard from no
// leader within the bound.
var errNoLeaderHeard = errors.New("no leader heard from")

// waitSettled waits, for settle, until this replica has applied index: for
// settleBound, and past that only while it knows a leader, always within
// ctx (the write's op timeout).
//
// Why a bound: the replica learns the outcome only from a leader's commit
// index, so it must first hear from one. One that has heard from none
// once an election had time to run its course is most likely cut off, as
// when it stepped down because its lease ran out, and learns nothing until
// healed: waiting out the whole op timeout there only stalls the client
// (docs/benchmarks.md, "Failover and Raft timing": every write in flight
// on an isolated primary waited the full 3 s), while failing Unavailable
// lets the caller repeat it at the new primary.
//
// Why settleBound (see there) and not less: one ElectionTimeout was too
// short: a primary that stepped down for a moment's stall, not cut off,
// is the group's next leader only once its own heartbeat timeout has run
// out, and it failed writes whose entries it then committed
// (TestSettleAfterSpuriousStepDown).
//
// Why longer once a leader is known: that leader's commit index reaches
// this replica with its next entries, or, in a group gone idle, within
// raft's randomized CommitTimeout (up to twice it, longer than an election
// timeout by default), so the wait would end in an answer; giving up would
// turn a write that took effect, or one safe to send again, into an
// unknown outcome.
func (r *Replica) waitSettled(ctx context.Context, index uint64) error {
	bound := settleBound(r.cfg.Raft)
	bounded, cancel := context.WithTimeout(ctx, bound)
	err := r.waitApplied(bounded, index)
	cancel()
	if err == nil || ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if id, _ := r.Leader(); id == "" {
		return fmt.Errorf("%w within %v", errNoLeaderHeard, bound)
	}
	return r.waitApplied(ctx, index)
}

// settleBound is how long settle waits to hear from a leader: long enough
// for the group to elect one after this replica stepped down. In a
// hand-over the target campaigns at once, but a replica that lost
// leadership otherwise (its lease ran out in a stall, a higher term) waits
// for a heartbeat timeout like every follower before anyone campaigns:
// raft draws it between HeartbeatTimeout and twice it, and this replica's
// own, started as it stepped down, is one of them; as it holds the latest
// entries, it is usually the one elected, its writes in flight then
// committing in its new term. A candidate that gets no majority tries
// again after its election timeout, drawn between ElectionTimeout and
// twice it. So by 2*(HeartbeatTimeout+ElectionTimeout) a replica in touch
// with its group has won an election or heard from the winner, unless
// votes split or the machine stalls longer still (then its writes fail
// NoQuorum as a cut-off primary's do), and one that has not has lost a
// whole election round.
func settleBound(t raftgroup.Timing) time.Duration {
	return 2 * (t.HeartbeatTimeout + t.ElectionTimeout)
}

// sameWrite reports whether a and b are one write: same kind, key and stamp,
// proposed with the same request id.
func sameWrite(a, b fsm.Command) bool {
	switch a := a.(type) {
	case fsm.Put:
		b, ok := b.(fsm.Put)
		return ok && a.RequestID == b.RequestID && a.Stamp == b.Stamp && bytes.Equal(a.Key, b.Key)
	case fsm.Delete:
		b, ok := b.(fsm.Delete)
		return ok && a.RequestID == b.RequestID && a.Stamp == b.Stamp && bytes.Equal(a.Key, b.Key)
	}
	return false
}

// writesIn returns the writes of cmd: itself if a Put or Delete, a
// Batch's writes, or none.
func writesIn(cmd fsm.Command) []fsm.Write {
	switch c := cmd.(type) {
	case fsm.Write:
		return []fsm.Write{c}
	case fsm.Batch:
		return c.Writes
	}
	return nil
}

// writeOf returns the key and stamp of a Put or Delete.
func writeOf(cmd fsm.Command) (key []byte, st fsm.Stamp) {
	switch c := cmd.(type) {
	case fsm.Put:
		return c.Key, c.Stamp
	case fsm.Delete:
		return c.Key, c.Stamp
	}
	return nil, fsm.Stamp{}
}

// futureDone is closed once future has its outcome; raft's futures block
// rather than offer a channel, and callers must also watch a context.
func futureDone(future raft.Future) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		future.Error()
		close(done)
	}()
	return done
}

// writeResult reads what applying a committed write did. Writes this
// primary numbers never lose; a re-offered fast write with its original,
// greater stamp can win over one, and then the write had no effect: say so
// rather than acknowledge it.
func writeResult(partition uint32, stamp fsm.Stamp, response interface{}) (fsm.Stamp, error) {
	res, ok := response.(applyResult)
	if !ok {
		return fsm.Stamp{}, fmt.Errorf("partition %d: unexpected apply response %T", partition, response)
	}
	if res.err != nil {
		return fsm.Stamp{}, res.err
	}
	if w := res.res.Writes; len(w) == 1 && w[0].Outcome == fsm.Lost {
		return fsm.Stamp{}, &SupersededError{Partition: partition, Stamp: stamp, Winner: w[0].Current}
	}
	return stamp, nil
}

// readyFor waits until this replica may propose (waitReady) for an
// operation named what: NotPrimary and ErrClosed pass as they are, anything
// else (the deadline) is NoQuorum.
func (r *Replica) readyFor(ctx context.Context, what string) error {
	err := r.waitReady(ctx)
	if err == nil || errors.Is(err, ErrNotPrimary) || errors.Is(err, ErrClosed) {
		return err
	}
	return r.noQuorum(what, err)
}

// refused reports whether raft refused a proposal before it reached the log:
// this replica does not lead, or is handing leadership over.
func refused(err error) bool {
	return errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipTransferInProgress)
}

// proposeError maps raft's answer to a proposal, of an operation named
// what, that did not commit.
func (r *Replica) proposeError(what string, err error) error {
	switch {
	case refused(err):
		// Nothing was written.
		return r.notPrimary()
	case errors.Is(err, raft.ErrRaftShutdown):
		return ErrClosed
	default:
		// Leadership lost after the entry was dispatched, or raft took
		// longer than OpTimeout to take it: the entry may still commit
		// under the next leader.
		return r.noQuorum(what, err)
	}
}

// giveBack returns the version a write reserved (pk.version = version)
// once raft refused its proposal, which therefore never reached the log:
// the key's next write takes that version again, so the key's versions stay
// consecutive in log order. Holding the key's stripe, it sees every
// reservation made so far, and gives back only the newest: the stripe was
// released when raft.Apply returned, before raft refused the entry, so a
// later write may have reserved version+1 meanwhile, and giving back below
// it would hand version+1 out twice. Nor does it touch an entry that is no
// longer pk: the overlay was dropped with leadership, and what a later
// term reserved is not this write's to give back.
func (r *Replica) giveBack(key []byte, pk *pendingKey, version uint64) {
	mu := r.stripe(key)
	mu.Lock()
	defer mu.Unlock()
	r.pendingMu.Lock()
	defer r.pendingMu.Unlock()
	if r.overlay[string(key)] != pk || pk.version != version {
		return
	}
	pk.version--
	// The write below may be applied already, and its retireOverlay kept
	// the entry for this reservation; reading the store under pendingMu
	// orders this check against the next retireOverlay.
	cur, _ := r.store.Stamp(key)
	if pk.idle(cur.Version) {
		delete(r.overlay, string(key))
	}
}

// currentVersion is the key's newest version: proposed on this primary, or
// applied (a tombstone counts). The overlay is read before the store: a
// write is retired from the overlay only after the store applied it, so
// one of the two reads sees it. In the other order the write could apply
// and retire between them, and be seen by neither — its version would be
// handed out again.
func (r *Replica) currentVersion(key []byte) uint64 {
	var v uint64
	r.pendingMu.Lock()
	if pk := r.overlay[string(key)]; pk != nil {
		v = pk.version
	}
	r.pendingMu.Unlock()
	if st, ok := r.store.Stamp(key); ok && st.Version > v {
		v = st.Version
	}
	return v
}

// onStored traces the traced writes' log-store write (which began at
// start). It runs on raft's main loop for every stored batch, so it decodes
// nothing: a write is found by the request id at the end of its entry.
func (r *Replica) onStored(logs []*raft.Log, start time.Time) {
	if r.tracedN.Load() == 0 {
		return
	}
	for _, l := range logs {
		if l.Type != raft.LogCommand || len(l.Data) == 0 {
			continue
		}
		if reqID, ok := fsm.WriteRequestID(l.Data[1:]); ok {
			r.traceStored(reqID, len(logs), start)
		}
	}
}

// showFast makes a fast write that is durable in the primary's journal
// visible to local reads until the store applies it; its writer, which
// recorded the write in pk, calls it before acknowledging the write. If
// the store has caught up already (the proposer may propose a write before
// its journal append is durable), nothing is shown: either pk left the
// overlay, which retireOverlay does only once the store holds the key's
// newest version, or pk.applied, which retireOverlay raises under
// pendingMu after the store published each write of the key, covers it.
// So the check reads no store.
func (r *Replica) showFast(pk *pendingKey, it fsm.Item) {
	r.pendingMu.Lock()
	defer r.pendingMu.Unlock()
	switch {
	case r.overlay[string(it.Key)] != pk:
		return // the overlay was dropped, or the key retired
	case pk.visible != nil && pk.visible.Stamp.Compare(it.Stamp) >= 0:
		return // a newer write is visible
	case pk.applied.Compare(it.Stamp) >= 0:
		return // the store has it
	}
	if pk.visible == nil {
		r.stats.FastUncommitted.Add(1)
	}
	pk.visible = &it
}

// retireOverlay retires overlay entries the store has caught up with, for
// each write cmd holds.
func (r *Replica) retireOverlay(cmd fsm.Command) {
	writes := writesIn(cmd)
	if len(writes) == 0 {
		return
	}
	r.pendingMu.Lock()
	defer r.pendingMu.Unlock()
	for _, w := range writes {
		key, stamp := writeOf(w)
		pk := r.overlay[string(key)]
		if pk == nil {
			continue
		}
		if stamp.Compare(pk.applied) > 0 {
			// The store holds stamp or, if the write lost, a greater one.
			pk.applied = stamp
		}
		if pk.visible != nil && pk.visible.Stamp.Compare(stamp) <= 0 {
			pk.visible = nil
			r.stats.FastUncommitted.Add(-1)
		}
		if pk.idle(stamp.Version) {
			// Writes of the key may still be counted in pk.queued: raft
			// took their entries already (unqueue runs after raft.Apply
			// returns), or the store holds a version at least as great as
			// theirs, so no later write of the key can pass them in the
			// log in a way that matters.
			delete(r.overlay, string(key))
		}
	}
}

// idle reports whether pk holds nothing the store lacks once the store has
// applied the key's version applied: no newer version proposed, no fast
// write to show.
func (pk *pendingKey) idle(applied uint64) bool {
	return pk.version <= applied && pk.visible == nil
}
