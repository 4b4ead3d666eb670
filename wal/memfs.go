package wal

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"sync"
)

// Op names a MemFS operation for fault injection.
type Op string

const (
	OpCreate      Op = "create"
	OpOpen        Op = "open"
	OpWrite       Op = "write"
	OpSync        Op = "sync"
	OpTruncate    Op = "truncate"
	OpPreallocate Op = "preallocate"
	OpRemove      Op = "remove"
	OpRename      Op = "rename"
	OpSyncDir     Op = "syncdir"
)

// ErrStaleHandle is returned by operations on a MemFS file opened before the
// last Crash: the process that held it is gone.
var ErrStaleHandle = errors.New("memfs: file handle from before a crash")

// MemFS is an in-memory FS that models what survives a power loss. File
// data becomes durable on File.Sync, and creations, renames and removals on
// SyncDir of their directory. Crash forgets everything else. SetFault
// injects errors. It is safe for concurrent use.
type MemFS struct {
	mu      sync.Mutex
	names   map[string]*memInode // the namespace as the running process sees it
	durable map[string]*memInode // the namespace as of the last SyncDir
	locks   map[string]bool
	fault   func(op Op, name string) error
	gen     int
}

type memInode struct {
	data   []byte
	synced []byte
	// Every byte where data and synced may differ lies in [lo, hi), so a
	// sync copies only what changed.
	lo, hi int
}

func (ino *memInode) dirty(lo, hi int) {
	if ino.lo == ino.hi {
		ino.lo, ino.hi = lo, hi
		return
	}
	ino.lo, ino.hi = min(ino.lo, lo), max(ino.hi, hi)
}

func (ino *memInode) sync() {
	if len(ino.synced) < len(ino.data) {
		ino.synced = append(ino.synced, make([]byte, len(ino.data)-len(ino.synced))...)
	}
	ino.synced = ino.synced[:len(ino.data)]
	copy(ino.synced[ino.lo:], ino.data[ino.lo:min(ino.hi, len(ino.data))])
	ino.lo, ino.hi = 0, 0
}

// NewMemFS returns an empty MemFS.
func NewMemFS() *MemFS {
	return &MemFS{
		names:   make(map[string]*memInode),
		durable: make(map[string]*memInode),
		locks:   make(map[string]bool),
	}
}

// SetFault installs fn, called before every mutating operation (and Open); a
// non-nil result fails the operation. A failed OpWrite first writes half of
// its bytes, as a short write would. nil removes the hook.
func (m *MemFS) SetFault(fn func(op Op, name string) error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.fault = fn
}

// Crash simulates a power loss: every file reverts to its last synced data,
// the namespace to its last synced state, locks are released and open
// handles go stale.
func (m *MemFS) Crash() { m.crash(nil) }

// CrashTorn is Crash where every 512-byte sector written since the last
// sync independently survives or not, as on a disk that persists an
// unsynced write partially and out of order.
func (m *MemFS) CrashTorn(r *rand.Rand) { m.crash(r) }

const memSector = 512

func (m *MemFS) crash(r *rand.Rand) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.gen++
	m.locks = make(map[string]bool)
	m.names = make(map[string]*memInode, len(m.durable))
	for name, ino := range m.durable {
		if r != nil {
			ino.tear(r)
		}
		ino.data = slices.Clone(ino.synced)
		m.names[name] = ino
	}
}

// tear lets each dirty sector of data reach synced with probability 1/2.
func (ino *memInode) tear(r *rand.Rand) {
	for off := ino.lo / memSector * memSector; off < min(ino.hi, len(ino.data)); off += memSector {
		end := min(off+memSector, len(ino.data))
		if r.IntN(2) == 0 {
			continue
		}
		if len(ino.synced) < end {
			ino.synced = append(ino.synced, make([]byte, end-len(ino.synced))...)
		}
		copy(ino.synced[off:end], ino.data[off:end])
	}
	ino.lo, ino.hi = 0, 0
}

func (m *MemFS) check(op Op, name string) error {
	if m.fault == nil {
		return nil
	}
	if err := m.fault(op, name); err != nil {
		return &fs.PathError{Op: string(op), Path: name, Err: err}
	}
	return nil
}

func (m *MemFS) Create(name string) (File, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	name = filepath.Clean(name)
	if err := m.check(OpCreate, name); err != nil {
		return nil, err
	}
	ino := &memInode{}
	m.names[name] = ino
	return &memFile{fs: m, ino: ino, name: name, gen: m.gen}, nil
}

func (m *MemFS) Open(name string) (File, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	name = filepath.Clean(name)
	if err := m.check(OpOpen, name); err != nil {
		return nil, err
	}
	ino, ok := m.names[name]
	if !ok {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	return &memFile{fs: m, ino: ino, name: name, gen: m.gen}, nil
}

func (m *MemFS) Remove(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	name = filepath.Clean(name)
	if err := m.check(OpRemove, name); err != nil {
		return err
	}
	if _, ok := m.names[name]; !ok {
		return &fs.PathError{Op: "remove", Path: name, Err: fs.ErrNotExist}
	}
	delete(m.names, name)
	return nil
}

func (m *MemFS) Rename(oldname, newname string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	oldname, newname = filepath.Clean(oldname), filepath.Clean(newname)
	if err := m.check(OpRename, oldname); err != nil {
		return err
	}
	ino, ok := m.names[oldname]
	if !ok {
		return &fs.PathError{Op: "rename", Path: oldname, Err: fs.ErrNotExist}
	}
	delete(m.names, oldname)
	m.names[newname] = ino
	return nil
}

func (m *MemFS) ReadDir(dir string) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for name := range m.names {
		if base, ok := inDir(dir, name); ok {
			out = append(out, base)
		}
	}
	slices.Sort(out)
	return out, nil
}

// inDir returns name's base name if name is directly inside dir.
func inDir(dir, name string) (string, bool) {
	prefix := filepath.Clean(dir) + string(filepath.Separator)
	base, ok := strings.CutPrefix(name, prefix)
	return base, ok && !strings.ContainsRune(base, filepath.Separator)
}

// MkdirAll does nothing: MemFS directories exist implicitly.
func (m *MemFS) MkdirAll(string) error { return nil }

func (m *MemFS) SyncDir(dir string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(OpSyncDir, dir); err != nil {
		return err
	}
	for name := range m.durable {
		if _, ok := inDir(dir, name); ok {
			delete(m.durable, name)
		}
	}
	for name, ino := range m.names {
		if _, ok := inDir(dir, name); ok {
			m.durable[name] = ino
		}
	}
	return nil
}

func (m *MemFS) Lock(name string) (io.Closer, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	name = filepath.Clean(name)
	if m.locks[name] {
		return nil, fmt.Errorf("%w: %s", ErrLocked, name)
	}
	m.locks[name] = true
	return &memLock{fs: m, name: name, gen: m.gen}, nil
}

type memLock struct {
	fs   *MemFS
	name string
	gen  int
}

func (l *memLock) Close() error {
	l.fs.mu.Lock()
	defer l.fs.mu.Unlock()
	if l.gen == l.fs.gen {
		delete(l.fs.locks, l.name)
	}
	return nil
}

type memFile struct {
	fs   *MemFS
	ino  *memInode
	name string
	gen  int
}

// lock locks the file system and fails if the handle predates a crash.
func (f *memFile) lock() error {
	f.fs.mu.Lock()
	if f.gen != f.fs.gen {
		f.fs.mu.Unlock()
		return &fs.PathError{Op: "access", Path: f.name, Err: ErrStaleHandle}
	}
	return nil
}

func (f *memFile) ReadAt(p []byte, off int64) (int, error) {
	if err := f.lock(); err != nil {
		return 0, err
	}
	defer f.fs.mu.Unlock()
	if off >= int64(len(f.ino.data)) {
		return 0, io.EOF
	}
	n := copy(p, f.ino.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *memFile) WriteAt(p []byte, off int64) (int, error) {
	if err := f.lock(); err != nil {
		return 0, err
	}
	defer f.fs.mu.Unlock()
	err := f.fs.check(OpWrite, f.name)
	if err != nil {
		p = p[:len(p)/2]
	}
	f.ino.grow(off + int64(len(p)))
	copy(f.ino.data[off:], p)
	f.ino.dirty(int(off), int(off)+len(p))
	return len(p), err
}

func (ino *memInode) grow(size int64) {
	if n := int64(len(ino.data)); n < size {
		ino.data = append(ino.data, make([]byte, size-n)...)
		ino.dirty(int(n), int(size))
	}
}

func (f *memFile) Sync() error {
	if err := f.lock(); err != nil {
		return err
	}
	defer f.fs.mu.Unlock()
	if err := f.fs.check(OpSync, f.name); err != nil {
		return err
	}
	f.ino.sync()
	return nil
}

func (f *memFile) Truncate(size int64) error {
	if err := f.lock(); err != nil {
		return err
	}
	defer f.fs.mu.Unlock()
	if err := f.fs.check(OpTruncate, f.name); err != nil {
		return err
	}
	if size < int64(len(f.ino.data)) {
		f.ino.data = f.ino.data[:size]
		f.ino.dirty(int(size), int(size))
	}
	f.ino.grow(size)
	return nil
}

func (f *memFile) Preallocate(size int64) error {
	if err := f.lock(); err != nil {
		return err
	}
	defer f.fs.mu.Unlock()
	if err := f.fs.check(OpPreallocate, f.name); err != nil {
		return err
	}
	f.ino.grow(size)
	return nil
}

func (f *memFile) Size() (int64, error) {
	if err := f.lock(); err != nil {
		return 0, err
	}
	defer f.fs.mu.Unlock()
	return int64(len(f.ino.data)), nil
}

// Close never fails, even on a stale handle, so that cleanup after a crash
// is uniform.
func (f *memFile) Close() error { return nil }
