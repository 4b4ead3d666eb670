package fsm

import (
	"bytes"
	"errors"
	"math"
	"reflect"
	"testing"

	"github.com/ringkv/ringkv/hlc"
	"github.com/ringkv/ringkv/ring"
)

var maxStamp = Stamp{Version: math.MaxUint64, Timestamp: hlc.Timestamp{WallTime: math.MaxInt64, Logical: math.MaxUint32}}

// sampleCommands covers every operation, empty and binary fields, and
// extreme integers.
func sampleCommands() map[string]Command {
	return map[string]Command{
		"put":               Put{RequestID: 42, Key: []byte("user:1"), Value: []byte("hello"), Stamp: stamp(3, 1_700_000_000_000_000_000)},
		"put empty value":   Put{RequestID: 1, Key: []byte{0}, Value: []byte{}, Stamp: stamp(0, 0)},
		"put binary, max":   Put{RequestID: math.MaxUint64, Key: []byte{0xff, 0, 0x80}, Value: bytes.Repeat([]byte{0xfe}, 300), Stamp: maxStamp},
		"delete":            Delete{RequestID: 7, Key: []byte("gone"), Stamp: stamp(9, 5)},
		"purge":             PurgeTombstones{Cutoff: hlc.Timestamp{WallTime: 123, Logical: 4}},
		"purge zero":        PurgeTombstones{},
		"batch":             Batch{Writes: []Write{Put{RequestID: 1, Key: []byte("a"), Value: []byte("1"), Stamp: stamp(1, 1)}, Delete{RequestID: 2, Key: []byte("b"), Stamp: maxStamp}}},
		"batch with empty":  Batch{Writes: []Write{}},
		"split":             Split{Child: 17, Right: ring.HashRange{First: 1 << 63, Last: math.MaxUint64}, Genesis: []byte("voters")},
		"split, no genesis": Split{Child: 1, Right: ring.HashRange{First: 5, Last: 5}, Genesis: []byte{}},
	}
}

func TestCommandRoundTrip(t *testing.T) {
	for name, cmd := range sampleCommands() {
		t.Run(name, func(t *testing.T) {
			enc, err := cmd.MarshalBinary()
			if err != nil {
				t.Fatalf("MarshalBinary: %v", err)
			}
			got, err := DecodeCommand(enc)
			if err != nil {
				t.Fatalf("DecodeCommand: %v", err)
			}
			if !reflect.DeepEqual(got, cmd) {
				t.Fatalf("round trip = %#v, want %#v", got, cmd)
			}
		})
	}
}

func TestCommandEncodingIsCompact(t *testing.T) {
	enc, err := Put{RequestID: 1, Key: []byte("k"), Value: []byte("v"), Stamp: stamp(1, 1)}.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	// format, kind, version, timestamp, key, value, request id
	if want := 1 + 1 + 1 + hlc.EncodedLen + 2 + 2 + 8; len(enc) != want {
		t.Fatalf("small Put encodes to %d bytes, want %d", len(enc), want)
	}
}

func TestDecodeCommandRejectsEveryTruncation(t *testing.T) {
	for name, cmd := range sampleCommands() {
		enc, err := cmd.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		for n := range len(enc) {
			if _, err := DecodeCommand(enc[:n]); !errors.Is(err, ErrMalformedCommand) {
				t.Errorf("%s truncated to %d of %d bytes: error %v, want ErrMalformedCommand", name, n, len(enc), err)
			}
		}
	}
}

func TestDecodeCommandErrors(t *testing.T) {
	valid, err := Put{Key: []byte("k"), Stamp: stamp(1, 1)}.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	tests := map[string][]byte{
		"trailing byte":      append(bytes.Clone(valid), 0),
		"unknown format":     append([]byte{2}, valid[1:]...),
		"unknown op":         {commandFormat, 9},
		"batch of purges":    {commandFormat, opBatch, 1, opPurge},
		"nested batch":       {commandFormat, opBatch, 1, opBatch, 0},
		"batch count lies":   {commandFormat, opBatch, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"overlong uvarint":   {commandFormat, opPut, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
		"key length too big": append(append([]byte{commandFormat, opDelete, 1}, make([]byte, hlc.EncodedLen)...), 0xff, 0xff, 0x03, 'k'),
	}
	for name, data := range tests {
		if c, err := DecodeCommand(data); !errors.Is(err, ErrMalformedCommand) {
			t.Errorf("%s: DecodeCommand = %#v, %v; want ErrMalformedCommand", name, c, err)
		}
	}
}

// TestAppendWrite: AppendWrite encodes as MarshalBinary does, after what b
// held, and its Item is the write's, with Key and Value taken from the
// encoding, not from the write's slices; value lengths straddle the sizes
// where their uvarint grows.
func TestAppendWrite(t *testing.T) {
	var writes []Write
	for _, n := range []int{0, 1, 127, 128, 16383, 16384} {
		writes = append(writes, Put{RequestID: uint64(n), Key: bytes.Repeat([]byte("k"), n%300+1), Value: bytes.Repeat([]byte{0xfe}, n), Stamp: stamp(uint64(n), 7)})
	}
	writes = append(writes,
		Put{RequestID: math.MaxUint64, Key: bytes.Repeat([]byte{0}, 200), Value: []byte("v"), Stamp: maxStamp},
		Delete{RequestID: 3, Key: []byte("gone"), Stamp: stamp(9, 5)},
		Delete{Key: bytes.Repeat([]byte("d"), 128), Stamp: maxStamp},
		Delete{},
	)
	for _, w := range writes {
		want, err := w.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		x := w.asWrite()
		prefix := []byte{0xaa}
		got, it := AppendWrite(prefix, w)
		if !bytes.Equal(got[:1], prefix) || !bytes.Equal(got[1:], want) {
			t.Fatalf("AppendWrite(%d-byte key, %d-byte value) = %x, want %x after the prefix", len(x.key), len(x.value), got, want)
		}
		wantItem := Item{Key: x.key, Value: x.value, Tombstone: x.tombstone, Stamp: x.stamp}
		if !bytes.Equal(it.Key, wantItem.Key) || !bytes.Equal(it.Value, wantItem.Value) || (it.Value == nil) != x.tombstone ||
			it.Tombstone != wantItem.Tombstone || it.Stamp != wantItem.Stamp {
			t.Fatalf("item %+v, want %+v", it, wantItem)
		}
		for name, f := range map[string][]byte{"key": it.Key, "value": it.Value} {
			if len(f) > 0 && !aliases(got, f) {
				t.Fatalf("item's %s does not alias the encoding", name)
			}
			if cap(f) != len(f) {
				t.Fatalf("item's %s has room to grow into the encoding (cap %d, len %d)", name, cap(f), len(f))
			}
		}
		if id, ok := WriteRequestID(got[1:]); !ok || id != x.requestID {
			t.Fatalf("WriteRequestID = %d, %v; want %d", id, ok, x.requestID)
		}
	}
}

// aliases reports whether sub lies inside b's bytes.
func aliases(b, sub []byte) bool {
	for i := range b {
		if &b[i] == &sub[0] {
			return i+len(sub) <= len(b)
		}
	}
	return false
}

// TestWriteRequestIDRefusesOtherCommands: only a Put or Delete has a request
// id; anything else, or too short to be one, says so.
func TestWriteRequestIDRefusesOtherCommands(t *testing.T) {
	for name, cmd := range sampleCommands() {
		enc, err := cmd.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		id, ok := WriteRequestID(enc)
		switch c := cmd.(type) {
		case Put:
			if !ok || id != c.RequestID {
				t.Errorf("%s: WriteRequestID = %d, %v; want %d", name, id, ok, c.RequestID)
			}
		case Delete:
			if !ok || id != c.RequestID {
				t.Errorf("%s: WriteRequestID = %d, %v; want %d", name, id, ok, c.RequestID)
			}
		default:
			if ok {
				t.Errorf("%s: WriteRequestID = %d, true; want false", name, id)
			}
		}
		for n := range min(len(enc), 1+minWriteLen) {
			if _, ok := WriteRequestID(enc[:n]); ok {
				t.Errorf("%s cut to %d bytes: WriteRequestID found a request id", name, n)
			}
		}
	}
	if _, ok := WriteRequestID(append([]byte{2, opPut}, make([]byte, minWriteLen)...)); ok {
		t.Error("WriteRequestID accepted an unknown format version")
	}
}

func TestMarshalBatchWithNilWrite(t *testing.T) {
	if _, err := (Batch{Writes: []Write{nil}}).MarshalBinary(); !errors.Is(err, ErrMalformedCommand) {
		t.Fatalf("MarshalBinary of a batch holding nil = %v, want ErrMalformedCommand", err)
	}
}

func TestStampAndOutcomeStrings(t *testing.T) {
	if got, want := stamp(3, 1_000_000_002).String(), "v3@1.000000002,0"; got != want {
		t.Errorf("Stamp.String = %q, want %q", got, want)
	}
	for o, want := range map[Outcome]string{Won: "won", AlreadyApplied: "already applied", Lost: "lost", 0: "Outcome(0)"} {
		if o.String() != want {
			t.Errorf("Outcome(%d).String = %q, want %q", o, o.String(), want)
		}
	}
}

func FuzzDecodeCommand(f *testing.F) {
	for _, cmd := range sampleCommands() {
		enc, err := cmd.MarshalBinary()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(enc)
	}
	f.Add([]byte{})
	f.Add([]byte{commandFormat, opBatch, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, data []byte) {
		cmd, err := DecodeCommand(data)
		if err != nil {
			if !errors.Is(err, ErrMalformedCommand) {
				t.Fatalf("error %v does not wrap ErrMalformedCommand", err)
			}
			return
		}
		// The encoding is not unique (uvarints may be padded), but what a
		// decoded command re-encodes to must decode to the same command.
		enc, err := cmd.MarshalBinary()
		if err != nil {
			t.Fatalf("re-encoding %#v: %v", cmd, err)
		}
		again, err := DecodeCommand(enc)
		if err != nil || !reflect.DeepEqual(again, cmd) {
			t.Fatalf("re-encoded command decodes to %#v, %v; want %#v", again, err, cmd)
		}
		// Whatever decodes as a Put or Delete has its request id where
		// WriteRequestID looks, and AppendWrite encodes it as MarshalBinary.
		if w, ok := cmd.(Write); ok {
			if id, ok := WriteRequestID(data); !ok || id != w.asWrite().requestID {
				t.Fatalf("WriteRequestID = %d, %v; want %d", id, ok, w.asWrite().requestID)
			}
			if got, _ := AppendWrite(nil, w); !bytes.Equal(got, enc) {
				t.Fatalf("AppendWrite = %x, MarshalBinary = %x", got, enc)
			}
		}
		// Whatever decodes applies, or is refused for its sizes or, a
		// split, for the range it names.
		s := newStore(t, Options{})
		var le *LimitError
		if _, err := s.Apply(1, cmd); err != nil && !errors.As(err, &le) && !errors.Is(err, ErrSplitMismatch) && !errors.Is(err, ErrMalformedCommand) {
			t.Fatalf("Apply(%#v) = %v, want success, a *LimitError or a refused split", cmd, err)
		}
	})
}

// TestJoinWrites: joining encoded writes gives Batch's own encoding, and
// anything but an encoded Put or Delete is refused.
func TestJoinWrites(t *testing.T) {
	for _, n := range []int{0, 1, 3, 200} {
		var writes []Write
		var encoded [][]byte
		for i := range n {
			var w Write = Put{RequestID: uint64(i), Key: []byte{byte(i)}, Value: bytes.Repeat([]byte("v"), i), Stamp: stamp(uint64(i), int64(i))}
			if i%3 == 1 {
				w = Delete{RequestID: uint64(i), Key: []byte{byte(i)}, Stamp: maxStamp}
			}
			b, err := w.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			writes, encoded = append(writes, w), append(encoded, b)
		}
		want, err := Batch{Writes: writes}.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		got, err := JoinWrites([]byte{0xaa}, encoded...)
		if err != nil || got[0] != 0xaa || !bytes.Equal(got[1:], want) {
			t.Fatalf("%d writes: JoinWrites = %x, %v; want %x after the prefix", n, got, err, want)
		}
	}
	purge, _ := PurgeTombstones{}.MarshalBinary()
	batch, _ := Batch{}.MarshalBinary()
	for name, bad := range map[string][]byte{"empty": {}, "purge": purge, "batch": batch, "format": {commandFormat + 1, opPut}} {
		if _, err := JoinWrites(nil, bad); !errors.Is(err, ErrMalformedCommand) {
			t.Errorf("%s: JoinWrites = %v, want ErrMalformedCommand", name, err)
		}
	}
}
