package wal

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

const benchStreams = 16

// BenchmarkWALAppend measures durable 100-byte appends over 16 streams on
// the real file system. With at most one writer per stream each writer
// appends directly; with more, each stream has a dispatcher goroutine that
// gathers its writers' records into one Append, as a Raft leader batches
// proposals, since a stream's indexes must be appended in order.
func BenchmarkWALAppend(b *testing.B) {
	for _, writers := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			w := mustOpen(b, b.TempDir(), Options{})
			defer mustClose(b, w)
			data := make([]byte, 100)
			submit := directAppend(w, data, writers)
			if writers > benchStreams {
				var stop func()
				submit, stop = dispatchAppend(w, data)
				defer stop()
			}
			lat := make([][]time.Duration, writers)
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for g := range writers {
				n := b.N / writers
				if g < b.N%writers {
					n++
				}
				lat[g] = make([]time.Duration, 0, n)
				wg.Go(func() {
					for k := range n {
						t0 := time.Now()
						if err := submit(g, k); err != nil {
							b.Error(err)
							return
						}
						lat[g] = append(lat[g], time.Since(t0))
					}
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			reportRate(b, elapsed, slices.Concat(lat...))
			b.ReportMetric(float64(w.Stats().Records)/float64(w.Stats().Syncs), "records/sync")
		})
	}
}

// directAppend makes writer g own streams g, g+writers, …, appending to
// them in turn.
func directAppend(w *WAL, data []byte, writers int) func(g, k int) error {
	next := make([]uint64, benchStreams)
	return func(g, k int) error {
		owned := (benchStreams-g-1)/writers + 1
		s := g + writers*(k%owned)
		next[s]++
		return w.Append(context.Background(), Entry{Stream: uint64(s), Index: next[s], Data: data})
	}
}

// dispatchAppend spreads records over the streams round robin; each
// stream's goroutine appends everything queued for it in one call.
func dispatchAppend(w *WAL, data []byte) (submit func(g, k int) error, stop func()) {
	queues := make([]chan chan error, benchStreams)
	var wg sync.WaitGroup
	for s := range queues {
		queues[s] = make(chan chan error, 1024)
		wg.Go(func() {
			next := uint64(1)
			var batch []chan error
			var entries []Entry
			for first := range queues[s] {
				batch = append(batch[:0], first)
			drain:
				for len(batch) < 256 {
					select {
					case c, ok := <-queues[s]:
						if !ok {
							break drain
						}
						batch = append(batch, c)
					default:
						break drain
					}
				}
				entries = entries[:0]
				for range batch {
					entries = append(entries, Entry{Stream: uint64(s), Index: next, Data: data})
					next++
				}
				err := w.Append(context.Background(), entries...)
				for _, c := range batch {
					c <- err
				}
			}
		})
	}
	submit = func(g, k int) error {
		c := make(chan error, 1)
		queues[(g+k)%benchStreams] <- c
		return <-c
	}
	stop = func() {
		for _, q := range queues {
			close(q)
		}
		wg.Wait()
	}
	return submit, stop
}

// BenchmarkRawSync is the floor: one writer, a 100-byte write then
// fdatasync, through the same File the WAL uses. "plain" grows the file
// with each write; "preallocated" writes into space fallocated beforehand,
// as the WAL does.
func BenchmarkRawSync(b *testing.B) {
	for _, bc := range []struct {
		name     string
		prealloc bool
		files    int
	}{
		{"file=plain", false, 1},
		{"file=preallocated", true, 1},
		// Three nodes of a cluster on one machine share its disk.
		{"file=preallocated/files=3", true, 3},
	} {
		b.Run(bc.name, func(b *testing.B) {
			files := make([]File, bc.files)
			for i := range files {
				f, err := OSFS().Create(filepath.Join(b.TempDir(), fmt.Sprintf("raw%d", i)))
				if err != nil {
					b.Fatal(err)
				}
				defer f.Close()
				if bc.prealloc {
					if err := f.Preallocate(int64(b.N+1) * 100); err != nil {
						b.Fatal(err)
					}
				}
				if err := f.Sync(); err != nil {
					b.Fatal(err)
				}
				files[i] = f
			}
			lats := make([][]time.Duration, len(files))
			errs := make(chan error, len(files))
			b.ResetTimer()
			start := time.Now()
			for w, f := range files {
				go func() {
					data := make([]byte, 100)
					for i := w; i < b.N; i += len(files) {
						t0 := time.Now()
						if _, err := f.WriteAt(data, int64(i)*100); err != nil {
							errs <- err
							return
						}
						if err := f.Sync(); err != nil {
							errs <- err
							return
						}
						lats[w] = append(lats[w], time.Since(t0))
					}
					errs <- nil
				}()
			}
			for range files {
				if err := <-errs; err != nil {
					b.Fatal(err)
				}
			}
			reportRate(b, time.Since(start), slices.Concat(lats...))
		})
	}
}

// reportRate reports records per second and latency percentiles.
func reportRate(b *testing.B, elapsed time.Duration, lat []time.Duration) {
	slices.Sort(lat)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "records/s")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}
