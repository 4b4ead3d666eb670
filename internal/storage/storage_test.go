package storage

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

func open(t testing.TB, fs vfs.FS) *Engine {
	t.Helper()
	e, err := Open(Options{Dir: "/data", FS: fs, CacheSize: 8 << 20, MemTableSize: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// fill commits n batches of one key each to p, entry i writing key%d = v%d
// at applied index i.
func fill(t testing.TB, p *Partition, from, to int) {
	t.Helper()
	for i := from; i <= to; i++ {
		b := p.NewBatch()
		if err := b.Set(1, fmt.Appendf(nil, "key%06d", i), fmt.Appendf(nil, "v%d", i)); err != nil {
			t.Fatal(err)
		}
		if err := b.Commit(uint64(i)); err != nil {
			t.Fatal(err)
		}
	}
}

// dump reads a partition's space-1 keys and applied index.
func dump(t testing.TB, r interface {
	NewIter(byte, []byte, []byte) (*Iter, error)
	Applied() (uint64, error)
}) (string, uint64) {
	t.Helper()
	it, err := r.NewIter(1, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	for ok := it.First(); ok; ok = it.Next() {
		fmt.Fprintf(&b, "%s=%s;", it.Key(), it.Value())
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	applied, err := r.Applied()
	if err != nil {
		t.Fatal(err)
	}
	return b.String(), applied
}

func TestPartitionsAreApart(t *testing.T) {
	e := open(t, vfs.NewMem())
	defer e.Close()
	p3, p4 := e.Partition(3), e.Partition(4)
	fill(t, p3, 1, 5)
	fill(t, p4, 1, 2)
	b := p3.NewBatch()
	b.Delete(1, []byte("key000002"))
	b.Set(2, []byte("key000001"), []byte("other space"))
	if err := b.Commit(6); err != nil {
		t.Fatal(err)
	}
	got, applied := dump(t, p3)
	if want := "key000001=v1;key000003=v3;key000004=v4;key000005=v5;"; got != want || applied != 6 {
		t.Fatalf("p3 = %q at %d, want %q at 6", got, applied, want)
	}
	if got, applied := dump(t, p4); got != "key000001=v1;key000002=v2;" || applied != 2 {
		t.Fatalf("p4 = %q at %d", got, applied)
	}
	if v, ok, err := p3.Get(2, []byte("key000001")); err != nil || !ok || string(v) != "other space" {
		t.Fatalf("Get = %q %v %v", v, ok, err)
	}
	if _, ok, err := p3.Get(1, []byte("key000002")); ok || err != nil {
		t.Fatalf("deleted key found: %v %v", ok, err)
	}
	if err := p3.Drop(); err != nil {
		t.Fatal(err)
	}
	if got, applied := dump(t, p3); got != "" || applied != 0 {
		t.Fatalf("dropped p3 = %q at %d", got, applied)
	}
	if got, _ := dump(t, p4); got != "key000001=v1;key000002=v2;" {
		t.Fatalf("dropping p3 changed p4: %q", got)
	}
}

func TestViewIsConsistent(t *testing.T) {
	e := open(t, vfs.NewMem())
	defer e.Close()
	p := e.Partition(0)
	fill(t, p, 1, 3)
	v := p.View()
	defer v.Close()
	fill(t, p, 4, 6)
	if got, applied := dump(t, v); got != "key000001=v1;key000002=v2;key000003=v3;" || applied != 3 {
		t.Fatalf("view = %q at %d, want the first 3 writes at 3", got, applied)
	}
}

// stream writes p's snapshot.
func stream(t testing.TB, p *Partition) []byte {
	t.Helper()
	v := p.View()
	defer v.Close()
	var buf bytes.Buffer
	n, _, err := v.WriteSnapshot(&buf)
	if err != nil || n != int64(buf.Len()) {
		t.Fatalf("WriteSnapshot: %d bytes, %v; wrote %d", n, err, buf.Len())
	}
	return buf.Bytes()
}

func TestSnapshotStreamReplacesTheState(t *testing.T) {
	src := open(t, vfs.NewMem())
	defer src.Close()
	fill(t, src.Partition(7), 1, 3000)
	data := stream(t, src.Partition(7))

	dst := open(t, vfs.NewMem())
	defer dst.Close()
	fill(t, dst.Partition(7), 1, 10) // stale state the stream replaces
	fill(t, dst.Partition(8), 1, 2)
	b := dst.Partition(7).NewBatch()
	b.Set(3, []byte("only here"), nil)
	b.Commit(11)
	applied, err := dst.Partition(7).Ingest(bytes.NewReader(data))
	if err != nil || applied != 3000 {
		t.Fatalf("Ingest = %d, %v", applied, err)
	}
	want, _ := dump(t, src.Partition(7))
	if got, at := dump(t, dst.Partition(7)); got != want || at != 3000 {
		t.Fatalf("ingested state differs (at %d)", at)
	}
	if _, ok, _ := dst.Partition(7).Get(3, []byte("only here")); ok {
		t.Fatal("a key the stream lacks survived the ingestion")
	}
	if got, _ := dump(t, dst.Partition(8)); got != "key000001=v1;key000002=v2;" {
		t.Fatalf("ingesting partition 7 changed partition 8: %q", got)
	}
	if names, _ := dst.opts.FS.List(dst.staging); len(names) != 0 {
		t.Fatalf("staging keeps %v", names)
	}
}

// TestCorruptStreamChangesNothing flips bytes and cuts the stream short at
// many places; every such stream is refused, and the partition keeps its
// state.
func TestCorruptStreamChangesNothing(t *testing.T) {
	src := open(t, vfs.NewMem())
	defer src.Close()
	fill(t, src.Partition(1), 1, 200)
	data := stream(t, src.Partition(1))

	dst := open(t, vfs.NewMem())
	defer dst.Close()
	fill(t, dst.Partition(1), 1, 5)
	before, _ := dump(t, dst.Partition(1))
	rng := rand.New(rand.NewPCG(1, 2))
	try := func(what string, bad []byte) {
		t.Helper()
		_, err := dst.Partition(1).Ingest(bytes.NewReader(bad))
		if !errors.Is(err, ErrCorruptSnapshot) && !errors.Is(err, ErrSnapshotFormat) {
			t.Fatalf("%s: Ingest = %v, want ErrCorruptSnapshot", what, err)
		}
		if got, applied := dump(t, dst.Partition(1)); got != before || applied != 5 {
			t.Fatalf("%s: a refused stream changed the partition (applied %d)", what, applied)
		}
	}
	for range 60 {
		i := rng.IntN(len(data))
		bad := bytes.Clone(data)
		bad[i] ^= byte(1 + rng.IntN(255))
		try(fmt.Sprintf("byte %d flipped", i), bad)
	}
	for _, cut := range []int{0, 3, headerLen, headerLen + 2, headerLen + 4, len(data) / 2, len(data) - 20, len(data) - 1} {
		try(fmt.Sprintf("cut at %d of %d", cut, len(data)), data[:cut])
	}
	if names, _ := dst.opts.FS.List(dst.staging); len(names) != 0 {
		t.Fatalf("staging keeps %v", names)
	}
}

// TestCrashKeepsDataAndAppliedIndexTogether: with the engine's WAL off, a
// crash loses what was not flushed, but what survives is the state of one
// applied index, never data of one entry with the index of another.
func TestCrashKeepsDataAndAppliedIndexTogether(t *testing.T) {
	for seed := range uint64(8) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			fs := vfs.NewCrashableMem()
			e := open(t, fs)
			p := e.Partition(2)
			rng := rand.New(rand.NewPCG(seed, 9))
			n := 0
			flushed := 0
			for range 20 {
				k := 1 + rng.IntN(400)
				fill(t, p, n+1, n+k)
				n += k
				if rng.IntN(3) == 0 {
					if err := e.Flush(); err != nil {
						t.Fatal(err)
					}
					flushed = n
				}
			}
			crashed := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 50, RNG: rand.New(rand.NewPCG(seed, 1))})
			e.Close()
			e2 := open(t, crashed)
			defer e2.Close()
			got, applied := dump(t, e2.Partition(2))
			t.Logf("committed %d, flushed %d, after the crash %d", n, flushed, applied)
			if int(applied) < flushed || int(applied) > n {
				t.Fatalf("applied %d after the crash, flushed %d, committed %d", applied, flushed, n)
			}
			var want bytes.Buffer
			for i := 1; i <= int(applied); i++ {
				fmt.Fprintf(&want, "key%06d=v%d;", i, i)
			}
			if got != want.String() {
				t.Fatalf("the data after the crash is not the state at applied index %d", applied)
			}
		})
	}
}

func TestOptionsRefused(t *testing.T) {
	for _, o := range []Options{
		{},
		{Dir: "/d", CacheSize: -1},
		{Dir: "/d", MemTableSize: 1},
		{Dir: "/d", CompactionConcurrency: -1},
	} {
		if _, err := Open(o); !errors.Is(err, ErrInvalid) {
			t.Errorf("Open(%+v) = %v, want ErrInvalid", o, err)
		}
	}
}

// TestSnapshotSizeIsTheStreamsLength: SnapshotSize, which a sender
// announces before it streams, measures exactly what WriteSnapshot writes,
// across chunk boundaries and for an empty partition.
func TestSnapshotSizeIsTheStreamsLength(t *testing.T) {
	e := open(t, vfs.NewMem())
	defer e.Close()
	for _, n := range []int{0, 1, 300, 9000} {
		p := e.Partition(uint32(n))
		if n > 0 {
			fill(t, p, 1, n)
			// Values over 2 MiB in all: the stream spans several chunks,
			// and lengths need multi-byte uvarints.
			b := p.NewBatch()
			for i := range 40 {
				b.Set(2, fmt.Appendf(bytes.Repeat([]byte("k"), 200), "%02d", i), bytes.Repeat([]byte("v"), 70000))
			}
			b.Commit(uint64(n + 1))
		}
		v := p.View()
		size, err := v.SnapshotSize()
		var buf bytes.Buffer
		written, _, werr := v.WriteSnapshot(&buf)
		v.Close()
		if err != nil || werr != nil || size != int64(buf.Len()) || written != size {
			t.Fatalf("%d keys: SnapshotSize %d (%v), WriteSnapshot wrote %d (%v, reported %d)", n, size, err, buf.Len(), werr, written)
		}
	}
}

// Build swaps in the records it is handed, applied index included, in
// place of the partition's span, durably: after a crash, even with no
// flush, the partition holds them; out-of-order records, or a fill that
// fails, leave the span as it was.
func TestBuildReplacesTheSpan(t *testing.T) {
	fs := vfs.NewCrashableMem()
	e := open(t, fs)
	p := e.Partition(4)
	fill(t, p, 1, 10)
	records := func(n int) func(set func(byte, []byte, []byte) error) error {
		return func(set func(byte, []byte, []byte) error) error {
			for i := 1; i <= n; i++ {
				if err := set(1, fmt.Appendf(nil, "new%06d", i), fmt.Appendf(nil, "n%d", i)); err != nil {
					return err
				}
			}
			return nil
		}
	}
	before, _ := dump(t, p)
	for name, fill := range map[string]func(set func(byte, []byte, []byte) error) error{
		"out of order": func(set func(byte, []byte, []byte) error) error {
			return errors.Join(set(1, []byte("b"), nil), set(1, []byte("a"), nil))
		},
		"the package's space": func(set func(byte, []byte, []byte) error) error { return set(0, []byte("x"), nil) },
		"a failing fill":      func(func(byte, []byte, []byte) error) error { return errors.New("no") },
	} {
		if err := p.Build(99, fill); err == nil {
			t.Fatalf("%s: built", name)
		}
		if got, applied := dump(t, p); got != before || applied != 10 {
			t.Fatalf("%s changed the span: applied %d", name, applied)
		}
	}
	if err := p.Build(77, records(500)); err != nil {
		t.Fatal(err)
	}
	crashed := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 100, RNG: rand.New(rand.NewPCG(1, 2))})
	e.Close()
	e2 := open(t, crashed)
	defer e2.Close()
	got, applied := dump(t, e2.Partition(4))
	var want bytes.Buffer
	for i := 1; i <= 500; i++ {
		fmt.Fprintf(&want, "new%06d=n%d;", i, i)
	}
	if applied != 77 || got != want.String() {
		t.Fatalf("after a crash: applied %d, %d bytes of records; want the built state at 77", applied, len(got))
	}
	if entries, err := crashed.List("/data/staging"); err == nil && len(entries) > 0 {
		t.Fatalf("staging files left behind: %v", entries)
	}
}
