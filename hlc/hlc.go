// Package hlc implements a hybrid logical clock (Kulkarni et al., "Logical
// Physical Clocks", 2014): timestamps that stay close to physical time yet
// never go backwards and always advance past every timestamp the clock has
// seen, so they can order writes across nodes whose wall clocks disagree.
//
// Invariants:
//   - Every timestamp a Clock returns from Now or Update is strictly greater
//     than every timestamp it returned before and every remote timestamp it
//     accepted, even when the physical clock steps backwards or stalls.
//   - WallTime never falls behind the physical clock's reading at the time of
//     the call; it runs ahead of it only as far as accepted remote timestamps
//     (bounded by the max offset when one is set) or logical overflow push it.
//
// Timestamps encode to a fixed EncodedLen bytes (see Timestamp.Append).
package hlc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"
)

// EncodedLen is the size of a Timestamp's binary encoding: the wall time as a
// big-endian int64 followed by the logical counter as a big-endian uint32.
const EncodedLen = 12

// ErrClockOffset reports a remote timestamp further ahead of the local
// physical clock than the configured maximum offset.
var ErrClockOffset = errors.New("hlc: remote clock offset exceeds maximum")

// ErrEncoding reports bytes that are not a Timestamp encoding.
var ErrEncoding = errors.New("hlc: bad timestamp encoding")

// Timestamp is a hybrid logical time: physical unix nanoseconds plus a
// logical counter that orders events sharing the same wall time.
type Timestamp struct {
	WallTime int64
	Logical  uint32
}

// Compare returns -1, 0 or +1 as t is before, equal to or after u, ordering
// by WallTime then Logical.
func (t Timestamp) Compare(u Timestamp) int {
	switch {
	case t.WallTime < u.WallTime:
		return -1
	case t.WallTime > u.WallTime:
		return 1
	case t.Logical < u.Logical:
		return -1
	case t.Logical > u.Logical:
		return 1
	}
	return 0
}

// Less reports whether t is before u.
func (t Timestamp) Less(u Timestamp) bool { return t.Compare(u) < 0 }

// IsZero reports whether t is the zero Timestamp, which sorts before every
// timestamp a Clock issues from a non-negative physical clock.
func (t Timestamp) IsZero() bool { return t == Timestamp{} }

// String formats t as seconds.nanoseconds,logical, e.g. "1700000000.000000042,3".
func (t Timestamp) String() string {
	sign, abs := "", uint64(t.WallTime)
	if t.WallTime < 0 {
		sign, abs = "-", -abs
	}
	return fmt.Sprintf("%s%d.%09d,%d", sign, abs/1e9, abs%1e9, t.Logical)
}

// Append appends the EncodedLen-byte encoding of t to dst.
func (t Timestamp) Append(dst []byte) []byte {
	dst = binary.BigEndian.AppendUint64(dst, uint64(t.WallTime))
	return binary.BigEndian.AppendUint32(dst, t.Logical)
}

// Decode parses the encoding written by Timestamp.Append; b must be exactly
// EncodedLen bytes.
func Decode(b []byte) (Timestamp, error) {
	if len(b) != EncodedLen {
		return Timestamp{}, fmt.Errorf("%w: %d bytes, want %d", ErrEncoding, len(b), EncodedLen)
	}
	return Timestamp{
		WallTime: int64(binary.BigEndian.Uint64(b)),
		Logical:  binary.BigEndian.Uint32(b[8:]),
	}, nil
}

// next returns the smallest timestamp after t. When the logical counter is
// exhausted it borrows one nanosecond from the future rather than wrap, which
// would break monotonicity.
func (t Timestamp) next() Timestamp {
	if t.Logical == math.MaxUint32 {
		return Timestamp{WallTime: t.WallTime + 1}
	}
	return Timestamp{WallTime: t.WallTime, Logical: t.Logical + 1}
}

// OffsetError is returned by Clock.Update for a remote timestamp whose wall
// time is more than MaxOffset ahead of the local physical clock.
type OffsetError struct {
	Remote    Timestamp
	Physical  int64 // local physical clock reading, unix nanos
	MaxOffset time.Duration
}

func (e *OffsetError) Error() string {
	return fmt.Sprintf("%v: remote %v is %v ahead of local physical time %d, max %v",
		ErrClockOffset, e.Remote, time.Duration(e.Remote.WallTime-e.Physical), e.Physical, e.MaxOffset)
}

// Unwrap makes errors.Is(err, ErrClockOffset) hold.
func (e *OffsetError) Unwrap() error { return ErrClockOffset }

// Option configures a Clock.
type Option func(*Clock)

// WithMaxOffset makes Update reject remote timestamps more than d ahead of the
// local physical clock, so one node with a runaway clock cannot drag every
// other node's timestamps into the future. d <= 0 disables the check.
func WithMaxOffset(d time.Duration) Option {
	return func(c *Clock) { c.maxOffset = d }
}

// Clock issues hybrid logical timestamps. It is safe for concurrent use. The
// zero Clock reads time.Now and has no max offset.
type Clock struct {
	physical  func() int64
	maxOffset time.Duration

	mu   sync.Mutex
	last Timestamp
}

// New returns a Clock reading physical time (unix nanoseconds) from physical;
// nil means time.Now().UnixNano().
func New(physical func() int64, opts ...Option) *Clock {
	c := &Clock{physical: physical}
	for _, o := range opts {
		o(c)
	}
	return c
}

func (c *Clock) readPhysical() int64 {
	if c.physical == nil {
		return time.Now().UnixNano()
	}
	return c.physical()
}

// Now returns a timestamp for a local or send event: the physical time if it
// has advanced past the last timestamp issued, else the last timestamp with
// its logical counter incremented.
func (c *Clock) Now() Timestamp {
	pt := c.readPhysical()
	c.mu.Lock()
	defer c.mu.Unlock()
	if pt > c.last.WallTime {
		c.last = Timestamp{WallTime: pt}
	} else {
		c.last = c.last.next()
	}
	return c.last
}

// Update applies the receive rule for a message stamped remote and returns the
// timestamp of the receive event, which is after both remote and every
// timestamp issued before. With a max offset set, a remote wall time too far
// ahead of the physical clock is refused with an *OffsetError and the clock is
// left unchanged.
func (c *Clock) Update(remote Timestamp) (Timestamp, error) {
	pt := c.readPhysical()
	if c.maxOffset > 0 && remote.WallTime-pt > int64(c.maxOffset) {
		return Timestamp{}, &OffsetError{Remote: remote, Physical: pt, MaxOffset: c.maxOffset}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	latest := c.last
	if remote.Compare(latest) > 0 {
		latest = remote
	}
	if pt > latest.WallTime {
		c.last = Timestamp{WallTime: pt}
	} else {
		c.last = latest.next()
	}
	return c.last, nil
}
