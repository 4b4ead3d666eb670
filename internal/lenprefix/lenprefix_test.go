package lenprefix

import (
	"bytes"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	fields := [][]byte{nil, []byte("a"), bytes.Repeat([]byte("x"), 300)}
	var b []byte
	for _, f := range fields {
		b = Append(b, f)
	}
	for i, want := range fields {
		got, rest, ok := Cut(b)
		if !ok || !bytes.Equal(got, want) {
			t.Fatalf("field %d: got %q ok=%v, want %q", i, got, ok, want)
		}
		if len(got) > 0 && cap(got) != len(got) {
			t.Fatalf("field %d: capacity %d not capped at %d", i, cap(got), len(got))
		}
		b = rest
	}
	if len(b) != 0 {
		t.Fatalf("%d bytes left over", len(b))
	}
}

func TestCutRejectsMalformed(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"truncated field", Append(nil, []byte("hello"))[:4]},
		{"overlong varint", bytes.Repeat([]byte{0xff}, 11)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, ok := Cut(tc.in); ok {
				t.Fatalf("Cut(%x) ok, want failure", tc.in)
			}
		})
	}
}
