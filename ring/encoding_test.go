package ring

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"strings"
	"testing"
)

// encodedSamples returns assignments of several shapes, epochs above one
// included, for round-trip and corruption tests.
func encodedSamples(t testing.TB) []*Assignment {
	t.Helper()
	var out []*Assignment
	// Partition counts that are not powers of two are those of rings that
	// have split; the format is the same.
	for _, tt := range []struct{ partitions, nodes int }{{1, 3}, {16, 3}, {16, 7}, {1024, 20}, {5, 4}, {24, 7}} {
		r := mustGrown(t, 1, tt.partitions)
		nodes := nodeIDs(tt.nodes + 1)
		a := mustPlace(t, r, nil, nodes[:tt.nodes])
		out = append(out, a, mustPlace(t, r, a, nodes[1:]))
	}
	return out
}

func mustMarshal(t testing.TB, a *Assignment) []byte {
	t.Helper()
	b, err := a.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestAssignmentRoundTrip(t *testing.T) {
	for _, a := range encodedSamples(t) {
		t.Run(fmt.Sprintf("P=%d/N=%d/epoch=%d", a.Partitions(), len(a.nodes), a.Epoch()), func(t *testing.T) {
			b := mustMarshal(t, a)
			var got Assignment
			if err := got.UnmarshalBinary(b); err != nil {
				t.Fatal(err)
			}
			if !got.Equal(a) {
				t.Fatal("decoded assignment differs from the encoded one")
			}
			if again := mustMarshal(t, &got); !bytes.Equal(again, b) {
				t.Fatal("re-encoding the decoded assignment gave different bytes")
			}
		})
	}
}

// TestAssignmentEncodingIsStable pins the version-1 bytes of a small
// assignment: the encoding lives in the metadata Raft log, so old entries
// must keep decoding.
func TestAssignmentEncodingIsStable(t *testing.T) {
	a := &Assignment{
		epoch: 7,
		nodes: []NodeID{"a", "bb", "c"},
		parts: []placement{
			{replicas: [3]NodeID{"a", "bb", "c"}, primary: "bb"},
			{replicas: [3]NodeID{"a", "bb", "c"}, primary: "c"},
		},
	}
	want := []byte("RKVA\x01" +
		"\x00\x00\x00\x00\x00\x00\x00\x07" + // epoch
		"\x00\x02" + "\x00\x03" + // partitions, nodes
		"\x01a" + "\x02bb" + "\x01c" +
		"\x00\x00\x00\x01\x00\x02\x01" +
		"\x00\x00\x00\x01\x00\x02\x02")
	want = binary.BigEndian.AppendUint32(want, crc32.Checksum(want, crc32.MakeTable(crc32.Castagnoli)))
	if got := mustMarshal(t, a); !bytes.Equal(got, want) {
		t.Fatalf("MarshalBinary =\n%q\nwant\n%q", got, want)
	}
}

// resealed returns b with its body edited and its checksum recomputed, to
// reach the checks behind the checksum.
func resealed(b []byte, edit func(body []byte) []byte) []byte {
	body := edit(bytes.Clone(b[:len(b)-crcLen]))
	return binary.BigEndian.AppendUint32(body, crc32.Checksum(body, castagnoli))
}

func TestUnmarshalRejectsCorruption(t *testing.T) {
	good := mustMarshal(t, &Assignment{
		epoch: 3,
		nodes: []NodeID{"a", "b", "c", "d"},
		parts: []placement{
			{replicas: [3]NodeID{"a", "b", "c"}, primary: "a"},
			{replicas: [3]NodeID{"b", "c", "d"}, primary: "d"},
		},
	})
	nodesAt := headerLen       // "\x01a\x01b\x01c\x01d"
	partsAt := headerLen + 4*2 // two 7-byte records
	set := func(off int, v ...byte) func([]byte) []byte {
		return func(body []byte) []byte { copy(body[off:], v); return body }
	}
	tests := []struct {
		name string
		data []byte
		says string
	}{
		{"empty", nil, "0 bytes"},
		{"header only", good[:headerLen], "shorter than"},
		{"bit flip", func() []byte { b := bytes.Clone(good); b[partsAt+3] ^= 0x10; return b }(), "checksum"},
		{"checksum flip", func() []byte { b := bytes.Clone(good); b[len(b)-1] ^= 1; return b }(), "checksum"},
		{"truncated", good[:len(good)-1], "checksum"},
		{"magic", resealed(good, set(0, 'X')), "magic"},
		{"version", resealed(good, set(4, 2)), "version 2"},
		{"epoch zero", resealed(good, set(5, 0, 0, 0, 0, 0, 0, 0, 0)), "epoch 0"},
		{"no partitions", resealed(good, set(13, 0, 0)), "partitions = 0, want 1 to 4096"},
		{"too many partitions", resealed(good, set(13, 0x10, 0x01)), "partitions = 4097, want 1 to 4096"},
		{"partitions not a power of two, too few bytes", resealed(good, set(13, 0, 3)), "bytes of partitions"},
		{"too few nodes", resealed(good, set(15, 0, 2)), "2 nodes, want at least 3"},
		{"node ID overruns", resealed(good, set(nodesAt+6, 200)), "truncated in node 3"},
		{"empty node ID", resealed(good, set(nodesAt, 0)), "node 0"},
		{"nodes out of order", resealed(good, set(nodesAt+1, 'z')), `"b" does not follow "z"`},
		{"duplicate node", resealed(good, set(nodesAt+3, 'a')), `"a" does not follow "a"`},
		{"member index out of range", resealed(good, set(partsAt+4, 0, 4)), "member index 4"},
		{"replicas not ascending", resealed(good, set(partsAt, 0, 1, 0, 0)), "member index 0 after 1"},
		{"primary position", resealed(good, set(partsAt+6, 3)), "primary position 3"},
		{"trailing byte", resealed(good, func(b []byte) []byte { return append(b, 0) }), "bytes of partitions"},
		{"missing partition", resealed(good, func(b []byte) []byte { return b[:len(b)-partLen] }), "bytes of partitions"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := &Assignment{epoch: 99}
			err := a.UnmarshalBinary(tt.data)
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("UnmarshalBinary = %v, want ErrCorrupt", err)
			}
			if !strings.Contains(err.Error(), tt.says) {
				t.Fatalf("error %q does not say %q", err, tt.says)
			}
			if a.epoch != 99 || a.nodes != nil || a.parts != nil {
				t.Fatal("failed UnmarshalBinary modified its receiver")
			}
		})
	}
}

// TestUnmarshalDetectsEveryBitFlip flips each bit of an encoding in turn.
func TestUnmarshalDetectsEveryBitFlip(t *testing.T) {
	good := mustMarshal(t, encodedSamples(t)[3])
	for i := range 8 * len(good) {
		b := bytes.Clone(good)
		b[i/8] ^= 1 << (i % 8)
		var a Assignment
		if err := a.UnmarshalBinary(b); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("bit %d flipped: UnmarshalBinary = %v, want ErrCorrupt", i, err)
		}
	}
}

// FuzzUnmarshal checks that decoding never panics and that whatever
// decodes is canonical and a usable prev for Place.
func FuzzUnmarshal(f *testing.F) {
	for _, a := range encodedSamples(f)[:6] {
		f.Add(mustMarshal(f, a))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var a Assignment
		if a.UnmarshalBinary(data) != nil {
			return
		}
		if again := mustMarshal(t, &a); !bytes.Equal(again, data) {
			t.Fatalf("decoded %q but re-encodes as %q", data, again)
		}
		next := mustPlace(t, mustGrown(t, 1, a.Partitions()), &a, a.Nodes())
		checkBalanced(t, next, a.Nodes())
	})
}
