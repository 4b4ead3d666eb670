// Benchmarks of a node's storage path, on the real file system:
//
//	go test -run '^$' -bench . -benchtime 2s ./internal/storage
//
// They live in package storage_test so that they drive the engine the way
// the node does, through fsm.Store and the Raft log of raftwal, which
// package storage itself must not import. Each reports its rate and the
// p50 and p99 latency of one operation; docs/benchmarks.md records them.
package storage_test

import (
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ringkv/ringkv/fsm"
	"github.com/ringkv/ringkv/internal/storage"
	"github.com/ringkv/ringkv/raftwal"
	"github.com/ringkv/ringkv/wal"
)

const (
	// datasetKeys keys of datasetValue random (incompressible) bytes make
	// about 140 MB of SSTables, more than twice benchCache.
	datasetKeys  = 1 << 20
	datasetValue = 100
	// pebble charges its memtables to the block cache (Cache.Reserve): with
	// the node's default 32 MiB memtables, two of them take all of a 64 MiB
	// cache and every read goes to the files. Memtables of benchMemTable
	// leave most of the cache to blocks.
	benchCache    = 64 << 20
	benchMemTable = 8 << 20
	// loadBatch writes go in each entry that builds the dataset.
	loadBatch = 4096
	// hotKeys is the working set of the "hot" reads, spread over the
	// keyspace: their blocks stay in the cache.
	hotKeys = 1000
	// scanLen keys make one scan.
	scanLen = 100
)

// keyOf appends key i to dst: fixed width, so keys sort as their numbers.
func keyOf(dst []byte, i int) []byte {
	dst = append(dst, "user0000000000"...)
	for j := len(dst) - 1; i > 0; j-- {
		dst[j] = byte('0' + i%10)
		i /= 10
	}
	return dst
}

func randomValue(r *rand.Rand, dst []byte) []byte {
	for i := 0; i < len(dst); i += 8 {
		v := r.Uint64()
		for j := i; j < min(i+8, len(dst)); j++ {
			dst[j] = byte(v)
			v >>= 8
		}
	}
	return dst
}

func benchOptions(dir string) storage.Options {
	return storage.Options{Dir: dir, CacheSize: benchCache, MemTableSize: benchMemTable}
}

func openEngine(tb testing.TB, dir string) *storage.Engine {
	tb.Helper()
	e, err := storage.Open(benchOptions(dir))
	if err != nil {
		tb.Fatal(err)
	}
	return e
}

func openStore(tb testing.TB, e *storage.Engine) *fsm.Store {
	tb.Helper()
	s, err := fsm.New(fsm.Options{}, e.Partition(1))
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// dataset is the 1M-key partition the read benchmarks share, built once per
// process in a directory TestMain removes.
var dataset struct {
	once   sync.Once
	dir    string
	engine *storage.Engine
	store  *fsm.Store
	err    error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if dataset.engine != nil {
		dataset.engine.Close()
	}
	if dataset.dir != "" {
		os.RemoveAll(dataset.dir)
	}
	os.Exit(code)
}

// loadDataset returns the shared store, building it on first use.
func loadDataset(b *testing.B) (*storage.Engine, *fsm.Store) {
	dataset.once.Do(func() {
		start := time.Now()
		if dataset.dir, dataset.err = os.MkdirTemp("", "ringkv-storage-bench-"); dataset.err != nil {
			return
		}
		if dataset.err = buildDataset(dataset.dir); dataset.err != nil {
			return
		}
		built := time.Since(start)
		if dataset.engine, dataset.err = storage.Open(benchOptions(dataset.dir)); dataset.err != nil {
			return
		}
		if dataset.store, dataset.err = fsm.New(fsm.Options{}, dataset.engine.Partition(1)); dataset.err != nil {
			return
		}
		st := dataset.engine.Stats()
		b.Logf("dataset: %d keys of %d bytes built in %v; %.1f MB on disk, read amplification %d",
			datasetKeys, datasetValue, built.Round(time.Millisecond), float64(st.DiskBytes)/1e6, st.ReadAmp)
	})
	if dataset.err != nil || dataset.store == nil {
		b.Fatalf("building the dataset: %v", dataset.err)
	}
	return dataset.engine, dataset.store
}

// buildDataset writes the dataset into an engine in dir through
// Store.Apply: sorted keys, loadBatch Puts per entry, then a flush; it
// closes the engine once its compactions are done, so that the reads find
// a settled LSM. Each Put looks its key up first (the conflict rule), which
// is most of the build's time: one memtable that holds the whole dataset
// (about 190 MB of it, for the build only) keeps those lookups off
// SSTables, the one flush writes non-overlapping files, and no compaction
// runs meanwhile.
func buildDataset(dir string) error {
	e, err := storage.Open(storage.Options{Dir: dir, CacheSize: benchCache, MemTableSize: 256 << 20})
	if err != nil {
		return err
	}
	defer e.Close()
	s, err := fsm.New(fsm.Options{}, e.Partition(1))
	if err != nil {
		return err
	}
	r := rand.New(rand.NewPCG(5, 6))
	ws := make([]fsm.Write, 0, loadBatch)
	keys := make([]byte, 0, loadBatch*len(keyOf(nil, 0)))
	values := make([]byte, loadBatch*datasetValue)
	for i := range datasetKeys {
		k := len(keys)
		keys = keyOf(keys, i)
		v := values[len(ws)*datasetValue:][:datasetValue]
		ws = append(ws, fsm.Put{Key: keys[k:], Value: randomValue(r, v), Stamp: fsm.Stamp{Version: 1}})
		if len(ws) == loadBatch || i == datasetKeys-1 {
			if _, err := s.Apply(s.AppliedIndex()+1, fsm.Batch{Writes: ws}); err != nil {
				return err
			}
			ws, keys = ws[:0], keys[:0]
		}
	}
	if err := e.Flush(); err != nil {
		return err
	}
	// Wait for the compactions the flush started (pebble may leave an
	// estimated debt it does not schedule a compaction for).
	for idle, deadline := 0, time.Now().Add(time.Minute); idle < 5 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if e.Stats().CompactionsRunning == 0 {
			idle++
		} else {
			idle = 0
		}
	}
	return nil
}

// latencies collects one duration per operation.
type latencies []time.Duration

// report sorts l and reports its p50 and p99 in µs, as prefix+"p50-µs"
// and prefix+"p99-µs".
func (l latencies) report(b *testing.B, prefix string) {
	if len(l) == 0 {
		return
	}
	slices.Sort(l)
	at := func(p float64) float64 { return float64(l[int(p*float64(len(l)-1))]) / float64(time.Microsecond) }
	b.ReportMetric(at(0.50), prefix+"p50-µs")
	b.ReportMetric(at(0.99), prefix+"p99-µs")
}

// rate reports n per second of the benchmark's loop as unit.
func rate(b *testing.B, n int, unit string) {
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), unit)
}

// BenchmarkWriteApply is the node's write path for one write, as the
// leader of a partition does it: raft stores a batch of entries, one per
// write, with one StoreLogs on the shared WAL (one group commit, fsynced),
// then its FSM goroutine decodes each entry and applies it to the store in
// the engine (no sync: the WAL is the engine's log). batch is how many
// writes concurrent clients put in one group commit. A write's latency runs
// from the start of its StoreLogs to the end of its own Apply; apply-p50-µs
// and apply-p99-µs time the decode and Apply alone, apply-µs/write is their
// mean and storelogs-µs/batch the mean of the WAL's part. Each
// sub-benchmark starts from an empty store and writes random keys of a 1M
// keyspace with a winning stamp, so most writes insert.
func BenchmarkWriteApply(b *testing.B) {
	for _, size := range []int{100, 1024} {
		for _, batch := range []int{1, 16, 64} {
			b.Run(fmt.Sprintf("value=%d/batch=%d", size, batch), func(b *testing.B) {
				benchWriteApply(b, batch, size)
			})
		}
	}
}

func benchWriteApply(b *testing.B, batch, size int) {
	w, err := wal.Open(b.TempDir(), wal.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	log := raftwal.New(w, 1, 10*time.Second)
	e := openEngine(b, b.TempDir())
	defer e.Close()
	s := openStore(b, e)

	r := rand.New(rand.NewPCG(1, 2))
	logs := make([]*raft.Log, batch)
	value := make([]byte, size)
	var key []byte
	var index uint64
	lat := make(latencies, 0, 1<<16)
	applies := make(latencies, 0, 1<<16)
	var syncTime, applyTime time.Duration
	groups := 0
	for b.Loop() {
		for i := range logs {
			index++
			key = keyOf(key[:0], r.IntN(datasetKeys))
			cmd := fsm.Put{RequestID: index, Key: key, Value: randomValue(r, value), Stamp: fsm.Stamp{Version: index}}
			data, err := cmd.MarshalBinary()
			if err != nil {
				b.Fatal(err)
			}
			// The shard's entry: a flags byte, then the command.
			logs[i] = &raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: append([]byte{0}, data...), AppendedAt: time.Now()}
		}
		t0 := time.Now()
		if err := log.StoreLogs(logs); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		for _, l := range logs {
			ta := time.Now()
			cmd, err := fsm.DecodeCommand(l.Data[1:])
			if err != nil {
				b.Fatal(err)
			}
			if _, err := s.Apply(l.Index, cmd); err != nil {
				b.Fatal(err)
			}
			done := time.Now()
			lat = append(lat, done.Sub(t0))
			applies = append(applies, done.Sub(ta))
		}
		syncTime += t1.Sub(t0)
		applyTime += time.Since(t1)
		groups++
	}
	writes := groups * batch
	rate(b, writes, "writes/s")
	lat.report(b, "")
	b.ReportMetric(float64(syncTime.Microseconds())/float64(groups), "storelogs-µs/batch")
	b.ReportMetric(float64(applyTime.Nanoseconds())/1e3/float64(writes), "apply-µs/write")
	applies.report(b, "apply-")
}

// BenchmarkPointGet reads random existing keys of the 1M-key store with
// Store.Get, the path of a node's local and quorum reads. "hot" draws from
// hotKeys keys spread over the keyspace, whose blocks stay in the block
// cache; "cold" from the whole keyspace, about twice the cache, so about
// half the reads miss it. A miss is served from the OS page cache here
// (the machine's memory holds the files); a disk read would add its own
// latency on top.
func BenchmarkPointGet(b *testing.B) {
	for _, bc := range []struct {
		name   string
		keyOf  func(r *rand.Rand) int
		warmup int
	}{
		{"hot", func(r *rand.Rand) int { return r.IntN(hotKeys) * (datasetKeys / hotKeys) }, hotKeys * 4},
		{"cold", func(r *rand.Rand) int { return r.IntN(datasetKeys) }, 0},
	} {
		b.Run(bc.name, func(b *testing.B) {
			e, s := loadDataset(b)
			r := rand.New(rand.NewPCG(3, 4))
			var key []byte
			for range bc.warmup {
				s.Get(keyOf(key[:0], bc.keyOf(r)))
			}
			before := e.Stats()
			lat := make(latencies, 0, 1<<20)
			for b.Loop() {
				key = keyOf(key[:0], bc.keyOf(r))
				t0 := time.Now()
				_, ok := s.Get(key)
				lat = append(lat, time.Since(t0))
				if !ok {
					b.Fatalf("key %q missing", key)
				}
			}
			rate(b, b.N, "gets/s")
			lat.report(b, "")
			reportCacheHits(b, before, e.Stats())
		})
	}
}

// reportCacheHits reports the block cache's hit rate between two Stats.
func reportCacheHits(b *testing.B, before, after storage.Stats) {
	hits, misses := after.CacheHits-before.CacheHits, after.CacheMisses-before.CacheMisses
	if hits+misses > 0 {
		b.ReportMetric(100*float64(hits)/float64(hits+misses), "cache-hit-%")
	}
}

// BenchmarkScan reads scanLen consecutive live keys from a random starting
// key of the 1M-key store with Snapshot.Range, each key decoded and copied
// out as a reply needs. "view-per-scan" (Store.Range) opens a consistent
// view for each scan, as a request would; "one-view" scans one long-lived
// Snapshot, leaving out the view's cost.
func BenchmarkScan(b *testing.B) {
	scan := func(b *testing.B, oneView bool) {
		e, s := loadDataset(b)
		rangeFn := s.Range
		if oneView {
			snap := s.Snapshot()
			defer snap.Close()
			rangeFn = snap.Range
		}
		r := rand.New(rand.NewPCG(5, 6))
		var start []byte
		before := e.Stats()
		lat := make(latencies, 0, 1<<18)
		for b.Loop() {
			start = keyOf(start[:0], r.IntN(datasetKeys-scanLen))
			n := 0
			t0 := time.Now()
			err := rangeFn(start, nil, func(fsm.Item) bool {
				n++
				return n < scanLen
			})
			lat = append(lat, time.Since(t0))
			if err != nil || n != scanLen {
				b.Fatalf("scan from %q: %d keys, %v", start, n, err)
			}
		}
		rate(b, b.N, "scans/s")
		rate(b, b.N*scanLen, "keys/s")
		lat.report(b, "")
		reportCacheHits(b, before, e.Stats())
	}
	b.Run("view-per-scan", func(b *testing.B) { scan(b, false) })
	b.Run("one-view", func(b *testing.B) { scan(b, true) })
}

// BenchmarkSnapshotStream streams the 1M-key partition as a snapshot:
// "write" to io.Discard (View.WriteSnapshot through Snapshot.WriteTo), the
// sender's work; "write+ingest" through a pipe into a store in another
// engine (Store.Restore: Partition.Ingest verifies the stream, writes it
// into SSTables and swaps them in), a whole snapshot install with sender
// and receiver on the one machine.
func BenchmarkSnapshotStream(b *testing.B) {
	report := func(b *testing.B, size int64) {
		b.SetBytes(size)
		rate(b, b.N*datasetKeys, "keys/s")
		b.ReportMetric(b.Elapsed().Seconds()*1e3/float64(b.N), "ms/snapshot")
		b.ReportMetric(float64(size)/1e6, "MB/snapshot")
	}
	b.Run("write", func(b *testing.B) {
		_, s := loadDataset(b)
		var size int64
		for b.Loop() {
			var err error
			if size, err = stream(s, io.Discard); err != nil {
				b.Fatal(err)
			}
		}
		report(b, size)
	})
	b.Run("write+ingest", func(b *testing.B) {
		_, s := loadDataset(b)
		e := openEngine(b, b.TempDir())
		defer e.Close()
		dst := openStore(b, e)
		var size int64
		for b.Loop() {
			pr, pw := io.Pipe()
			sent := make(chan int64, 1)
			go func() {
				n, err := stream(s, pw)
				pw.CloseWithError(err)
				sent <- n
			}()
			err := dst.Restore(pr)
			pr.CloseWithError(io.ErrClosedPipe) // ends the sender if Restore stopped early
			size = <-sent
			if err != nil {
				b.Fatal(err)
			}
			if dst.Len() != datasetKeys || dst.AppliedIndex() != s.AppliedIndex() {
				b.Fatalf("restored %d keys at index %d, want %d at %d", dst.Len(), dst.AppliedIndex(), datasetKeys, s.AppliedIndex())
			}
		}
		report(b, size)
	})
}

// stream writes a snapshot of s's current state to w.
func stream(s *fsm.Store, w io.Writer) (int64, error) {
	snap := s.Snapshot()
	defer snap.Close()
	return snap.WriteTo(w)
}
