package storage

import "encoding/binary"

// A key of the engine is
//
//	'p' | partition (uint32, big-endian) | space (1 byte) | the caller's key
//
// so that each partition's keys form one span, ordered within it by space
// and then bytewise by the caller's key. Space 0 is the package's own (the
// applied index); callers pick theirs from 1 up.
const (
	partitionTag = 'p'
	prefixLen    = 1 + 4
	metaSpace    = 0
)

// appliedKey is the partition's applied index, in metaSpace.
var appliedKey = []byte("applied")

func partitionPrefix(p uint32) []byte {
	return binary.BigEndian.AppendUint32([]byte{partitionTag}, p)
}

// span is the half-open range of p's keys.
func span(p uint32) (start, end []byte) {
	if p == ^uint32(0) {
		return partitionPrefix(p), []byte{partitionTag + 1}
	}
	return partitionPrefix(p), partitionPrefix(p + 1)
}

// engineKey appends the engine key of (space, key) in p to dst.
func engineKey(dst []byte, p uint32, space byte, key []byte) []byte {
	dst = append(dst, partitionTag)
	dst = binary.BigEndian.AppendUint32(dst, p)
	dst = append(dst, space)
	return append(dst, key...)
}
