// Package control is a node's membership control loop: it decides what the
// node should host, reports the node to the metadata leader and, on the
// node that leads the metadata group, runs the cluster — health, placement,
// the metadata group's own membership and replica moves. It decides; the
// node executes through Host (open or drop a replica, hand leadership
// over), and other nodes through their Admin service.
//
// Invariants:
//   - Everything the leader decides is recorded in the metadata group
//     (package cluster) before or after it is done, and every round
//     re-derives its next step from the recorded metadata and the
//     partitions' actual Raft configurations. Only heartbeat times live in
//     memory, so a new metadata leader finishes what a failed one started
//     (e2e TestKillMetadataLeaderMidJoin), giving every member a full
//     timeout from its own start before suspecting it.
//   - A partition moves one configuration change at a time (cluster.NextStep),
//     each planned against the configuration index it saw, so it never has
//     fewer than three up-to-date voters, and two leaders cannot interleave
//     changes (cluster TestMovesKeepThreeVoters). At most MaxMoves partitions
//     move at once.
//   - A node hosts a replica of exactly the partitions its view places on it
//     (target or recorded configuration); Host.DropReplica deletes data, so
//     it is called only once the recorded configuration excludes this node.
//   - Partitions split one at a time, in the ring's order, each recorded
//     before (begin_split) and after (end_split) the parent's primary
//     splits (split.go, cluster/split.go); a parent does not move while it
//     splits, and a split does not begin while the parent moves.
//   - A metadata leader never removes itself: once removed, every peer
//     refuses it, so it hands leadership over first (node
//     TestMetadataLeaderLeaves).
//
// Goroutines: Start runs up to six loops, each until Stop —
//   - host: reconciles the hosted replicas with the view, every second and
//     whenever Config.ViewChanged fires;
//   - heartbeat: reports this node to the metadata leader every
//     SuspectAfter/5 (between 100 ms and 1 s); a PermissionDenied answer
//     (this node was removed) calls Config.OnRemoved and ends the loop;
//   - manage: every ManageInterval, acts while this node leads the metadata
//     group; a round's replica moves run in parallel goroutines that the
//     round waits for, then the next step of a split;
//   - load (if SplitSize or SplitWriteRate is set): every
//     SplitCheckInterval, while this node leads the metadata group, reads
//     every member's Status and records one more split when a primary
//     reports its partition over a threshold;
//   - balance (if BalanceInterval > 0): hands partitions this node leads to
//     their preferred primaries;
//   - purge (if TombstoneTTL > 0): every purgeInterval(TombstoneTTL) (a
//     quarter of the TTL, between 1 s and 1 h), has each partition this
//     node leads purge its tombstones older than the TTL through Host.Purge
//     — a log entry carrying the primary's cutoff, so every replica removes
//     the same ones. A round checks Stop between partitions; each purge is
//     bounded by the node's op timeout.
//
// Locks: health.mu guards the heartbeat times; it is a leaf (nothing is
// called while it is held). The loops share no other state: what they read
// comes from Config.View and Config.Meta, which are safe for concurrent use.
package control
