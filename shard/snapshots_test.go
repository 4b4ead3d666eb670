package shard

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/ringkv/ringkv/fsm"
	"github.com/ringkv/ringkv/raftgroup"
)

// TestMarkerOpensAsTheEnginesState: a local snapshot is a marker; opened to
// be sent, it is the partition's stream as of now, of exactly the size its
// meta announces, and it restores into another store as the same state.
func TestMarkerOpensAsTheEnginesState(t *testing.T) {
	src := memStore(t)
	for i := 1; i <= 500; i++ {
		key := fmt.Appendf(nil, "k%03d", i)
		if _, err := src.Apply(uint64(i), fsm.Put{Key: key, Value: key, Stamp: fsm.Stamp{Version: 1}}); err != nil {
			t.Fatal(err)
		}
	}
	files, err := raft.NewFileSnapshotStoreWithLogger(t.TempDir(), 2, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	snaps := &engineSnapshots{SnapshotStore: files, store: src}
	sink, err := snaps.Create(raft.SnapshotVersionMax, 400, 1, raft.Configuration{}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	sink.Write(encodeMarker(400))
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	meta, rc, err := snaps.Open(sink.ID())
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || int64(len(data)) != meta.Size || meta.Index != 400 {
		t.Fatalf("read %d bytes (%v), meta says %d at index %d", len(data), err, meta.Size, meta.Index)
	}
	dst := memStore(t)
	if err := dst.Restore(bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if dst.AppliedIndex() != 500 || dst.Len() != 500 {
		t.Fatalf("restored applied %d, %d keys; want the engine's 500, 500", dst.AppliedIndex(), dst.Len())
	}
}

// TestRecoverBringsTheEngineLevelWithTheLatestSnapshot: a received snapshot
// whose ingestion a crash cut short is restored before raft starts; an
// engine behind a marker has lost durable writes, which is reported.
func TestRecoverBringsTheEngineLevelWithTheLatestSnapshot(t *testing.T) {
	leader := memStore(t)
	for i := 1; i <= 50; i++ {
		key := fmt.Appendf(nil, "k%02d", i)
		if _, err := leader.Apply(uint64(i), fsm.Put{Key: key, Value: key, Stamp: fsm.Stamp{Version: 1}}); err != nil {
			t.Fatal(err)
		}
	}
	snap := leader.Snapshot()
	var stream bytes.Buffer
	if _, err := snap.WriteTo(&stream); err != nil {
		t.Fatal(err)
	}
	snap.Close()
	for _, tc := range []struct {
		name    string
		content []byte
		wantErr bool
	}{
		{"received stream", stream.Bytes(), false},
		{"marker ahead of the engine", encodeMarker(50), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files, err := raft.NewFileSnapshotStoreWithLogger(t.TempDir(), 2, hclog.NewNullLogger())
			if err != nil {
				t.Fatal(err)
			}
			follower := memStore(t)
			snaps := &engineSnapshots{SnapshotStore: files, store: follower}
			sink, err := files.Create(raft.SnapshotVersionMax, 50, 1, raft.Configuration{}, 1, nil)
			if err != nil {
				t.Fatal(err)
			}
			sink.Write(tc.content)
			if err := sink.Close(); err != nil {
				t.Fatal(err)
			}
			err = snaps.recover()
			if tc.wantErr {
				if !errors.Is(err, fsm.ErrEngine) || follower.AppliedIndex() != 0 {
					t.Fatalf("recover = %v (applied %d), want ErrEngine and nothing changed", err, follower.AppliedIndex())
				}
				return
			}
			if err != nil || follower.AppliedIndex() != 50 || follower.Len() != 50 {
				t.Fatalf("recover = %v; applied %d, %d keys; want 50, 50", err, follower.AppliedIndex(), follower.Len())
			}
			if err := snaps.recover(); err != nil || follower.AppliedIndex() != 50 {
				t.Fatalf("recover of a level engine = %v, applied %d", err, follower.AppliedIndex())
			}
		})
	}
}

// TestRecoverDropsPartialSnapshots: what a crash left of a snapshot being
// received (raft's ".tmp" directory) is deleted before raft starts; the
// snapshots themselves are kept.
func TestRecoverDropsPartialSnapshots(t *testing.T) {
	base := t.TempDir()
	files, err := raft.NewFileSnapshotStoreWithLogger(base, 2, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	store := memStore(t)
	sink, err := files.Create(raft.SnapshotVersionMax, 0, 1, raft.Configuration{}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	sink.Write(encodeMarker(0))
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	partial, err := files.Create(raft.SnapshotVersionMax, 9, 1, raft.Configuration{}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	partial.Write([]byte("half a stream")) // never closed: the process died here
	dir := filepath.Join(base, "snapshots")
	snaps := &engineSnapshots{SnapshotStore: files, store: store, dir: dir}
	if err := snaps.recover(); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if len(names) != 1 || names[0] != sink.ID() {
		t.Fatalf("snapshots directory holds %v, want only %s", names, sink.ID())
	}
}

// TestSnapshotMakesTheEngineDurable: a snapshot flushes the engine before
// its marker is written, so a replica whose process dies right after (its
// memtable lost, its log truncated to the snapshot) restarts level with
// the marker. Without the flush the restarted engine would be behind a
// marker, which recover refuses as lost data. The writes are sent again if
// they meet an election (group.put).
func TestSnapshotMakesTheEngineDurable(t *testing.T) {
	g := newGroup(t, func(c *Config) {
		c.SnapshotPolicy = raftgroup.SnapshotPolicy{Threshold: 1 << 20, TrailingLogs: 0, Interval: time.Hour}
	})
	g.leader()
	var l *Replica
	for i := range 50 {
		w, err := g.put(t, fmt.Appendf(nil, "k%02d", i), []byte("v"), Strong)
		if err != nil {
			t.Fatal(err)
		}
		l = w.by
	}
	f := g.followers(l)[0]
	id := f.cfg.NodeID
	eventually(t, "the follower to apply every write", func() bool { return f.AppliedIndex() >= l.AppliedIndex() })
	if err := f.Raft().Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	// Close without a flush, as a crash would: the engine keeps only what
	// was flushed.
	g.stop(id)
	g.start(id)
	if got := g.reps[id].Store().Len(); got != 50 {
		t.Fatalf("restarted after a snapshot: %d keys, want 50", got)
	}
	// Raft must not restore its latest snapshot at start
	// (NoSnapshotRestoreOnStart): that would stream the partition out of
	// the engine and ingest it back, a restart's cost growing with the data.
	if n := g.reps[id].Stats().SnapshotsInstalled.Load(); n != 0 {
		t.Fatalf("restart installed %d snapshots, want 0", n)
	}
}
