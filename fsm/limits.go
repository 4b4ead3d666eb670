package fsm

import (
	"errors"
	"fmt"
	"time"

	"github.com/ringkv/ringkv/ring"
)

// Defaults for the zero fields of Options.
const (
	DefaultMaxKeySize     = 4096
	DefaultMaxValueSize   = 1 << 20
	DefaultTombstoneGrace = 24 * time.Hour
)

// Sentinels for size violations; the error itself is a *LimitError naming the
// field, its size and the limit.
var (
	ErrEmptyKey      = errors.New("fsm: empty key")
	ErrKeyTooLarge   = errors.New("fsm: key too large")
	ErrValueTooLarge = errors.New("fsm: value too large")
)

// ErrInvalidOptions reports an Options field New cannot use.
var ErrInvalidOptions = errors.New("fsm: invalid options")

// LimitError reports a key or value outside the configured bounds.
type LimitError struct {
	Field string // the offending field: "key", "value", "writes[3].key", ...
	Size  int    // its size in bytes
	Limit int    // the bound it breaks: the maximum, or 1 (the minimum) for ErrEmptyKey
	Err   error  // ErrEmptyKey, ErrKeyTooLarge or ErrValueTooLarge
}

func (e *LimitError) Error() string {
	bound := "maximum"
	if e.Size < e.Limit {
		bound = "minimum"
	}
	return fmt.Sprintf("%v: %s is %d bytes, %s %d", e.Err, e.Field, e.Size, bound, e.Limit)
}

// Unwrap lets errors.Is match the sentinel in Err.
func (e *LimitError) Unwrap() error { return e.Err }

// Options configures a Store. Every replica of a partition must use the same
// limits, since Apply rejects what they forbid and must decide alike
// everywhere. A zero field takes its default.
type Options struct {
	MaxKeySize   int // bytes, default DefaultMaxKeySize
	MaxValueSize int // bytes, default DefaultMaxValueSize
	// TombstoneGrace is how long a tombstone outlives its delete before
	// PurgeCommand lets it go. It must exceed the longest a delayed write to
	// the key can still arrive, or that write resurrects the key.
	TombstoneGrace time.Duration
	// Range is the range of key hashes the partition owns until a Split
	// records another: the range it was created with, the same on every
	// replica. The zero value is FullRange.
	Range ring.HashRange
}

func (o Options) check() error {
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"MaxKeySize", int64(o.MaxKeySize)},
		{"MaxValueSize", int64(o.MaxValueSize)},
		{"TombstoneGrace", int64(o.TombstoneGrace)},
	} {
		if f.v < 0 {
			return fmt.Errorf("%w: %s is %d, must not be negative", ErrInvalidOptions, f.name, f.v)
		}
	}
	if o.Range.First > o.Range.Last {
		return fmt.Errorf("%w: Range %#x-%#x is empty", ErrInvalidOptions, o.Range.First, o.Range.Last)
	}
	return nil
}

// config is Options with defaults filled in.
type config struct {
	maxKey, maxValue int
	grace            time.Duration
	rng              ring.HashRange
}

func (o Options) config() config {
	l := config{o.MaxKeySize, o.MaxValueSize, o.TombstoneGrace, o.Range}
	if l.rng == (ring.HashRange{}) {
		l.rng = FullRange
	}
	if l.maxKey <= 0 {
		l.maxKey = DefaultMaxKeySize
	}
	if l.maxValue <= 0 {
		l.maxValue = DefaultMaxValueSize
	}
	if l.grace <= 0 {
		l.grace = DefaultTombstoneGrace
	}
	return l
}

// ValidateKey checks key against the key size limits.
func (o Options) ValidateKey(key []byte) error { return o.config().key(key) }

// ValidateValue checks value against the value size limit.
func (o Options) ValidateValue(value []byte) error { return o.config().value(value) }

// Validate checks every key and value cmd carries, so a server can refuse a
// request before proposing it. Apply runs the same check.
func (o Options) Validate(cmd Command) error { return o.config().validate(cmd) }

func (l config) validate(cmd Command) error {
	if cmd == nil {
		return fmt.Errorf("%w: nil command", ErrMalformedCommand)
	}
	return cmd.validate(l)
}

func (l config) key(key []byte) error {
	switch {
	case len(key) == 0:
		return &LimitError{Field: "key", Size: 0, Limit: 1, Err: ErrEmptyKey}
	case len(key) > l.maxKey:
		return &LimitError{Field: "key", Size: len(key), Limit: l.maxKey, Err: ErrKeyTooLarge}
	}
	return nil
}

func (l config) value(value []byte) error {
	if len(value) > l.maxValue {
		return &LimitError{Field: "value", Size: len(value), Limit: l.maxValue, Err: ErrValueTooLarge}
	}
	return nil
}

func (l config) write(w write) error {
	if err := l.key(w.key); err != nil {
		return err
	}
	return l.value(w.value)
}

func (p Put) validate(l config) error         { return l.write(p.asWrite()) }
func (d Delete) validate(l config) error      { return l.write(d.asWrite()) }
func (PurgeTombstones) validate(config) error { return nil }

func (sp Split) validate(config) error {
	switch {
	case sp.Right.First > sp.Right.Last:
		return fmt.Errorf("%w: split range %#x-%#x is empty", ErrMalformedCommand, sp.Right.First, sp.Right.Last)
	case len(sp.Genesis) > MaxGenesis:
		return fmt.Errorf("%w: split genesis is %d bytes, maximum %d", ErrMalformedCommand, len(sp.Genesis), MaxGenesis)
	}
	return nil
}

func (b Batch) validate(l config) error {
	for i, w := range b.Writes {
		if w == nil {
			return nilWriteError(i)
		}
		if err := l.write(w.asWrite()); err != nil {
			return prefixField(err, fmt.Sprintf("writes[%d]", i))
		}
	}
	return nil
}

// prefixField qualifies the field a *LimitError names with the element of a
// list it belongs to, e.g. "key" becomes "writes[3].key".
func prefixField(err error, prefix string) error {
	var le *LimitError
	if errors.As(err, &le) {
		le.Field = prefix + "." + le.Field
	}
	return err
}
