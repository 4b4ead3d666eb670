// Package storage is a node's on-disk state: one pebble LSM (SSTables,
// leveled compaction, block cache, bloom filters) shared by every partition
// the node hosts, each partition in its own span of keys.
//
// # Why one engine, and why no engine WAL
//
// A node hosts a replica of many partitions. One pebble instance per node
// shares one block cache, one memtable and one set of compactions among
// them, where an instance per partition would multiply background work and
// memory by the partition count. Every key starts with its partition
// (keys.go), so one partition's data is one contiguous span: it is iterated,
// streamed, dropped (DB.Excise) and replaced (DB.IngestAndExcise) on its
// own.
//
// The Raft log in the node's shared WAL is already the write-ahead log of
// everything applied here: an entry is applied only once it is durable
// there. So the engine runs with pebble's own WAL off (Options.DisableWAL)
// and writes applied batches without a sync: a crash loses the memtable,
// and Raft replays what it lost. That is safe because of two invariants:
//
//   - A partition's applied index is a key of its span, written in the
//     same batch as the writes of the entry it names (Batch.Commit): after
//     any crash the data on disk and the applied index on disk agree, and
//     the state machine skips the entries replayed at or below it.
//   - Before Raft takes a snapshot, and so before it may truncate its log,
//     the engine is made durable up to that index (Engine.Flush): the
//     entries Raft no longer holds are never needed.
//
// docs/design.md measures this choice against a pebble WAL written without
// sync.
//
// # Snapshot streams
//
// A partition's state leaves as a stream read from a consistent engine
// snapshot (WriteSnapshot): its records in key order, the applied index they
// reflect, and a CRC-32C per chunk and over the whole. A receiver
// (Partition.Ingest) verifies the stream while it writes it into SSTables
// beside the engine and only then swaps them in atomically in place of the
// partition's span, applied index included; a corrupt or truncated stream
// leaves the current state untouched and its files deleted.
//
// # Building a span
//
// Partition.Build swaps in a whole span written as SSTables (a split's
// child), durably: an ingestion that overlaps the memtables becomes a
// flushable ingest, durable only once flushed, so Build flushes then.
//
// # Goroutines and locks
//
// The package starts no goroutine; pebble runs its flushes and compactions
// on its own. An Engine, its Partitions and Views are safe for concurrent
// use. A Partition has one writer at a time (the state machine's apply
// goroutine: Commit and Ingest are not called concurrently for one
// partition), any number of readers. ingestMu serializes ingestions
// (Ingest, Build), which share the engine's staging directory.
package storage
