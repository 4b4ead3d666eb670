package storage

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"slices"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/objstorage/objstorageprovider"
	"github.com/cockroachdb/pebble/v2/sstable"
)

// Snapshot stream, format 1. Integers are big-endian; every CRC is
// CRC-32C (Castagnoli).
//
//	header  "RKVS" | format (1 byte) | applied index (8) | CRC of the 13 bytes before (4)
//	chunk   length n > 0 (4) | n bytes of records | CRC of those n bytes (4)
//	        a record: space (1) | uvarint key length | key | uvarint value length | value
//	trailer 0 (4) | records (8) | CRC of every chunk's records in order (4) | CRC of the 16 bytes before (4)
//
// Records come in strictly ascending (space, key) order; space 0, the
// engine's own, is never in a stream: the applied index travels in the
// header.
const (
	streamMagic   = "RKVS"
	streamFormat  = 1
	headerLen     = 4 + 1 + 8 + 4
	chunkTarget   = 1 << 20  // a writer ends a chunk past this many bytes
	maxChunk      = 64 << 20 // a reader refuses a longer chunk
	sstTargetSize = 64 << 20 // an ingestion starts a new SSTable past this
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrCorruptSnapshot reports a stream that fails verification: a checksum,
// a length, the order of its records, or an early end.
var ErrCorruptSnapshot = errors.New("storage: corrupt snapshot stream")

// ErrSnapshotFormat reports a well-formed header naming a format this
// version does not read.
var ErrSnapshotFormat = errors.New("storage: unknown snapshot format")

// WriteSnapshot streams the view's partition to w and returns the bytes
// written and the applied index the stream carries.
func (v *View) WriteSnapshot(w io.Writer) (n int64, applied uint64, err error) {
	return v.stream(w)
}

// SnapshotSize is the length of the stream WriteSnapshot would write. It
// walks the records without copying or checksumming them: a sender must
// announce the size before it sends (raft's InstallSnapshot does).
func (v *View) SnapshotSize() (int64, error) {
	n, _, err := v.stream(nil)
	return n, err
}

// stream writes the view's stream to w, or only measures it if w is nil.
// One loop does both, so the size cannot disagree with the stream.
func (v *View) stream(w io.Writer) (n int64, applied uint64, err error) {
	if applied, err = v.Applied(); err != nil {
		return 0, 0, err
	}
	start, end := span(v.p.id)
	it, err := v.snap.NewIter(&pebble.IterOptions{LowerBound: engineKey(nil, v.p.id, metaSpace+1, nil), UpperBound: end})
	if err != nil {
		return 0, 0, err
	}
	defer it.Close()
	measure := w == nil
	if measure {
		w = io.Discard
	}
	cw := &countingWriter{w: bufio.NewWriterSize(w, 64<<10)}
	hdr := append([]byte(streamMagic), streamFormat)
	hdr = binary.BigEndian.AppendUint64(hdr, applied)
	cw.write(binary.BigEndian.AppendUint32(hdr, crc32.Checksum(hdr, castagnoli)))
	var (
		chunk    []byte
		chunkLen int // of chunk, or of the chunk measured
		records  uint64
		all      uint32
	)
	flush := func() {
		switch {
		case chunkLen == 0:
			return
		case measure:
			cw.n += int64(4 + chunkLen + 4)
		default:
			cw.write(binary.BigEndian.AppendUint32(nil, uint32(len(chunk))))
			cw.write(chunk)
			cw.write(binary.BigEndian.AppendUint32(nil, crc32.Checksum(chunk, castagnoli)))
			all = crc32.Update(all, castagnoli, chunk)
			chunk = chunk[:0]
		}
		chunkLen = 0
	}
	for valid := it.First(); valid && cw.err == nil; valid = it.Next() {
		k := it.Key()[len(start):]
		val, err := it.ValueAndErr()
		if err != nil {
			return cw.n, 0, err
		}
		if measure {
			chunkLen += 1 + uvarintLen(len(k)-1) + len(k) - 1 + uvarintLen(len(val)) + len(val)
		} else {
			chunk = append(chunk, k[0])
			chunk = binary.AppendUvarint(chunk, uint64(len(k)-1))
			chunk = append(chunk, k[1:]...)
			chunk = binary.AppendUvarint(chunk, uint64(len(val)))
			chunk = append(chunk, val...)
			chunkLen = len(chunk)
		}
		records++
		if chunkLen >= chunkTarget {
			flush()
		}
	}
	if err := it.Error(); err != nil {
		return cw.n, 0, err
	}
	flush()
	tr := binary.BigEndian.AppendUint32(nil, 0)
	tr = binary.BigEndian.AppendUint64(tr, records)
	tr = binary.BigEndian.AppendUint32(tr, all)
	cw.write(binary.BigEndian.AppendUint32(tr, crc32.Checksum(tr, castagnoli)))
	if cw.err == nil {
		cw.err = cw.w.Flush()
	}
	return cw.n, applied, cw.err
}

func uvarintLen(x int) int {
	n := 1
	for ; x >= 0x80; x >>= 7 {
		n++
	}
	return n
}

type countingWriter struct {
	w   *bufio.Writer
	n   int64
	err error
}

func (cw *countingWriter) write(b []byte) {
	if cw.err != nil {
		return
	}
	var k int
	k, cw.err = cw.w.Write(b)
	cw.n += int64(k)
}

// Ingest replaces the partition's whole state with the stream read from r
// and returns the applied index it carried. It verifies the stream as it
// writes it into SSTables beside the engine and swaps them in atomically
// only once all of it checked out; on any error the partition is left as it
// was (errors.Is ErrCorruptSnapshot or ErrSnapshotFormat for a bad
// stream).
func (p *Partition) Ingest(r io.Reader) (applied uint64, err error) {
	br := bufio.NewReaderSize(r, 64<<10)
	hdr := make([]byte, headerLen)
	if _, err := io.ReadFull(br, hdr); err != nil {
		return 0, fmt.Errorf("%w: header: %v", ErrCorruptSnapshot, err)
	}
	if string(hdr[:4]) != streamMagic || binary.BigEndian.Uint32(hdr[13:]) != crc32.Checksum(hdr[:13], castagnoli) {
		return 0, fmt.Errorf("%w: bad header", ErrCorruptSnapshot)
	}
	if hdr[4] != streamFormat {
		return 0, fmt.Errorf("%w: format %d, this version reads %d", ErrSnapshotFormat, hdr[4], streamFormat)
	}
	applied = binary.BigEndian.Uint64(hdr[5:13])

	b := p.newBuilder()
	defer b.abort()
	if err := b.set(metaSpace, appliedKey, binary.BigEndian.AppendUint64(nil, applied)); err != nil {
		return 0, err
	}
	var (
		records uint64
		all     uint32
		word    [4]byte
		chunk   []byte // the chunk being read, reused
	)
	for {
		if _, err := io.ReadFull(br, word[:]); err != nil {
			return 0, fmt.Errorf("%w: chunk length: %v", ErrCorruptSnapshot, err)
		}
		size := binary.BigEndian.Uint32(word[:])
		if size == 0 {
			break
		}
		if size > maxChunk {
			return 0, fmt.Errorf("%w: chunk of %d bytes, at most %d", ErrCorruptSnapshot, size, maxChunk)
		}
		chunk = slices.Grow(chunk[:0], int(size)+4)[:size+4]
		if _, err := io.ReadFull(br, chunk); err != nil {
			return 0, fmt.Errorf("%w: chunk: %v", ErrCorruptSnapshot, err)
		}
		body := chunk[:size]
		if binary.BigEndian.Uint32(chunk[size:]) != crc32.Checksum(body, castagnoli) {
			return 0, fmt.Errorf("%w: chunk checksum", ErrCorruptSnapshot)
		}
		all = crc32.Update(all, castagnoli, body)
		for len(body) > 0 {
			space := body[0]
			kl, k1 := binary.Uvarint(body[1:])
			if k1 <= 0 || kl > uint64(len(body)) {
				return 0, fmt.Errorf("%w: record key length", ErrCorruptSnapshot)
			}
			rest := body[1+k1:]
			if uint64(len(rest)) < kl {
				return 0, fmt.Errorf("%w: record key", ErrCorruptSnapshot)
			}
			key := rest[:kl]
			rest = rest[kl:]
			vl, v1 := binary.Uvarint(rest)
			if v1 <= 0 || vl > uint64(len(rest)-v1) {
				return 0, fmt.Errorf("%w: record value", ErrCorruptSnapshot)
			}
			val := rest[v1 : v1+int(vl)]
			body = rest[v1+int(vl):]
			if space == metaSpace {
				return 0, fmt.Errorf("%w: records out of order", ErrCorruptSnapshot)
			}
			if err := b.set(space, key, val); errors.Is(err, errOutOfOrder) {
				return 0, fmt.Errorf("%w: records out of order", ErrCorruptSnapshot)
			} else if err != nil {
				return 0, err
			}
			records++
		}
	}
	tr := make([]byte, 16)
	if _, err := io.ReadFull(br, tr); err != nil {
		return 0, fmt.Errorf("%w: trailer: %v", ErrCorruptSnapshot, err)
	}
	trailer := append(word[:], tr[:12]...)
	switch {
	case binary.BigEndian.Uint32(tr[12:]) != crc32.Checksum(trailer, castagnoli):
		return 0, fmt.Errorf("%w: trailer checksum", ErrCorruptSnapshot)
	case binary.BigEndian.Uint64(tr[:8]) != records:
		return 0, fmt.Errorf("%w: %d records, the trailer says %d", ErrCorruptSnapshot, records, binary.BigEndian.Uint64(tr[:8]))
	case binary.BigEndian.Uint32(tr[8:12]) != all:
		return 0, fmt.Errorf("%w: checksum over all records", ErrCorruptSnapshot)
	}
	// A snapshot received is kept until the engine is durable past it
	// (shard's recover restores it after a crash), so no flush here.
	if err := b.ingest(false); err != nil {
		return 0, err
	}
	return applied, nil
}

// Build replaces the partition's whole state with the records fill hands
// to set, in strictly ascending order of (space, key), and applied as its
// applied index: written into SSTables beside the engine and swapped in
// atomically and durably (an ingestion syncs), so that after a crash the
// partition holds all of it or its state before. It is how a split writes
// its child: cheaper than a batch of every key through the memtable, and
// bounded in memory by the SSTable writer's buffers, not the data. On any
// error, fill's included, the partition is left as it was.
func (p *Partition) Build(applied uint64, fill func(set func(space byte, key, value []byte) error) error) error {
	b := p.newBuilder()
	defer b.abort()
	if err := b.set(metaSpace, appliedKey, binary.BigEndian.AppendUint64(nil, applied)); err != nil {
		return err
	}
	if err := fill(func(space byte, key, value []byte) error {
		if space == metaSpace {
			return fmt.Errorf("storage: partition %d: build: space %d is the package's own", p.id, metaSpace)
		}
		return b.set(space, key, value)
	}); err != nil {
		return err
	}
	return b.ingest(true)
}

var errOutOfOrder = errors.New("storage: records out of order")

// builder writes a partition's records into SSTables in the engine's
// staging directory, a new one past sstTargetSize, for one ingestion that
// replaces the partition's span. It holds ingestMu from newBuilder until
// ingest or abort: ingestions share the staging directory.
type builder struct {
	p       *Partition
	paths   []string
	w       *sstable.Writer
	prev    []byte
	key     []byte
	written uint64
}

func (p *Partition) newBuilder() *builder {
	p.e.ingestMu.Lock()
	return &builder{p: p}
}

func (b *builder) set(space byte, key, value []byte) error {
	b.key = engineKey(b.key[:0], b.p.id, space, key)
	if b.prev != nil && bytes.Compare(b.key, b.prev) <= 0 {
		return errOutOfOrder
	}
	if b.w == nil || b.written >= sstTargetSize {
		if err := b.newSST(); err != nil {
			return err
		}
	}
	if err := b.w.Set(b.key, value); err != nil {
		return err
	}
	b.written += uint64(len(b.key) + len(value))
	b.prev = append(b.prev[:0], b.key...)
	return nil
}

func (b *builder) newSST() error {
	if err := b.closeSST(); err != nil {
		return err
	}
	e := b.p.e
	fs := e.opts.FS
	if err := fs.MkdirAll(e.staging, 0o755); err != nil {
		return err
	}
	path := fs.PathJoin(e.staging, fmt.Sprintf("p%d-%d.sst", b.p.id, len(b.paths)))
	f, err := fs.Create(path, "")
	if err != nil {
		return err
	}
	b.paths = append(b.paths, path)
	b.w = sstable.NewWriter(objstorageprovider.NewFileWritable(f), e.popts.MakeWriterOptions(0, e.db.TableFormat()))
	b.written = 0
	return nil
}

func (b *builder) closeSST() error {
	if b.w == nil {
		return nil
	}
	err := b.w.Close()
	b.w = nil
	return err
}

// ingest swaps the written SSTables in, in place of the partition's span.
// With durable, it also makes them survive a crash: an ingestion that
// overlaps the memtables enters the memtable queue (a flushable ingest)
// and, with no engine WAL, is only durable once flushed.
func (b *builder) ingest(durable bool) error {
	if err := b.closeSST(); err != nil {
		return err
	}
	start, end := span(b.p.id)
	stats, err := b.p.e.db.IngestAndExcise(context.Background(), b.paths, nil, nil, pebble.KeyRange{Start: start, End: end})
	if err != nil {
		return fmt.Errorf("storage: partition %d: ingest: %w", b.p.id, err)
	}
	b.paths = nil
	if durable && stats.MemtableOverlappingFiles > 0 {
		return b.p.e.db.Flush()
	}
	return nil
}

// abort deletes what ingest did not take (all of it after an error) and
// lets the next ingestion go.
func (b *builder) abort() {
	b.closeSST()
	for _, path := range b.paths {
		b.p.e.opts.FS.Remove(path)
	}
	b.paths = nil
	b.p.e.ingestMu.Unlock()
}
