package shard

import (
	"context"
	"errors"
	"sync"

	"github.com/hashicorp/raft"

	"github.com/ringkv/ringkv/fsm"
)

// ReadMode says which state a read observes.
type ReadMode uint8

const (
	// Local reads the primary's state, including its acknowledged fast
	// writes, without a round trip to the group.
	Local ReadMode = iota
	// Quorum is linearizable: it reflects every write acknowledged as
	// strong before the read began.
	Quorum
)

func (m ReadMode) String() string {
	if m == Quorum {
		return "quorum"
	}
	return "local"
}

// Get returns key's live value. Both modes are served by the primary only.
//
// A quorum read is a read-index read built on what hashicorp/raft offers:
//  1. the primary has applied an entry of its current term (markTerm,
//     waitReady), so its commit index covers everything committed by
//     earlier leaders;
//  2. it notes the commit index when the read arrives and waits until the
//     store has applied it: every write acknowledged before the read began is
//     then visible;
//  3. it reads, and only then confirms with a majority that it still leads
//     (VerifyLeader). Verifying after the read means that a primary deposed
//     during steps 2–3 cannot answer from stale state: the verification
//     round starts after the read and fails.
//
// Concurrent quorum reads share verification rounds.
func (r *Replica) Get(ctx context.Context, key []byte, mode ReadMode) (fsm.Item, error) {
	if err := r.cfg.Limits.ValidateKey(key); err != nil {
		return fsm.Item{}, err
	}
	if !r.IsPrimary() {
		return fsm.Item{}, r.notPrimary()
	}
	if mode == Local {
		it, err := r.localGet(key)
		// A split may have handed the key over during the read (split.go).
		if oerr := r.store.Owns(key); oerr != nil {
			return fsm.Item{}, oerr
		}
		return it, err
	}
	ctx, cancel := r.opContext(ctx)
	defer cancel()
	if err := r.waitReady(ctx); err != nil {
		return fsm.Item{}, r.readError(err)
	}
	if err := r.waitApplied(ctx, r.raft.CommitIndex()); err != nil {
		return fsm.Item{}, r.readError(err)
	}
	it, ok := r.store.Get(key)
	if err := r.store.Owns(key); err != nil {
		return fsm.Item{}, err
	}
	if err := r.verify.leader(ctx); err != nil {
		return fsm.Item{}, r.readError(err)
	}
	if !ok {
		return fsm.Item{}, ErrNotFound
	}
	return it, nil
}

func (r *Replica) localGet(key []byte) (fsm.Item, error) {
	r.pendingMu.Lock()
	var it fsm.Item
	var fast bool
	if pk := r.overlay[string(key)]; pk != nil && pk.visible != nil {
		it, fast = *pk.visible, true
	}
	r.pendingMu.Unlock()
	if stored, ok := r.store.Lookup(key); ok && (!fast || stored.Stamp.Compare(it.Stamp) >= 0) {
		it = stored
	} else if !fast {
		return fsm.Item{}, ErrNotFound
	}
	if it.Tombstone {
		return fsm.Item{}, ErrNotFound
	}
	return it, nil
}

func (r *Replica) readError(err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost):
		return r.notPrimary()
	case errors.Is(err, ErrClosed), errors.Is(err, raft.ErrRaftShutdown):
		return ErrClosed
	}
	return r.noQuorum("quorum read", err)
}

// verifier batches VerifyLeader calls: a caller joins the next round, which
// starts only after the round in flight ends, so every round begins after
// each of its callers finished reading.
type verifier struct {
	mu   sync.Mutex
	next *round
	kick chan struct{}
	once sync.Once
}

type round struct {
	done chan struct{}
	err  error
}

func (v *verifier) init() { v.once.Do(func() { v.kick = make(chan struct{}, 1) }) }

func (v *verifier) leader(ctx context.Context) error {
	v.init()
	v.mu.Lock()
	if v.next == nil {
		v.next = &round{done: make(chan struct{})}
	}
	rd := v.next
	v.mu.Unlock()
	select {
	case v.kick <- struct{}{}:
	default:
	}
	select {
	case <-rd.done:
		return rd.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// expediter is a transport that may hold heartbeats back to send them
// together (transport.Group does); a leadership check, which a read waits
// on, has its heartbeats sent at once.
type expediter interface{ Expedite() (done func()) }

func (v *verifier) run(r *raft.Raft, tr raft.Transport, closeCh <-chan struct{}) {
	v.init()
	expedite := func() (done func()) { return func() {} }
	if e, ok := tr.(expediter); ok {
		expedite = e.Expedite
	}
	for {
		select {
		case <-closeCh:
			v.finish(raft.ErrRaftShutdown)
			return
		case <-v.kick:
		}
		v.mu.Lock()
		rd := v.next
		v.next = nil
		v.mu.Unlock()
		if rd == nil {
			continue
		}
		done := expedite()
		rd.err = r.VerifyLeader().Error()
		done()
		close(rd.done)
	}
}

func (v *verifier) finish(err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.next != nil {
		v.next.err = err
		close(v.next.done)
		v.next = nil
	}
}
