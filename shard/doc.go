// Package shard is one replica of a partition: a member of the partition's
// hashicorp/raft group, its Raft log, the fsm.Store it applies that log to,
// and, while it leads, the bookkeeping that lets it number writes,
// acknowledge fast writes before they commit and serve linearizable reads.
//
// A node opens one Replica per partition it hosts (Open), bootstraps it or
// has the group's leader add it, and serves its partition's Put, Delete and
// Get through it. Only the group's leader, the primary, serves them; every
// other replica answers a *NotPrimaryError naming the leader it knows, so the
// caller can go there (TestFollowerAnswersNotPrimary).
//
// # Log entries and the state machine
//
// An entry's data is one flags byte (flagFast marks fast writes: one, or a
// Batch of them from the journal) followed by an fsm command in fsm's
// encoding. Raft hands every committed entry to the
// replica's state machine (fsmAdapter), which applies commands through
// fsm.Store.Apply and consumes a configuration entry's index as an empty
// Batch (raft.ConfigurationStore), so the store's applied index advances past
// every entry raft applies; it is the index quorum reads and settle wait for.
// Raft's own no-op at the start of a term never reaches the state machine,
// but the term marker that follows it does, and quorum reads wait for the
// marker (see Readiness): the commit index a read waits for is always one the
// store reaches.
//
// Apply is deterministic. An entry that does not decode is consumed as an
// empty Batch and its proposer gets the decode error (a wrapped
// fsm.ErrMalformedCommand); a command breaking Config.Limits changes no key
// and its proposer gets the *fsm.LimitError (TestApplyRefusesInvalidEntries).
// An entry is decoded once, by Apply: onStored reads only, for a traced
// write, the request id at its end (fsm.WriteRequestID), a writer keeps
// what it needs of its own entry (fsm.AppendWrite), and the proposer joins
// encoded writes into a Batch without decoding them (fsm.JoinWrites). The
// exceptions are rare: settle reads back an entry of the log, and Reoffer
// checks the entry it is handed, possibly by another node, before proposing
// it.
//
// Put, Delete and Get check key and value against the same limits before
// anything else, whoever calls them, so bad input gets its typed error there
// and never reaches the log or the overlay (TestBadInputNeverReachesTheLog).
// Apply's check cannot replace theirs: a fast write is acknowledged before it
// is applied, and a refused entry still spends its index. The router checks
// them too, before it forwards a request.
//
// # Writes: strong and fast
//
// A write waits until the replica is ready (below), then numbers and proposes
// (or queues) its entry and waits for its outcome, under a deadline of
// Config.OpTimeout (handing the entry to raft has its own bound of the same
// length):
//
//   - A strong write is acknowledged once raft has committed its entry and
//     the primary applied it. The apply result decides: a write that lost
//     the conflict rule (only possible against a re-offered fast write with a
//     greater stamp) took no effect and fails with *SupersededError
//     (TestWriteResult). Its writer proposes it itself, unless a write of
//     its key waits in the proposal queue: then it queues behind it.
//   - A fast write is acknowledged once it is durable in the partition's
//     journal, a stream of the node's WAL, with no raft goroutine on the
//     way; one proposer per replica replicates the journal behind it, many
//     writes per entry, and a write leaves the journal once a primary has
//     applied it (journal.go: design, bounds, epochs;
//     TestWriteAndReadEveryMode, TestFastWriteVisibleLocallyAtAck,
//     TestFastThenStrongKeepOrder, TestJournalBackpressure). A fast write
//     that finds the journal full for its whole deadline fails with
//     *JournalFullError and wrote nothing.
//
// A strong proposal raft refuses before it reaches the log (not the leader,
// a leadership transfer under way) fails with NotPrimary: nothing was written,
// and the write gives back the version it reserved (below).
// ErrLeadershipLost is settled (below); any other failure, and a timeout,
// is *NoQuorumError: the entry may still commit. A strong write on a
// primary cut off from its group fails once its lease has run out and
// settle has waited the time an election takes, never later than
// OpTimeout (TestIsolatedPrimary, TestSettleWaitIsBounded).
//
// At shutdown (Close) a write gets what raft's state at that moment gives
// it. A proposal raft no longer takes fails with ErrClosed
// (raft.ErrRaftShutdown): nothing was written. An entry still in flight is
// answered ErrLeadershipLost by raft's exiting leader loop, and settle,
// whose wait ends at once on Close, leaves it unknown: NoQuorum. A
// committed entry raft had not yet handed to its FSM goroutine is answered
// ErrRaftShutdown, hence ErrClosed, although it committed; and one already
// handed over may never be answered (see Goroutines and locks), so its
// write fails NoQuorum at its deadline. So neither ErrClosed nor NoQuorum
// says a write did not happen; the router answers both Unavailable, which
// the client does not resend.
//
// # Version assignment
//
// The primary numbers a write current+1, where current is the key's highest
// version proposed on this primary (the overlay, below) or applied (a
// tombstone counts). The overlay is read before the store: a write leaves the
// overlay only after the store applied it, so one of the two reads sees it,
// while in the other order it could apply and leave between them and its
// version be handed out again (TestCurrentVersionNeverMissesAnAppliedWrite).
//
// Numbering, stamping (Config.Clock, the node's HLC) and proposing happen
// under one of proposeStripes mutexes, chosen by a hash of the key, and the
// stripe is held until raft has taken the entry (raft.Apply returns) or the
// entry is in the proposal queue, whose order the proposer keeps, so two
// writes to one key enter the log in version order and get consecutive
// versions (TestConcurrentWritesGetDistinctVersions,
// TestFastThenStrongKeepOrder). A write whose proposal
// raft refuses learns it only after the stripe is released, and then gives
// its version back (giveBack), under the stripe again, if it is still the
// key's newest reservation in this term's overlay; the key's next write
// takes it (TestRefusedWriteGivesItsVersionBack). If a later write reserved
// above it meanwhile, its version stays spent: a gap in the key's versions,
// never a version handed out twice (TestGiveBackOnlyTheNewest). Writes to
// keys of different stripes propose concurrently, and raft's leader loop
// stores the entries waiting for it as one batch: one log write, one fsync.
//
// # The overlay
//
// While it leads, the replica keeps a pendingKey for each key with writes in
// flight: the highest version proposed for it, how many of its writes wait in
// the proposal queue, the greatest stamp of its writes applied since, and
// visible, the newest acknowledged fast write of the key that the store has
// not applied yet. The store itself only ever holds committed entries; the
// overlay sits beside it. A fast writer makes its write visible (showFast)
// once its journal append is durable and before it acknowledges it, so a
// local read on the primary sees a fast write from its acknowledgement on
// (TestFastWriteVisibleLocallyAtAck). A local read returns the newer of
// visible and the store's item. visible aliases the write's journal record,
// never the caller's buffers (TestFastWriteKeepsNoCallerBuffer).
//
// Applying a write retires what the store has caught up with (retireOverlay):
// visible once the store holds a stamp at least as great, the whole entry
// once nothing newer is proposed or visible. A writer that wakes only after
// its write was applied shows nothing: showFast checks, under pendingMu,
// that its pendingKey is still in the overlay and that the stamp
// retireOverlay recorded there does not cover it; retireOverlay takes
// pendingMu only after the store published the write
// (TestShowFastAfterApply). Losing leadership drops the overlay
// (dropOverlay): the next primary numbers from its own store, and this
// replica's unanswered proposals fail through their futures.
// Stats.FastUncommitted counts the keys with a visible write. Once every
// write a primary proposed is applied, its overlay is empty
// (TestOverlayEmptiesOnceApplied).
//
// # Settle
//
// hashicorp/raft fails the futures of every entry in flight when its leader
// steps down, a leadership hand-over included, with ErrLeadershipLost, though
// the next leader usually commits them. A write that gets that answer is
// settled from the log instead (settle): the replica, now a follower, waits
// until it has applied the entry's index. If the entry there is the write
// (same kind, key, stamp and request id), the write took effect and is
// acknowledged. If it is another entry, a strong write provably did not
// happen and fails with NotPrimary, which the client retries at the new
// primary; a fast write's cut entry may still be re-offered, so it stays
// unknown (NoQuorum), as does a write whose index is not applied in time or
// has left the log (TestSettle).
//
// The wait (waitSettled) is bounded by the write's deadline and, unless the
// replica knows a leader by then, by the time the group takes to elect one
// after this replica stepped down, 2*(HeartbeatTimeout+ElectionTimeout)
// (settleBound): only a leader's commit index tells the outcome. In a
// hand-over the target campaigns at once; a primary whose lease ran out in
// a stall, though not cut off, is elected again (or hears from whoever
// is) only once a heartbeat timeout, its own or a follower's, has run out
// and a vote was held, so one ElectionTimeout was too short: such writes
// failed though their entries then committed
// (TestSettleAfterSpuriousStepDown). A replica that has heard from no
// leader by the bound is most likely cut off (a primary whose lease ran
// out) and would learn nothing until healed, so its writes fail NoQuorum
// then rather than at OpTimeout, and their callers can repeat them at the
// new primary (TestSettleWaitIsBounded; docs/benchmarks.md, "Failover and
// Raft timing", measured every write in flight on an isolated primary
// waiting the whole op timeout before the bound). A replica that knows a
// leader waits on, within the deadline: the leader's next entries, or at
// the latest its randomized CommitTimeout (up to twice CommitTimeout),
// carry the commit index, and an answer beats an unknown outcome.
//
// # Re-offering fast writes
//
// A fast write acknowledged by a primary that loses leadership before the
// entry commits may be overwritten by the next leader; one whose entry raft
// refused never reached the log. Either way it is still in that primary's
// journal: the journal's epoch ended (lost leadership, a failed or refused
// entry, a restart), and its records belong to the re-offer path
// (reoffer.go). runReoffers hands them, oldest first and up to a Batch of
// maxRunWrites at a time, to the primary: to itself (Reoffer) if it leads,
// else through Config.Reoffer (Admin.Reoffer between nodes;
// TestReofferDeliveredToRemotePrimary), and releases them from the journal
// once the primary has applied them (Stats.Reoffered counts them). A
// replica restarted before delivering them finds them in the WAL and
// delivers them then (TestJournalSurvivesRestart,
// TestPrimaryStoppedWithDeepJournal). The primary proposes the writes
// again as they were, original stamps and fast flag included, so the
// conflict rule decides: a newer write wins (Stats.ReofferLost), an equal
// stamp is already applied. Delivering a write that did commit is
// therefore harmless. Reoffer answers with what applying the entry did:
// applied, already applied or lost, it is delivered; refused by Apply, it
// is not, and the error says why (TestReofferReportsItsOutcome).
//
// A record no primary can take (it does not decode, or its command breaks
// Config.Limits) is dropped with an error logged and counted
// (Stats.ReofferDropped), so it cannot hold up the records behind it: the
// replica checks each record itself before delivering it, as the primary's
// Reoffer does, and takes such an answer from the primary (an error
// wrapping fsm.ErrMalformedCommand or an *fsm.LimitError) the same way,
// offering the records of a refused Batch one at a time to find the one at
// fault. Any other failure (no primary known, no quorum, the primary
// unreachable) leaves the records first for the next round
// (TestReofferDropsRefusedEntries). A record whose key a split handed to
// another partition goes to that partition's primary (Config.Rehome).
//
// TestIsolatedPrimaryReoffersFastWrites is the guarantee end to end: a
// primary cut off from its group acknowledges fast writes until its lease
// runs out, the new leader writes one of their keys again; once healed,
// every acknowledged fast write is readable with its original stamp but
// that one, which lost to the newer write. test/chaos's
// TestKill9DuringDeepJournal is the same with the primary killed (SIGKILL)
// while its journal holds everything it acknowledged.
//
// # Tombstone purges
//
// A delete stores a tombstone carrying its stamp, so that an older write of
// the key still loses and the key's versions go on from it. PurgeTombstones
// (purge.go), which the node's control loop calls on the primary of each
// partition it leads, removes those older than Config.Limits.TombstoneGrace
// (the node's TombstoneTTL): after waitReady, the primary proposes fsm's
// PurgeTombstones with its cutoff (its HLC now minus the grace,
// fsm.Store.PurgeCommand) and waits until the entry is applied, reporting
// how many tombstones the apply removed. The cutoff travels in the entry,
// so every replica removes the same tombstones at the same index and Apply
// reads no clock; a replica that missed the delete applies it before the
// purge, from the log or a snapshot (TestPurgeTombstones). A primary whose
// store holds no tombstone proposes nothing. An outcome left unknown is not
// settled: the next round proposes another purge.
//
// The price: once its tombstone is gone a key is absent. A re-offered fast
// write, the one kind of entry that reaches the log with an old stamp, then
// wins even if it is older than the delete, and the key comes back; and the
// primary numbers the key's next write 1 again, so a late write of a
// greater version overwrites even newer, acknowledged writes
// (TestLateWriteAfterPurge; docs/design.md, "Versions and conflicts").
//
// # Reads
//
// Both read modes are served by the primary only. A local read returns the
// overlay's or the store's newer item at once; a primary that does not know
// yet that it was deposed can serve a stale one, for up to its lease.
//
// A quorum read is a read index built on what hashicorp/raft offers (Get): it
// waits until the replica is ready, notes the commit index and waits until
// the store has applied it, so every write acknowledged as strong before the
// read began is visible; it reads the store, and only then confirms with a
// majority that it still leads (VerifyLeader). A primary deposed before that
// round started cannot pass it, so it cannot answer from stale state even if
// it paused between the read and the check (TestLinearizableUnderPartitions,
// a Porcupine check under partitions; a cut-off primary fails within
// OpTimeout, TestIsolatedPrimary).
//
// Concurrent reads share rounds through the verifier: a read joins the next
// round, which starts only after the round in flight ended, hence after each
// of its reads. A round asks the transport, if it can hold heartbeats back to
// batch them (transport.Group), to send them at once
// (TestQuorumReadExpeditesHeartbeats). That a round never starts before one
// of its reads is checked only through the Porcupine test.
//
// # Readiness
//
// A new leader's store may miss entries that earlier leaders committed and
// acknowledged, and its commit index may trail them, until it commits an
// entry of its own term. So on winning an election (watchLeadership) the
// replica proposes an empty Batch, its term marker (markTerm), and once that
// is applied it records the term as ready (readyTerm) and wakes the writes
// and quorum reads waiting in waitReady. Writes must wait too: numbered from
// a store that misses an acknowledged write, a write could reuse that write's
// version, win with its timestamp, and make the acknowledged write vanish;
// TestLinearizableUnderPartitions found exactly that before the wait existed.
// A marker raft refuses at once (a leadership transfer) is retried every
// commit timeout while the term lasts. Readiness also kicks the re-offer
// queue, so a new primary delivers its own at once.
//
// # Snapshots
//
// The store lives in the node's storage engine (Config.Engine), so a raft
// snapshot copies nothing: raft's snapshot goroutine flushes the engine,
// which makes the applied index durable before raft may truncate its log,
// and writes a marker naming it; then it calls Config.OnSnapshot. Raft is
// started with NoSnapshotRestoreOnStart: on a restart the engine already
// holds the state, and the store refuses the entries raft replays at or
// below its applied index. Only when a follower needs a snapshot does
// engineSnapshots.Open turn the marker into data, a stream of the
// partition read from a consistent engine view (snapshots.go,
// TestMarkerOpensAsTheEnginesState). Restore ingests a received stream
// only once it is fully verified. A replica that is too far behind catches
// up from the leader's snapshot and then its log
// (TestRestartedReplicaCatchesUpBySnapshot); one whose engine a crash left
// behind a received snapshot restores it before raft starts
// (TestRecoverBringsTheEngineLevelWithTheLatestSnapshot).
//
// Config.Snapshots caps snapshot transfers on the node (gatedSnapshots): it
// is a channel shared by all replicas, and sending a snapshot (Open) or
// receiving one (Create) holds one of its slots until the stream is closed
// (TestSnapshotTransfersAreCapped). Snapshots taken locally go through Create
// and queue behind transfers too. A receiver waits for its slot inside raft's
// InstallSnapshot handling, on raft's main goroutine for that group.
//
// # Splits
//
// A split is one entry in the parent's log; each replica derives the child
// from its own state, and the child's Raft group starts from the split's
// genesis. How writes in flight are kept from being acknowledged and then
// refused, and how a replica of the child starts where the split was not
// applied, is written down in split.go.
//
// # Goroutines and locks
//
// Open starts five goroutines, counted by Replica.wg; Close closes closeCh,
// shuts raft down and waits for them:
//
//   - watchLeadership owns raft's leadership notifications (leaderCh, raft's
//     NotifyCh). It starts a markTerm on each gain and on each loss drops the
//     overlay and readiness and ends the journal's epoch. Raft's main loop
//     blocks on that channel when its buffer is full, so this goroutine
//     never waits for anything but pendingMu, the journal's mu and the
//     ready broadcast. It ends when closeCh is closed.
//   - runProposer owns proposing the proposal queue (journal.go): it wakes
//     on the journal's work channel, takes runs in order and calls
//     raft.Apply, hands each fast run's future to the releaser and each
//     queued entry's future to its writer. It ends when closeCh is closed.
//   - runReleaser reads the futures of the fast runs in order (through
//     futureDone and closeCh) and releases applied records, or ends the
//     journal's epoch. It ends when closeCh is closed.
//   - runReoffers owns removing records from the journal's WAL stream
//     (truncating what was released) and delivering the records of ended
//     epochs. It wakes on reofferCh (the releaser, leadership changes,
//     markTerm), and an election timeout after a round that left records
//     behind (never while none is left), and delivers until none is left
//     or a delivery fails for a reason other than the records themselves.
//     It ends when closeCh is closed, which a round checks before each
//     delivery: Close waits for the delivery in flight only (bounded by
//     OpTimeout), and the records left stay in the WAL for the next start
//     (TestCloseStopsReofferRound).
//   - The verifier's run is the only caller of VerifyLeader: it owns the
//     rounds. It ends when closeCh is closed, after the round in flight
//     (raft answers it when shut down), failing the round that was waiting
//     with raft.ErrRaftShutdown.
//
// And two kinds of goroutines per event:
//
//   - markTerm, one per leadership gained, also counted by wg. It ends once
//     its marker is applied, when raft shuts down or refuses it, when
//     closeCh is closed, or once leadership or the term changed.
//   - futureDone, one per write, per re-offer, per marker, per purge and
//     per split, turns a raft future into a channel the caller can select
//     on with its context or closeCh. It is not counted: it may outlive
//     the call and ends when raft answers the future. A split adds one
//     more, which clears handingOver once raft answers (split.go).
//
// Raft answers every entry it took (applied, ErrLeadershipLost when its
// leader steps down, ErrRaftShutdown), except one already queued for its FSM
// goroutine when it shuts down, which that goroutine may leave behind: a
// futureDone waiting on such an entry never ends (one goroutine leaked per
// such entry, at shutdown only). markTerm waits on its marker through
// futureDone and closeCh, so that case cannot keep Close waiting.
//
// Raft's own goroutines call in: its main loop stores entries (onStored),
// installs snapshots and sends on leaderCh; its FSM goroutine runs fsmAdapter (Apply, StoreConfiguration,
// Snapshot, Restore); its snapshot goroutine persists snapshots; its
// replication goroutines open snapshots to send them; an observer filter
// counts leader changes (Stats.LeaderChanges) on whichever raft goroutine
// reports one.
//
// Locks, outermost first; fsm.Store's and the HLC's own locks come below all
// of them:
//
//   - A proposeMu stripe. A write holds exactly one (a split, queueing,
//     holds all of them, in order), and under it takes pendingMu twice (to
//     read the overlay's version, then to record it), the HLC, the store's
//     point index (Stamp), and last either calls raft.Apply, which waits
//     until raft's leader loop takes the entry, possibly behind the store
//     and sync of the batch before it, or takes the journal's mu to append
//     and queue. That wait is safe because nothing raft runs or waits for
//     (onStored, fsmAdapter, watchLeadership) ever takes a stripe or waits
//     for a writer, and because pendingMu is released before raft.Apply.
//   - The journal's mu guards its records, epoch and proposal queue; under
//     it the WAL's queue lock (AppendAsync) and the room broadcast's mu are
//     taken, nothing else. The proposer calls raft.Apply without it.
//   - pendingMu guards the overlay. A local read and currentVersion release
//     it before they read the store, and Apply takes it only after the store
//     published the entry; giveBack is the holder that reads the store's
//     point index under it. The proposer takes it (unqueue) without the
//     journal's mu.
//   - Leaves, each held for a few map or channel operations with no other
//     lock taken under it: tracedMu (the contexts of traced writes), the
//     verifier's mu, and broadcast's mu, which guards only the channel to
//     close: a waiter's condition is evaluated outside it.
package shard
