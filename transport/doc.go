// Package transport carries the Raft traffic of every partition hosted by a
// node over one gRPC server and one client connection per peer.
//
// A process creates one Node, registers it on the *grpc.Server it owns, and
// asks the Node for one Group per partition. A Group implements
// raft.Transport together with raft.WithPreVote (so pre-vote stays enabled)
// and raft.WithClose, and is handed to raft.NewRaft for that partition.
//
// Invariants:
//   - Every request names its partition. The receiving Node hands it to that
//     partition's Group; a request for a partition that is not registered (or
//     whose Group was closed) is answered at once with codes.NotFound, which
//     the sender reports as ErrUnknownPartition, so the sender's raft backs
//     off instead of hanging.
//   - Closing a Group (raft.Shutdown does) unregisters that partition and
//     cancels its outgoing RPCs only; the gRPC server and the per-peer
//     connections stay up for the other groups. Closing the Node closes every
//     Group and every connection, but never the caller's gRPC server.
//   - Every outgoing call is bounded in time: unary RPCs by Options.Timeout,
//     each pipelined AppendEntries send and response and each heartbeat's
//     round trip by Options.Timeout,
//     InstallSnapshot by Options.Timeout per 256 KiB of snapshot, as
//     raft.NetworkTransport does.
//   - A pipeline is one gRPC bidirectional stream per (peer, partition); the
//     receiver answers its requests one at a time, so responses come back in
//     request order.
//   - Heartbeats (an AppendEntries with no entries and no log position) skip
//     the consumer channel through raft's heartbeat handler, as in
//     raft.NetworkTransport, so they never wait behind a large AppendEntries.
//     raft sends one every HeartbeatTimeout/10 per group and follower, which
//     dominates an idle node's CPU, so the heartbeats of all a node's groups
//     to one peer node share one long-lived Heartbeats stream (reopened
//     after a failure), and each waits up to Options.HeartbeatWindow to
//     travel in one message with others. A group whose leadership check a
//     read waits on is expedited (Group.Expedite): its heartbeats, and all
//     waiting ones, go at once. Each heartbeat of a batch is answered, or
//     fails, on its own.
//   - Connections dialed by a Node use fixed HTTP/2 windows; ServerOptions
//     gives the server side the same.
//   - Snapshots travel in chunks of Options.SnapshotChunkSize, so a snapshot
//     larger than the gRPC message limit installs; the receiver gives raft an
//     io.Reader that yields exactly the announced number of bytes and reports
//     a stream that ends early as io.ErrUnexpectedEOF.
package transport
