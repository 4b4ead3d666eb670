package fsm

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/ringkv/ringkv/internal/storage"
)

const (
	benchKeys      = 1 << 20
	benchValueSize = 64
	benchBatch     = 1024
)

// bench is the 1M-key store the benchmarks share, built once per process
// because building it dominates a short run.
var bench struct {
	once  sync.Once
	store *Store
	keys  [][]byte
	// version orders every benchmark write after all earlier ones, so each
	// Put wins and does the full work of a write.
	version atomic.Uint64
}

func benchKey(i int) []byte {
	return fmt.Appendf(nil, "user:%016x", uint64(i)*0x9E3779B97F4A7C15)
}

func benchStore(b *testing.B) (*Store, [][]byte) {
	bench.once.Do(func() {
		// Shared by every benchmark of the process: its engine outlives
		// the benchmark that builds it, so no test cleanup closes it.
		e, err := storage.Open(storage.Options{Dir: "/engine", FS: vfs.NewMem(), CacheSize: 256 << 20})
		if err != nil {
			b.Fatal(err)
		}
		s, err := New(Options{}, e.Partition(1))
		if err != nil {
			b.Fatal(err)
		}
		keys := make([][]byte, benchKeys)
		value := bytes.Repeat([]byte("v"), benchValueSize)
		ws := make([]Write, 0, benchBatch)
		for i := range keys {
			keys[i] = benchKey(i)
			ws = append(ws, Put{Key: keys[i], Value: value, Stamp: Stamp{Version: bench.version.Add(1)}})
			if len(ws) == benchBatch {
				apply(b, s, Batch{Writes: ws})
				ws = ws[:0]
			}
		}
		bench.store, bench.keys = s, keys
	})
	if bench.store == nil {
		b.Fatal("building the benchmark store failed")
	}
	return bench.store, bench.keys
}

// randomPut returns a winning overwrite of a random existing key.
func randomPut(r *rand.Rand, keys [][]byte) Put {
	var value [benchValueSize]byte
	binary.LittleEndian.PutUint64(value[:], r.Uint64())
	return Put{Key: keys[r.IntN(len(keys))], Value: value[:], Stamp: Stamp{Version: bench.version.Add(1)}}
}

// timedPut applies a random winning Put as the next log entry, recording
// how long Apply took.
func timedPut(s *Store, r *rand.Rand, keys [][]byte, lat *latencies) error {
	p := randomPut(r, keys)
	t0 := time.Now()
	_, err := s.Apply(s.AppliedIndex()+1, p)
	*lat = append(*lat, time.Since(t0))
	return err
}

// latencies collects durations and reports their percentiles.
type latencies []time.Duration

func (l latencies) report(b *testing.B, name string, unit time.Duration, unitName string) {
	if len(l) == 0 {
		return
	}
	slices.Sort(l)
	at := func(p float64) float64 { return float64(l[int(p*float64(len(l)-1))]) / float64(unit) }
	b.ReportMetric(at(0.50), name+"-p50-"+unitName)
	b.ReportMetric(at(0.99), name+"-p99-"+unitName)
	b.ReportMetric(at(1), name+"-max-"+unitName)
}

// startWriter applies random winning Puts in a loop, like a Raft apply loop
// under load, timing each Apply. stop ends it and returns the timings.
func startWriter(b *testing.B, s *Store, keys [][]byte) (stop func() latencies) {
	var done atomic.Bool
	out := make(chan latencies)
	go func() {
		r := rand.New(rand.NewPCG(7, 8))
		lat := make(latencies, 0, 1<<20)
		for !done.Load() {
			if err := timedPut(s, r, keys, &lat); err != nil {
				b.Error(err)
				break
			}
		}
		out <- lat
	}()
	return func() latencies {
		done.Store(true)
		return <-out
	}
}

// BenchmarkGet reads random keys of the 1M-key store with Store.Get, which
// goes through the point index, timing one op in 16 for the latency
// percentiles. Each key is first copied into a request buffer, as a server
// decodes it, so the miss on the benchmark's own key table is not counted.
// "hot" draws from 1,000 keys that stay in cache, separating the CPU cost of
// a lookup from the memory latency that dominates "idle". "snapshot" reads
// through a Snapshot's Get, for comparison.
func BenchmarkGet(b *testing.B) {
	s, keys := benchStore(b)
	get := func(keys [][]byte, read func([]byte) (Item, bool)) func(*testing.B) {
		return func(b *testing.B) {
			r := rand.New(rand.NewPCG(1, 2))
			lat := make(latencies, 0, 1<<20)
			var k []byte
			i := 0
			for b.Loop() {
				k = append(k[:0], keys[r.IntN(len(keys))]...)
				if i++; i&15 != 0 {
					read(k)
					continue
				}
				t0 := time.Now()
				_, ok := read(k)
				lat = append(lat, time.Since(t0))
				if !ok {
					b.Fatalf("key %q missing", k)
				}
			}
			lat.report(b, "get", time.Nanosecond, "ns")
		}
	}
	b.Run("idle", get(keys, s.Get))
	b.Run("hot", get(keys[:1000], s.Get))
	b.Run("with-writer", func(b *testing.B) {
		stop := startWriter(b, s, keys)
		get(keys, s.Get)(b)
		w := stop()
		b.ReportMetric(float64(len(w))/b.Elapsed().Seconds(), "writes/s")
	})
	snap := s.Snapshot()
	defer snap.Close()
	b.Run("snapshot", get(keys, snap.Get))
}

// BenchmarkApply overwrites random keys of the 1M-key store, one Put per
// log entry and 64 per Batch entry.
func BenchmarkApply(b *testing.B) {
	s, keys := benchStore(b)
	r := rand.New(rand.NewPCG(3, 4))
	b.Run("put", func(b *testing.B) {
		b.ReportAllocs()
		lat := make(latencies, 0, 1<<20)
		for b.Loop() {
			if err := timedPut(s, r, keys, &lat); err != nil {
				b.Fatal(err)
			}
		}
		// The same percentiles BenchmarkSnapshot reports for its writer, here
		// with no snapshot taken: the baseline to compare them with.
		lat.report(b, "apply", time.Microsecond, "µs")
	})
	b.Run("batch64", func(b *testing.B) {
		b.ReportAllocs()
		ws := make([]Write, 64)
		for b.Loop() {
			for i := range ws {
				ws[i] = randomPut(r, keys)
			}
			if _, err := s.Apply(s.AppliedIndex()+1, Batch{Writes: ws}); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(ws)), "ns/write")
	})
}

// BenchmarkSnapshot takes, serializes and restores snapshots of the 1M-key
// store while a writer applies Puts, reporting how long the snapshot call
// takes and how long the writer's Applies took meanwhile.
func BenchmarkSnapshot(b *testing.B) {
	s, keys := benchStore(b)
	b.Run("take", func(b *testing.B) {
		stop := startWriter(b, s, keys)
		lat := make(latencies, 0, 1<<20)
		for b.Loop() {
			t0 := time.Now()
			snap := s.Snapshot()
			if len(lat) < cap(lat) {
				lat = append(lat, time.Since(t0))
			}
			live, _, err := snap.Counts()
			snap.Close()
			if err != nil || live < benchKeys {
				b.Fatalf("snapshot holds %d keys (%v)", live, err)
			}
		}
		stop().report(b, "writer-apply", time.Microsecond, "µs")
		lat.report(b, "snapshot", time.Nanosecond, "ns")
	})
	b.Run("write", func(b *testing.B) {
		stop := startWriter(b, s, keys)
		var size int64
		for b.Loop() {
			snap := s.Snapshot()
			n, err := snap.WriteTo(io.Discard)
			snap.Close()
			if err != nil {
				b.Fatal(err)
			}
			size = n
		}
		stop().report(b, "writer-apply", time.Microsecond, "µs")
		b.SetBytes(size)
		b.ReportMetric(float64(size)/(1<<20), "MiB")
	})
	b.Run("restore", func(b *testing.B) {
		image := bytes.NewBuffer(storeBytes(b, s))
		b.SetBytes(int64(image.Len()))
		for b.Loop() {
			dst := newStore(b, Options{})
			if err := dst.Restore(bytes.NewReader(image.Bytes())); err != nil {
				b.Fatal(err)
			}
		}
	})
}
