package ring

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"slices"
)

// The binary form of an Assignment, version 1. Integers are big-endian.
//
//	magic      4 bytes  "RKVA"
//	version    1 byte   1
//	epoch      8 bytes  ≥ 1
//	partitions 2 bytes  P, in [1, MaxPartitions]; a power of two until the
//	                    ring first splits
//	nodes      2 bytes  N, in [ReplicationFactor, MaxNodes]
//	N × node   1-byte length L in [1, MaxNodeIDLen], then L bytes of ID;
//	           IDs strictly ascending
//	P × part   3 × 2-byte member index, strictly ascending, then 1 byte:
//	           the primary's position (0-2) among them
//	crc        4 bytes  CRC-32C (Castagnoli) of everything before it
//
// The encoding is canonical: an Assignment has exactly one, so equal
// assignments encode to equal bytes.
const (
	encodingMagic   = "RKVA"
	encodingVersion = 1
	headerLen       = len(encodingMagic) + 1 + 8 + 2 + 2
	partLen         = 2*ReplicationFactor + 1
	crcLen          = 4
)

// ErrCorrupt reports bytes that are not a valid encoded Assignment.
var ErrCorrupt = errors.New("ring: corrupt assignment encoding")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// MarshalBinary encodes a, which came from Place or UnmarshalBinary, in
// the format above. It never fails; the error is there to implement
// encoding.BinaryMarshaler.
func (a *Assignment) MarshalBinary() ([]byte, error) {
	size := headerLen + len(a.parts)*partLen + crcLen
	for _, n := range a.nodes {
		size += 1 + len(n)
	}
	b := make([]byte, 0, size)
	b = append(b, encodingMagic...)
	b = append(b, encodingVersion)
	b = binary.BigEndian.AppendUint64(b, a.epoch)
	b = binary.BigEndian.AppendUint16(b, uint16(len(a.parts)))
	b = binary.BigEndian.AppendUint16(b, uint16(len(a.nodes)))
	index := make(map[NodeID]int, len(a.nodes))
	for i, n := range a.nodes {
		index[n] = i
		b = append(b, byte(len(n)))
		b = append(b, n...)
	}
	for _, pl := range a.parts {
		for _, n := range pl.replicas {
			b = binary.BigEndian.AppendUint16(b, uint16(index[n]))
		}
		b = append(b, byte(slices.Index(pl.replicas[:], pl.primary)))
	}
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli)), nil
}

// UnmarshalBinary decodes data written by MarshalBinary into a, checking the
// checksum and every invariant of an Assignment. On error, a is unchanged
// and the error wraps ErrCorrupt.
func (a *Assignment) UnmarshalBinary(data []byte) error {
	if len(data) < headerLen+crcLen {
		return fmt.Errorf("%w: %d bytes, shorter than the %d-byte header and checksum",
			ErrCorrupt, len(data), headerLen+crcLen)
	}
	body := data[:len(data)-crcLen]
	if got, want := crc32.Checksum(body, castagnoli), binary.BigEndian.Uint32(data[len(body):]); got != want {
		return fmt.Errorf("%w: checksum %08x, want %08x", ErrCorrupt, got, want)
	}
	if string(body[:len(encodingMagic)]) != encodingMagic {
		return fmt.Errorf("%w: magic %q, want %q", ErrCorrupt, body[:len(encodingMagic)], encodingMagic)
	}
	if v := body[len(encodingMagic)]; v != encodingVersion {
		return fmt.Errorf("%w: version %d, want %d", ErrCorrupt, v, encodingVersion)
	}
	next := Assignment{epoch: binary.BigEndian.Uint64(body[5:13])}
	parts, nodes := int(binary.BigEndian.Uint16(body[13:15])), int(binary.BigEndian.Uint16(body[15:17]))
	if next.epoch == 0 {
		return fmt.Errorf("%w: epoch 0, want at least 1", ErrCorrupt)
	}
	if err := cmp.Or(checkPartitionCount(parts), checkNodeCount(nodes)); err != nil {
		return fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	rest := body[headerLen:]
	next.nodes = make([]NodeID, nodes)
	for i := range next.nodes {
		if len(rest) == 0 || len(rest) < 1+int(rest[0]) {
			return fmt.Errorf("%w: truncated in node %d of %d", ErrCorrupt, i, nodes)
		}
		n := NodeID(rest[1 : 1+rest[0]])
		rest = rest[1+len(n):]
		if err := checkNodeID(n); err != nil {
			return fmt.Errorf("%w: node %d: %w", ErrCorrupt, i, err)
		}
		if i > 0 && next.nodes[i-1] >= n {
			return fmt.Errorf("%w: node %d: %q does not follow %q", ErrCorrupt, i, n, next.nodes[i-1])
		}
		next.nodes[i] = n
	}
	if len(rest) != parts*partLen {
		return fmt.Errorf("%w: %d bytes of partitions, want %d × %d", ErrCorrupt, len(rest), parts, partLen)
	}
	next.parts = make([]placement, parts)
	for p := range next.parts {
		rec := rest[p*partLen : (p+1)*partLen]
		prev := -1
		for i := range ReplicationFactor {
			m := int(binary.BigEndian.Uint16(rec[2*i:]))
			if m <= prev || m >= nodes {
				return fmt.Errorf("%w: partition %d: member index %d after %d, want ascending below %d",
					ErrCorrupt, p, m, prev, nodes)
			}
			next.parts[p].replicas[i], prev = next.nodes[m], m
		}
		primary := int(rec[partLen-1])
		if primary >= ReplicationFactor {
			return fmt.Errorf("%w: partition %d: primary position %d, want below %d",
				ErrCorrupt, p, primary, ReplicationFactor)
		}
		next.parts[p].primary = next.parts[p].replicas[primary]
	}
	*a = next
	return nil
}
