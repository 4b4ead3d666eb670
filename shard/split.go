package shard

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/hashicorp/raft"

	"github.com/ringkv/ringkv/fsm"
	"github.com/ringkv/ringkv/internal/lenprefix"
	"github.com/ringkv/ringkv/ring"
)

// Splits.
//
// A split is one entry in the parent's log (fsm.Split): every replica,
// applying it, moves the upper half of the parent's keys into the child's
// span of its own engine, and the parent keeps serving the lower half. The
// child is a new Raft group on the same replicas, whose first state is what
// the split derived: the split's genesis (the parent's voters) is kept in
// the child's span, and the child's replica on each node starts its Raft
// state from it (startFromGenesis) as a snapshot at fsm.SplitChildIndex
// with that configuration, so no replica of the child needs entry 1 of a
// log. A replica of the child opened where the parent's split was not
// applied (its node caught up with the parent by snapshot, or the child
// was placed there later) has no genesis and no state: it starts empty,
// and since no log holds the child's entry 1, the child's leader sends it
// a snapshot.
//
// No write may be acknowledged and then refused. A write whose key the
// split hands over and whose entry follows the split in the log is refused
// by Apply (fsm.RangeError), so the primary refuses such writes from the
// moment it proposes the split until raft answers it (handingOver), with
// every propose stripe held while it queues the split for the proposer
// (journal.go), so no write is between its check and its proposal or its
// place in the queue, and every fast write queued before the split reaches
// the log before it. A later primary serves nothing before its term
// marker is applied (waitReady), by which time it has applied the split if
// its log holds it; and from then on the store's range refuses them. Reads
// check the range after they read: ranges only shrink, so a key owned
// after the read was owned during it.

// Split has the group hand the upper half of parent, the range its
// partition owns, to the new partition child on the same replicas (see the
// comment above). It returns once the split is applied here, or at once if
// it was already: the partition owns the lower half of parent. A partition
// owning another range than parent answers an error wrapping
// fsm.ErrSplitMismatch. Only the primary splits; outcomes are those of a
// strong write (NotPrimary, NoQuorum, ErrClosed).
func (r *Replica) Split(ctx context.Context, parent ring.HashRange, child uint32, voters []raft.Server) error {
	if !r.IsPrimary() {
		return r.notPrimary()
	}
	ctx, cancel := r.opContext(ctx)
	defer cancel()
	if err := r.readyFor(ctx, "split"); err != nil {
		return err
	}
	lower, upper, ok := fsm.Halves(parent)
	switch cur := r.store.HashRange(); {
	case !ok:
		return fmt.Errorf("%w: partition %d: range %#x-%#x is one hash", fsm.ErrSplitMismatch, r.cfg.Partition, parent.First, parent.Last)
	case cur == lower:
		return nil
	case cur != parent:
		return fmt.Errorf("%w: partition %d owns %#x-%#x, not %#x-%#x", fsm.ErrSplitMismatch, r.cfg.Partition, cur.First, cur.Last, parent.First, parent.Last)
	}
	entry := encodeEntry(0, fsm.Split{Child: child, Right: upper, Genesis: encodeGenesis(voters)})
	for i := range r.proposeMu {
		r.proposeMu[i].Lock()
	}
	r.handingOver.Store(&upper)
	// Through the proposal queue: every write queued before the split
	// reaches the log before it.
	queued := r.journal.enqueue(entry, nil)
	for i := range r.proposeMu {
		r.proposeMu[i].Unlock()
	}
	answered := make(chan raft.ApplyFuture, 1)
	go func() {
		select {
		case f := <-queued:
			// Until raft answers, the entry may still reach the log.
			<-futureDone(f)
			r.handingOver.CompareAndSwap(&upper, nil)
			answered <- f
		case <-r.closeCh:
		}
	}()
	var future raft.ApplyFuture
	select {
	case future = <-answered:
	case <-ctx.Done():
		return r.noQuorum("split", ctx.Err())
	case <-r.closeCh:
		return ErrClosed
	}
	if err := future.Error(); err != nil {
		return r.proposeError("split", err)
	}
	res, ok := future.Response().(applyResult)
	if !ok {
		return fmt.Errorf("partition %d: unexpected apply response %T", r.cfg.Partition, future.Response())
	}
	if res.err == nil {
		r.log.Info("split", "child", child, "index", future.Index(), "moved", res.res.Moved)
	}
	return res.err
}

// owns checks, under key's propose stripe, that a write of key may be
// proposed: the store owns it, and no split being proposed hands it over.
func (r *Replica) owns(key []byte) error {
	h := ring.Hash(key)
	rng := r.store.HashRange()
	if ho := r.handingOver.Load(); ho != nil && ho.Contains(h) {
		rng.Last = ho.First - 1
	}
	if !rng.Contains(h) {
		return &fsm.RangeError{Field: "key", Hash: h, Range: rng}
	}
	return nil
}

// ownedAt tells settle what became of the write of key that is the entry
// at index: refused (a *fsm.RangeError) if the entry follows the split that
// gave the store its range and the key is outside it, unknown (ok false) if
// the key is outside but an earlier split may have moved it after it
// applied, and applied otherwise.
func (r *Replica) ownedAt(index uint64, key []byte) (ok bool, err error) {
	if err := r.store.Owns(key); err != nil {
		if index > r.store.RangeSince() {
			return true, err
		}
		return false, nil
	}
	return true, nil
}

// genesis: count(uvarint) then, per voter, its id and address, each
// length-prefixed.
func encodeGenesis(voters []raft.Server) []byte {
	b := binary.AppendUvarint(nil, uint64(len(voters)))
	for _, v := range voters {
		b = lenprefix.Append(lenprefix.Append(b, []byte(v.ID)), []byte(v.Address))
	}
	return b
}

var errBadGenesis = errors.New("shard: malformed split genesis")

func decodeGenesis(b []byte) (raft.Configuration, error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n == 0 || n > uint64(len(b)) {
		return raft.Configuration{}, errBadGenesis
	}
	b = b[k:]
	var conf raft.Configuration
	for range n {
		id, rest, ok := lenprefix.Cut(b)
		if !ok {
			return raft.Configuration{}, errBadGenesis
		}
		addr, rest, ok := lenprefix.Cut(rest)
		if !ok {
			return raft.Configuration{}, errBadGenesis
		}
		b = rest
		conf.Servers = append(conf.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(id), Address: raft.ServerAddress(addr)})
	}
	if len(b) != 0 {
		return raft.Configuration{}, errBadGenesis
	}
	return conf, nil
}

// startFromGenesis gives the replica of a partition a split created here
// its first Raft state (see the comment at the top): a snapshot at
// fsm.SplitChildIndex, term 1, whose configuration is the genesis. It does
// nothing for a replica with Raft state or without a genesis. A marker may
// name only durable state: the split wrote the child's by an ingestion,
// durable before the split's entry was applied (fsm's split).
func (r *Replica) startFromGenesis(snaps raft.SnapshotStore) error {
	genesis, ok, err := r.store.Genesis()
	if err != nil || !ok {
		return err
	}
	if has, err := raft.HasExistingState(r.logs, r.stable, snaps); err != nil || has {
		return err
	}
	conf, err := decodeGenesis(genesis)
	if err != nil {
		return fmt.Errorf("partition %d: %w", r.cfg.Partition, err)
	}
	sink, err := snaps.Create(raft.SnapshotVersionMax, fsm.SplitChildIndex, 1, conf, fsm.SplitChildIndex, r.cfg.Transport)
	if err != nil {
		return err
	}
	if _, err := sink.Write(encodeMarker(fsm.SplitChildIndex)); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

// Campaign has this replica stand for election at once, as the target of
// a leadership transfer does: raft's TimeoutNow, which the replica sends
// itself through its transport. The node whose replica led a split's
// parent uses it on the child's, which otherwise waits out a heartbeat
// timeout for its first leader while its keys are unavailable. It is only
// a nudge: a vote that fails (a peer has not opened the child yet) leaves
// the election to raft's timers.
func (r *Replica) Campaign() error {
	tr := r.cfg.Transport
	req := &raft.TimeoutNowRequest{RPCHeader: raft.RPCHeader{
		ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(r.cfg.NodeID), Addr: []byte(tr.LocalAddr()),
	}}
	return tr.TimeoutNow(r.cfg.NodeID, tr.LocalAddr(), req, &raft.TimeoutNowResponse{})
}
