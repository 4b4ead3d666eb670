package fsm

import (
	"bytes"
	"errors"
	"math"
	"reflect"
	"testing"

	"github.com/ringkv/ringkv/hlc"
)

var maxStamp = Stamp{Version: math.MaxUint64, Timestamp: hlc.Timestamp{WallTime: math.MaxInt64, Logical: math.MaxUint32}}

// sampleCommands covers every operation, empty and binary fields, and
// extreme integers.
func sampleCommands() map[string]Command {
	return map[string]Command{
		"put":              Put{RequestID: 42, Key: []byte("user:1"), Value: []byte("hello"), Stamp: stamp(3, 1_700_000_000_000_000_000)},
		"put empty value":  Put{RequestID: 1, Key: []byte{0}, Value: []byte{}, Stamp: stamp(0, 0)},
		"put binary, max":  Put{RequestID: math.MaxUint64, Key: []byte{0xff, 0, 0x80}, Value: bytes.Repeat([]byte{0xfe}, 300), Stamp: maxStamp},
		"delete":           Delete{RequestID: 7, Key: []byte("gone"), Stamp: stamp(9, 5)},
		"purge":            PurgeTombstones{Cutoff: hlc.Timestamp{WallTime: 123, Logical: 4}},
		"purge zero":       PurgeTombstones{},
		"batch":            Batch{Writes: []Write{Put{RequestID: 1, Key: []byte("a"), Value: []byte("1"), Stamp: stamp(1, 1)}, Delete{RequestID: 2, Key: []byte("b"), Stamp: maxStamp}}},
		"batch with empty": Batch{Writes: []Write{}},
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
		// Whatever decodes applies, or is refused for its sizes.
		s, err := New(Options{})
		if err != nil {
			t.Fatal(err)
		}
		var le *LimitError
		if _, err := s.Apply(1, cmd); err != nil && !errors.As(err, &le) {
			t.Fatalf("Apply(%#v) = %v, want success or a *LimitError", cmd, err)
		}
	})
}
