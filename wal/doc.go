// Package wal is a node's shared, group-committed write-ahead log.
//
// One WAL per node holds many independent streams: one per partition
// replica's Raft log and one for cluster metadata. A stream is a sequence of
// entries with contiguous indexes plus a small durable key/value state (Raft's
// current term and vote). Every mutation (Append, TruncateSuffix,
// TruncatePrefix, SetState, DeleteStream) is durable when it returns.
//
// # Group commit
//
// Callers enqueue requests; a single writer goroutine drains the queue,
// encodes everything pending into one buffer, issues one write and one
// fdatasync, applies the batch to the in-memory index and then wakes every
// caller of that batch. No caller is acknowledged before a sync covers its
// records, and a caller waits for at most one sync that does not cover it
// (the one in flight when it enqueued). Callers acknowledged together tend
// to come back together, so when fewer requests are queued than the last
// batch carried, the writer waits for the others for at most half the last
// sync's duration before writing; a lone writer never waits. Without this
// a closed-loop load splits into two alternating half-size batches.
// Requests are validated by the writer
// against the state left by the requests before them, so an invalid request
// fails alone and does not affect the others of its batch. A failed write or
// sync is sticky: after it the WAL refuses every further mutation with an
// error that matches ErrClosed and wraps the I/O error, because after a
// failed fsync the page cache can no longer be trusted.
//
// # Files
//
// The directory holds segment files named "%020d.wal" after their sequence
// number (contiguous, starting at 1), a LOCK file, and transiently
// "*.wal.tmp" files being prepared. A new segment is written to a temporary
// name (header, preallocation, fdatasync), then renamed and the directory
// synced, so a file with a segment name always has a valid header.
// Segments are preallocated to Options.SegmentSize, so unwritten space reads
// as zeros and a zero length field marks the end of written data. A segment
// exceeds SegmentSize only when a single request is larger than a segment.
//
// Segment header (24 bytes, integers little-endian):
//
//	0   8  magic "ringkvWL"
//	8   4  format version (1)
//	12  8  segment sequence number, equal to the one in the file name
//	20  4  CRC-32C (Castagnoli) of bytes 0..20
//
// Record (25 + len(payload) bytes, integers little-endian):
//
//	0   4  length: number of bytes after the CRC field (17 + len(payload))
//	4   4  CRC-32C of everything after this field: bytes 8..8+length
//	8   8  stream id
//	16  8  index
//	24  1  type
//	25  -  payload
//
// Record types and the meaning of their fields:
//
//	1 batch            stream = segment sequence, index = the record's own file offset,
//	                   payload = length of the batch in bytes, this record included (4 bytes)
//	2 entry            stream, index ≥ 1, payload = entry data
//	3 truncate-suffix  stream, index = first removed index (≥ 1); no payload
//	4 truncate-prefix  stream, index = last removed index (≥ 1); no payload
//	5 set-state        stream, index 0, payload = key length (1 byte, ≥ 1), key, value
//	6 delete-stream    stream, index 0; no payload
//
// Every write is one batch: a batch record followed by the records of the
// requests it carries; a request never spans batches. Recovery applies a
// batch only once all of its records are intact, so every request, and
// every Append however many entries and streams it names, is atomic across
// a crash. Because the writer
// issues the write of batch k+1 only after the sync of batch k returned, a
// valid batch record found after a damaged record proves that the damaged
// record had been synced: that is corruption. A damaged record with no valid
// batch record after it in the last segment is a torn tail left by a crash
// during the last write; recovery cuts the log at the start of that batch
// and reports the number of non-zero bytes dropped in RecoveryInfo. The batch record embeds its own
// segment and offset so that resynchronising on it after damage cannot be
// fooled by stale or payload bytes that happen to look like a record.
//
// # Recovery
//
// Open replays all segments in order. Replay is the same code that applies a
// batch at run time: an entry record sets the location of (stream, index), a
// truncate record removes the entries it names from the stream as it is at
// that point in the log, set-state replaces a key, delete-stream forgets the
// stream. Damage before the tail, a missing segment, a foreign file, or a
// stream whose entries are not contiguous after replay is reported as a
// *CorruptionError (errors.Is(err, ErrCorrupt)) naming the file and offset;
// nothing is skipped silently.
//
// # Space reclamation
//
// A record is live while it is the current location of an entry inside its
// stream's [FirstIndex, LastIndex] or of a stream's latest value for a state
// key; everything else (batch and truncate records, overwritten or truncated
// entries, older states) is dead. Segments are deleted strictly oldest first,
// and only when they hold no live record: the truncate and delete records of
// a segment only ever concern records in that segment or older ones, so
// deleting oldest first can never resurrect a removed entry. Each deletion is
// followed by a directory sync, so the durable set of segments is always
// contiguous.
//
// A slow stream could pin old segments. Policy: when the WAL holds more than
// Options.CompactSegments segments and the live bytes are less than
// Options.CompactLiveRatio of the written bytes, the writer copies the live
// records of the oldest segment, byte for byte, to the head of the log (at
// most 256 KiB per batch, piggybacked on user batches or alone when idle,
// reading the old segment through a 1 MiB window), and deletes the segment
// once all of them have been copied and synced.
// Crash safety: a copy is an ordinary record, so after a crash either the old
// segment still exists (replay sets the same entry twice, to equal data, and
// the later truncate records still apply in log order) or its deletion was
// preceded by the sync of every copy.
//
// # Memory and concurrency
//
// Append copies entry data; callers may reuse their buffers when it returns.
// Get, Range and State return slices owned by the caller. Reads take a read
// lock only to look up locations; disk reads run unlocked, and segments are
// reference counted so that a reclaimed segment is closed only after its last
// reader. The writer never holds the lock across a write or a sync.
//
// The FS interface is the seam to the file system: OSFS for real files and
// MemFS, an in-memory file system that can lose unsynced data on Crash and
// inject faults, for tests.
package wal
