package wal

import (
	"bytes"
	"errors"
	"io/fs"
	"math/rand/v2"
	"testing"
)

func TestMemFSCrashKeepsOnlySynced(t *testing.T) {
	m := NewMemFS()
	const dir = "/d"
	a, b, c := dir+"/a", dir+"/b", dir+"/c"
	fa, _ := m.Create(a)
	fa.WriteAt([]byte("synced"), 0)
	fa.Sync()
	fa.WriteAt([]byte("-lost"), 6)
	fb, _ := m.Create(b)
	fb.WriteAt([]byte("renamed"), 0)
	fb.Sync()
	if err := m.SyncDir(dir); err != nil {
		t.Fatal(err)
	}
	m.Rename(b, c) // not synced: the crash undoes it
	fd, _ := m.Create(dir + "/d")
	fd.WriteAt([]byte("no dir sync"), 0)
	fd.Sync()
	m.Crash()

	if names, _ := m.ReadDir(dir); len(names) != 2 || names[0] != "a" || names[1] != "b" {
		t.Fatalf("after crash the directory holds %v, want [a b]", names)
	}
	if got := readFile(t, m, a); string(got) != "synced" {
		t.Fatalf("a = %q, want %q", got, "synced")
	}
	if got := readFile(t, m, b); string(got) != "renamed" {
		t.Fatalf("b = %q", got)
	}
	if _, err := fa.WriteAt([]byte("x"), 0); !errors.Is(err, ErrStaleHandle) {
		t.Fatalf("write through a pre-crash handle: %v, want ErrStaleHandle", err)
	}
}

func TestMemFSTruncateAndPreallocateAreDurableOnSync(t *testing.T) {
	m := NewMemFS()
	f, _ := m.Create("/d/f")
	m.SyncDir("/d")
	f.WriteAt([]byte("0123456789"), 0)
	f.Sync()
	f.Truncate(4)
	f.Preallocate(8)
	f.Sync()
	f.WriteAt([]byte("zz"), 0) // unsynced
	m.Crash()
	if got := readFile(t, m, "/d/f"); !bytes.Equal(got, []byte("0123\x00\x00\x00\x00")) {
		t.Fatalf("file = %q", got)
	}
}

func TestMemFSFaults(t *testing.T) {
	m := NewMemFS()
	injected := errors.New("boom")
	f, _ := m.Create("/d/f")
	m.SetFault(func(op Op, name string) error {
		if op == OpWrite && name == "/d/f" {
			return injected
		}
		return nil
	})
	n, err := f.WriteAt([]byte("abcdef"), 0)
	var pe *fs.PathError
	if !errors.Is(err, injected) || !errors.As(err, &pe) || n != 3 {
		t.Fatalf("faulty write: n=%d err=%v, want a short write of 3 and the injected error", n, err)
	}
	m.SetFault(nil)
	if got := readFile(t, m, "/d/f"); string(got) != "abc" {
		t.Fatalf("after short write file = %q", got)
	}
	if _, err := m.Lock("/d/LOCK"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Lock("/d/LOCK"); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Lock: %v", err)
	}
	m.Crash() // the holding process is gone
	if _, err := m.Lock("/d/LOCK"); err != nil {
		t.Fatalf("Lock after crash: %v", err)
	}
}

// CrashTorn keeps, per sector, either the synced or the written content,
// and never anything else.
func TestMemFSCrashTorn(t *testing.T) {
	old := bytes.Repeat([]byte{'o'}, 8*memSector)
	neu := bytes.Repeat([]byte{'n'}, 10*memSector)
	kept := map[bool]int{}
	for seed := range uint64(20) {
		m := NewMemFS()
		f, _ := m.Create("/d/f")
		f.WriteAt(old, 0)
		f.Sync()
		m.SyncDir("/d")
		f.WriteAt(neu, 0)
		m.CrashTorn(rand.New(rand.NewPCG(seed, 0)))
		got := readFile(t, m, "/d/f")
		for s := 0; s < 10; s++ {
			if s*memSector >= len(got) {
				break
			}
			sec := got[s*memSector : (s+1)*memSector]
			switch {
			case bytes.Equal(sec, neu[:memSector]):
				kept[true]++
			case s < 8 && bytes.Equal(sec, old[:memSector]), s >= 8 && bytes.Equal(sec, make([]byte, memSector)):
				kept[false]++
			default:
				t.Fatalf("seed %d sector %d holds neither version", seed, s)
			}
		}
	}
	if kept[true] == 0 || kept[false] == 0 {
		t.Fatalf("torn crashes kept %v sectors: expected both outcomes", kept)
	}
}
