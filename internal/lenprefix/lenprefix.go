// Package lenprefix encodes byte fields as a uvarint length followed by the
// bytes, the framing used inside WAL payloads and stable-store values.
package lenprefix

import "encoding/binary"

// Append appends field to b, length first.
func Append(b, field []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(field)))
	return append(b, field...)
}

// Cut splits the first field off b. ok is false if b is truncated or its
// length is malformed. The field aliases b with its capacity capped, so
// appending to it never overwrites rest.
func Cut(b []byte) (field, rest []byte, ok bool) {
	n, k := binary.Uvarint(b)
	if k <= 0 || uint64(len(b)-k) < n {
		return nil, nil, false
	}
	b = b[k:]
	if n == 0 {
		return nil, b, true
	}
	return b[:n:n], b[n:], true
}
