package fsm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"testing"
	"testing/iotest"

	"github.com/ringkv/ringkv/hlc"
)

// smallStore holds a few live keys and a tombstone: small enough to corrupt
// at every byte.
func smallStore(t testing.TB) *Store {
	t.Helper()
	s := newStore(t, Options{})
	apply(t, s, put("alpha", "1", stamp(1, 10)))
	apply(t, s, put("beta", "", stamp(2, 20)))
	apply(t, s, del("gamma", stamp(3, 30)))
	apply(t, s, Put{Key: []byte{0, 0xff}, Value: []byte{1, 2, 3}, Stamp: stamp(4, 40)})
	return s
}

// randomStore fills a store with binary keys and values, some deleted, big
// enough to span several chunks.
func randomStore(t testing.TB, r *rand.Rand, n int) *Store {
	t.Helper()
	s := newStore(t, Options{})
	randBytes := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}
	ws := make([]Write, 0, 256)
	for i := range n {
		st := Stamp{Version: r.Uint64(), Timestamp: hlc.Timestamp{WallTime: r.Int64(), Logical: r.Uint32()}}
		key := randBytes(1 + r.IntN(40))
		if i%7 == 0 {
			ws = append(ws, Delete{Key: key, Stamp: st})
		} else {
			ws = append(ws, Put{Key: key, Value: randBytes(r.IntN(200)), Stamp: st})
		}
		if len(ws) == cap(ws) || i == n-1 {
			apply(t, s, Batch{Writes: ws})
			ws = ws[:0]
		}
	}
	return s
}

// items lists a snapshot's keys with their full state, tombstones included.
func items(s *Snapshot) []Item {
	var out []Item
	s.tree.Ascend(func(it item) bool {
		out = append(out, it.e.export())
		return true
	})
	return out
}

func TestSnapshotRoundTrip(t *testing.T) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 3))
	for name, src := range map[string]*Store{
		"empty":  newStore(t, Options{}),
		"small":  smallStore(t),
		"random": randomStore(t, r, 5000),
	} {
		t.Run(name, func(t *testing.T) {
			snap := src.Snapshot()
			image := snapshotBytes(t, snap)
			dst := smallStore(t)
			apply(t, dst, put("extra", "x", stamp(1, 1)))
			if err := dst.Restore(bytes.NewReader(image)); err != nil {
				t.Fatalf("Restore: %v", err)
			}
			got := dst.Snapshot()
			if got.AppliedIndex() != snap.AppliedIndex() || got.Len() != snap.Len() || got.Tombstones() != snap.Tombstones() {
				t.Fatalf("restored applied/len/tombstones = %d/%d/%d, want %d/%d/%d", got.AppliedIndex(), got.Len(),
					got.Tombstones(), snap.AppliedIndex(), snap.Len(), snap.Tombstones())
			}
			want, have := items(snap), items(got)
			if len(want) != len(have) {
				t.Fatalf("restored %d keys, want %d", len(have), len(want))
			}
			for i := range want {
				w, h := want[i], have[i]
				if !bytes.Equal(w.Key, h.Key) || !bytes.Equal(w.Value, h.Value) || w.Stamp != h.Stamp || w.Tombstone != h.Tombstone {
					t.Fatalf("key %d: restored %+v, want %+v", i, h, w)
				}
			}
			if !bytes.Equal(image, snapshotBytes(t, got)) {
				t.Fatal("restored store serializes differently")
			}
			// dst's own keys, such as "extra", must be gone from the point
			// index too.
			checkIndex(t, dst)
		})
	}
}

// TestRestoreRebuildsTombstoneIndex checks a restored store can purge the
// tombstones it received.
func TestRestoreRebuildsTombstoneIndex(t *testing.T) {
	dst := newStore(t, Options{})
	if err := dst.Restore(bytes.NewReader(snapshotBytes(t, smallStore(t).Snapshot()))); err != nil {
		t.Fatal(err)
	}
	res := apply(t, dst, PurgeTombstones{Cutoff: hlc.Timestamp{WallTime: 100}})
	if _, ok := dst.Lookup([]byte("gamma")); res.Purged != 1 || ok || dst.Tombstones() != 0 {
		t.Fatalf("purge after restore removed %d, gamma still present %v", res.Purged, ok)
	}
	checkIndex(t, dst)
}

// restoreFails restores data into a populated store and requires the given
// error and an untouched store.
func restoreFails(t *testing.T, data []byte, opts Options, want error) error {
	t.Helper()
	s := newStore(t, opts)
	apply(t, s, put("k", "me", stamp(1, 1)))
	before := snapshotBytes(t, s.Snapshot())
	err := s.Restore(bytes.NewReader(data))
	if !errors.Is(err, want) {
		t.Fatalf("Restore error = %v, want %v", err, want)
	}
	if !bytes.Equal(before, snapshotBytes(t, s.Snapshot())) {
		t.Fatal("failed Restore changed the store")
	}
	if it, ok := s.Get([]byte("k")); !ok || string(it.Value) != "me" {
		t.Fatalf("after a failed Restore Get(k) = %q, %v", it.Value, ok)
	}
	checkIndex(t, s)
	return err
}

func TestRestoreRejectsEveryTruncation(t *testing.T) {
	image := snapshotBytes(t, smallStore(t).Snapshot())
	for n := range len(image) {
		t.Run("", func(t *testing.T) {
			err := restoreFails(t, image[:n], Options{}, ErrCorruptSnapshot)
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("truncated to %d of %d: %v does not say the stream ended early", n, len(image), err)
			}
		})
	}
}

func TestRestoreRejectsEveryFlippedBit(t *testing.T) {
	image := snapshotBytes(t, smallStore(t).Snapshot())
	for i := range len(image) {
		for _, mask := range []byte{0x01, 0x80} {
			bad := bytes.Clone(image)
			bad[i] ^= mask
			t.Run("", func(t *testing.T) { restoreFails(t, bad, Options{}, ErrCorruptSnapshot) })
		}
	}
}

// sealed appends b and its CRC-32C, as the writer does.
func sealed(dst, b []byte) []byte {
	return binary.BigEndian.AppendUint32(append(dst, b...), crc32.Checksum(b, crcTable))
}

// stream assembles a snapshot by hand, with valid checksums, so tests can
// build streams the writer never would.
type stream struct {
	magic    string
	format   uint16
	claimed  uint64 // records the header claims
	chunks   [][][]byte
	trailerN uint64 // records the trailer claims; the true count unless set
	extra    []byte
}

func (s stream) bytes() []byte {
	var hdr []byte
	hdr = append(hdr, s.magic...)
	hdr = binary.BigEndian.AppendUint16(hdr, s.format)
	hdr = binary.BigEndian.AppendUint16(hdr, 0)
	hdr = binary.BigEndian.AppendUint64(hdr, 9)
	hdr = binary.BigEndian.AppendUint64(hdr, s.claimed)
	out := sealed(nil, hdr)
	var records, payloadBytes uint64
	for _, recs := range s.chunks {
		var payload []byte
		for _, r := range recs {
			payload = append(payload, r...)
		}
		ch := binary.BigEndian.AppendUint32(nil, uint32(len(payload)))
		ch = binary.BigEndian.AppendUint32(ch, uint32(len(recs)))
		out = sealed(out, append(ch, payload...))
		records += uint64(len(recs))
		payloadBytes += uint64(len(payload))
	}
	out = append(out, make([]byte, chunkHeaderLen)...)
	if s.trailerN != 0 {
		records = s.trailerN
	}
	tr := binary.BigEndian.AppendUint64(nil, records)
	tr = binary.BigEndian.AppendUint64(tr, payloadBytes)
	return append(sealed(out, tr), s.extra...)
}

func rec(key string, value string) []byte {
	return appendRecord(nil, []byte(key), []byte(value), stamp(1, 1), false)
}

func TestRestoreRejectsInconsistentStreams(t *testing.T) {
	good := stream{magic: snapshotMagic, format: snapshotFormat, claimed: 3, chunks: [][][]byte{{rec("a", "1"), rec("b", "2")}, {rec("c", "3")}}}
	if s := newStore(t, Options{}); s.Restore(bytes.NewReader(good.bytes())) != nil || s.Len() != 3 || s.AppliedIndex() != 9 {
		t.Fatal("the hand-built reference stream does not restore; the cases below prove nothing")
	}
	with := func(f func(*stream)) []byte {
		s := good
		s.chunks = append([][][]byte(nil), good.chunks...)
		f(&s)
		return s.bytes()
	}
	tests := []struct {
		name string
		data []byte
		opts Options
		want error
	}{
		{"wrong magic", with(func(s *stream) { s.magic = "XKVS" }), Options{}, ErrCorruptSnapshot},
		{"newer format", with(func(s *stream) { s.format = 2 }), Options{}, ErrSnapshotFormat},
		{"keys out of order", with(func(s *stream) { s.chunks = [][][]byte{{rec("b", ""), rec("a", "")}, {rec("c", "")}} }), Options{}, ErrCorruptSnapshot},
		{"chunks swapped", with(func(s *stream) { s.chunks[0], s.chunks[1] = s.chunks[1], s.chunks[0] }), Options{}, ErrCorruptSnapshot},
		{"duplicate key", with(func(s *stream) { s.chunks = [][][]byte{{rec("a", ""), rec("a", "")}, {rec("c", "")}} }), Options{}, ErrCorruptSnapshot},
		{"chunk lost", with(func(s *stream) { s.chunks = s.chunks[:1] }), Options{}, ErrCorruptSnapshot},
		{"header count wrong", with(func(s *stream) { s.claimed = 4 }), Options{}, ErrCorruptSnapshot},
		{"trailer count wrong", with(func(s *stream) { s.trailerN = 2 }), Options{}, ErrCorruptSnapshot},
		{"data after trailer", with(func(s *stream) { s.extra = []byte{0} }), Options{}, ErrCorruptSnapshot},
		{"unknown record kind", with(func(s *stream) {
			bad := rec("c", "3")
			bad[0] = 7
			s.chunks[1] = [][]byte{bad}
		}), Options{}, ErrCorruptSnapshot},
		{"record overruns chunk", with(func(s *stream) { s.chunks[1] = [][]byte{rec("c", "3")[:5]} }), Options{}, ErrCorruptSnapshot},
		{"chunk has bytes after its records", with(func(s *stream) { s.chunks[1] = [][]byte{append(rec("c", "3"), 0)} }), Options{}, ErrCorruptSnapshot},
		{"empty key", with(func(s *stream) { s.chunks[0] = [][]byte{rec("", ""), rec("b", "")} }), Options{}, ErrEmptyKey},
		{"key beyond this store's limit", with(func(s *stream) { s.chunks[1] = [][]byte{rec("cde", "")} }), Options{MaxKeySize: 2}, ErrKeyTooLarge},
		{"value beyond this store's limit", with(func(s *stream) { s.chunks[1] = [][]byte{rec("c", "too long")} }), Options{MaxValueSize: 4}, ErrValueTooLarge},
		{"chunk larger than the limits allow", with(func(s *stream) {
			s.chunks = [][][]byte{{rec("a", string(make([]byte, chunkTarget+DefaultMaxKeySize+200))), rec("b", ""), rec("c", "")}}
		}), Options{MaxValueSize: 100}, ErrCorruptSnapshot},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			restoreFails(t, tt.data, tt.opts, tt.want)
		})
	}
}

func TestRestoreLimitErrorNamesRecord(t *testing.T) {
	data := stream{magic: snapshotMagic, format: snapshotFormat, claimed: 2, chunks: [][][]byte{{rec("a", ""), rec("b", "12345")}}}.bytes()
	err := restoreFails(t, data, Options{MaxValueSize: 4}, ErrValueTooLarge)
	var le *LimitError
	if !errors.As(err, &le) || le.Field != "records[1].value" || le.Size != 5 || le.Limit != 4 {
		t.Fatalf("error = %v, want a LimitError for records[1].value, 5 bytes, limit 4", err)
	}
}

func TestRestoreReportsReadErrors(t *testing.T) {
	image := snapshotBytes(t, smallStore(t).Snapshot())
	boom := errors.New("disk on fire")
	s := newStore(t, Options{})
	err := s.Restore(io.MultiReader(bytes.NewReader(image[:40]), iotest.ErrReader(boom)))
	if !errors.Is(err, boom) || errors.Is(err, ErrCorruptSnapshot) {
		t.Fatalf("Restore = %v, want the reader's error, not corruption", err)
	}
	if err := s.Restore(iotest.OneByteReader(bytes.NewReader(image))); err != nil {
		t.Fatalf("Restore through one-byte reads: %v", err)
	}
}

type failingWriter struct{ after int }

func (w *failingWriter) Write(p []byte) (int, error) {
	if len(p) > w.after {
		n := w.after
		w.after = 0
		return n, io.ErrShortWrite
	}
	w.after -= len(p)
	return len(p), nil
}

func TestWriteToReportsWriteErrors(t *testing.T) {
	snap := smallStore(t).Snapshot()
	for _, after := range []int{0, 10, headerLen + crcLen + 3} {
		n, err := snap.WriteTo(&failingWriter{after: after})
		if !errors.Is(err, io.ErrShortWrite) || n != int64(after) {
			t.Errorf("WriteTo failing after %d bytes = %d, %v; want %d, ErrShortWrite", after, n, err, after)
		}
	}
}

func FuzzRestore(f *testing.F) {
	image := snapshotBytes(f, smallStore(f).Snapshot())
	f.Add(image)
	f.Add(image[:len(image)/2])
	f.Add(snapshotBytes(f, newStore(f, Options{}).Snapshot()))
	f.Add(stream{magic: snapshotMagic, format: snapshotFormat, claimed: 2, chunks: [][][]byte{{rec("a", "1")}, {rec("b", "2")}}}.bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		s := newStore(t, Options{MaxKeySize: 64, MaxValueSize: 256})
		apply(t, s, put("keep", "me", stamp(1, 1)))
		before := snapshotBytes(t, s.Snapshot())
		if err := s.Restore(bytes.NewReader(data)); err != nil {
			if !bytes.Equal(before, snapshotBytes(t, s.Snapshot())) {
				t.Fatalf("failed Restore (%v) changed the store", err)
			}
			return
		}
		// Chunking may differ from the writer's, but what was accepted must
		// survive another round trip unchanged.
		again := snapshotBytes(t, s.Snapshot())
		s2 := newStore(t, Options{MaxKeySize: 64, MaxValueSize: 256})
		if err := s2.Restore(bytes.NewReader(again)); err != nil {
			t.Fatalf("re-serialized accepted snapshot does not restore: %v", err)
		}
		if !bytes.Equal(again, snapshotBytes(t, s2.Snapshot())) {
			t.Fatal("accepted snapshot does not round-trip")
		}
	})
}
