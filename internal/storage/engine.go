package storage

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// Defaults of Options, sized for a small machine: the block cache bounds
// what the engine keeps in memory, memtables included — pebble charges
// them (up to MemTableSize × 2: the one being written and the one being
// flushed) to the cache, so a cache smaller than that caches no block.
const (
	DefaultCacheSize             = 256 << 20
	DefaultMemTableSize          = 32 << 20
	DefaultCompactionConcurrency = 1
)

// ErrInvalid marks a refused Options; the error names the field.
var ErrInvalid = errors.New("storage: invalid options")

// Options configure an Engine.
type Options struct {
	// Dir holds the engine's files; required.
	Dir string
	// FS is the file system; nil is the operating system's. Tests pass
	// vfs.NewMem() or a crashable MemFS.
	FS vfs.FS
	// CacheSize is the block cache's size in bytes.
	CacheSize int64
	// MemTableSize is one memtable's size in bytes.
	MemTableSize uint64
	// CompactionConcurrency is the most compactions that run at once.
	CompactionConcurrency int
	// Logger receives pebble's messages; nil discards them.
	Logger pebble.Logger
}

func (o Options) withDefaults() (Options, error) {
	if o.Dir == "" {
		return o, fmt.Errorf("%w: Dir is required", ErrInvalid)
	}
	if o.FS == nil {
		o.FS = vfs.Default
	}
	if o.CacheSize == 0 {
		o.CacheSize = DefaultCacheSize
	}
	if o.MemTableSize == 0 {
		o.MemTableSize = DefaultMemTableSize
	}
	if o.CompactionConcurrency == 0 {
		o.CompactionConcurrency = DefaultCompactionConcurrency
	}
	switch {
	case o.CacheSize < 0:
		return o, fmt.Errorf("%w: CacheSize is %d, want at least 0", ErrInvalid, o.CacheSize)
	case o.MemTableSize < 1<<20 || o.MemTableSize >= 4<<30:
		return o, fmt.Errorf("%w: MemTableSize is %d, want 1 MiB to 4 GiB", ErrInvalid, o.MemTableSize)
	case o.CompactionConcurrency < 1:
		return o, fmt.Errorf("%w: CompactionConcurrency is %d, want at least 1", ErrInvalid, o.CompactionConcurrency)
	}
	if o.Logger == nil {
		o.Logger = quietLogger{}
	}
	return o, nil
}

// Engine is a node's pebble instance.
type Engine struct {
	opts     Options
	popts    *pebble.Options
	db       *pebble.DB
	staging  string // where ingestion writes SSTables before they go in
	ingestMu sync.Mutex
}

// Open opens or creates the engine in opts.Dir.
func Open(opts Options) (*Engine, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	cache := pebble.NewCache(opts.CacheSize)
	defer cache.Unref() // the DB holds its own reference
	po := &pebble.Options{
		FS:           opts.FS,
		Cache:        cache,
		MemTableSize: opts.MemTableSize,
		// The Raft log is the write-ahead log (doc.go).
		DisableWAL:         true,
		FormatMajorVersion: pebble.FormatNewest,
		Logger:             opts.Logger,
		CompactionConcurrencyRange: func() (int, int) {
			return 1, opts.CompactionConcurrency
		},
	}
	po.EnsureDefaults()
	for i := range po.Levels {
		po.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
	}
	e := &Engine{opts: opts, popts: po, staging: opts.FS.PathJoin(opts.Dir, "staging")}
	if e.db, err = pebble.Open(opts.Dir, po); err != nil {
		return nil, fmt.Errorf("storage: open %s: %w", opts.Dir, err)
	}
	// Files left by an ingestion a crash interrupted are garbage.
	if err := opts.FS.RemoveAll(e.staging); err != nil && !errors.Is(err, os.ErrNotExist) {
		e.db.Close()
		return nil, fmt.Errorf("storage: clearing %s: %w", e.staging, err)
	}
	return e, nil
}

// Close closes the engine. What was applied but not flushed is lost, as
// after a crash; the Raft log holds it.
func (e *Engine) Close() error { return e.db.Close() }

// Flush makes everything committed so far durable, every partition's
// applied index included.
func (e *Engine) Flush() error { return e.db.Flush() }

// Partition returns p's handle; it does no I/O.
func (e *Engine) Partition(p uint32) *Partition {
	return &Partition{e: e, id: p}
}

// Stats describes the engine for metrics and status. Every field comes from
// one pebble.Metrics, so Stats costs a lock and a copy, not I/O: cheap
// enough for every scrape and every Admin.Status.
type Stats struct {
	// DiskBytes is what the engine's files take on disk: live tables,
	// obsolete ones not yet deleted, the manifest, and compactions' output
	// in progress.
	DiskBytes   uint64
	L0Files     int64
	L0Sublevels int32
	// ReadAmp is the sublevels of L0 plus the non-empty levels below: the
	// tables a point read may have to look in.
	ReadAmp            int
	CompactionDebt     uint64 // estimated bytes compactions must rewrite
	CompactionsRunning int64
	Compactions        int64 // completed since Open
	// MemTableBytes is the memtables' allocated size, the one being written
	// and those waiting for a flush; it is charged to the block cache.
	MemTableBytes uint64
	CacheBytes    int64
	CacheHits     int64 // since Open, as CacheMisses
	CacheMisses   int64
}

// Stats reads the engine's current figures.
func (e *Engine) Stats() Stats {
	m := e.db.Metrics()
	return Stats{
		DiskBytes:          m.DiskSpaceUsage(),
		L0Files:            m.Levels[0].TablesCount,
		L0Sublevels:        m.Levels[0].Sublevels,
		ReadAmp:            m.ReadAmp(),
		CompactionDebt:     m.Compact.EstimatedDebt,
		CompactionsRunning: m.Compact.NumInProgress,
		Compactions:        m.Compact.Count,
		MemTableBytes:      m.MemTable.Size,
		CacheBytes:         m.BlockCache.Size,
		CacheHits:          m.BlockCache.Hits,
		CacheMisses:        m.BlockCache.Misses,
	}
}

// quietLogger drops pebble's informational messages and keeps its errors.
type quietLogger struct{}

func (quietLogger) Infof(string, ...any) {}
func (quietLogger) Errorf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "pebble: "+format+"\n", args...)
}
func (quietLogger) Fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "pebble: "+format+"\n", args...)
	os.Exit(1)
}
