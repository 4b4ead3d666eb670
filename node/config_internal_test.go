package node

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ringkv/ringkv/cluster"
	"github.com/ringkv/ringkv/metrics"
	"github.com/ringkv/ringkv/raftgroup"
	"github.com/ringkv/ringkv/shard"
)

func TestConfigWithDefaults(t *testing.T) {
	base := Config{ID: "n1", Listen: "127.0.0.1:7001", DataDir: "/tmp/x"}
	t.Run("defaults", func(t *testing.T) {
		got, err := base.withDefaults()
		if err != nil {
			t.Fatal(err)
		}
		wantRaft, _ := raftgroup.Timing{}.WithDefaults()
		wantTimeouts, _ := cluster.Timeouts{}.WithDefaults()
		if got.Raft != wantRaft || got.Timeouts != wantTimeouts || got.OpTimeout != shard.DefaultOpTimeout ||
			got.MaxMoves != DefaultMaxMoves || got.BalanceInterval != DefaultBalanceInterval ||
			got.ManageInterval != DefaultManageInterval || got.PromoteMaxLag != DefaultPromoteMaxLag ||
			got.ReadyMaxLag != DefaultReadyMaxLag || got.MaxSnapshotTransfers != DefaultMaxSnapshotTransfers ||
			got.RaftLog != shard.LogWAL || got.Logger == nil ||
			got.TombstoneTTL != DefaultTombstoneTTL || got.Limits.TombstoneGrace != DefaultTombstoneTTL {
			t.Fatalf("defaults not applied: %+v", got)
		}
	})
	for _, tc := range []struct {
		name  string
		tweak func(*Config)
		want  string
	}{
		{"no id", func(c *Config) { c.ID = "" }, "ID is required"},
		{"no data dir", func(c *Config) { c.DataDir = "" }, "DataDir is required"},
		{"listen not host:port", func(c *Config) { c.Listen = "7001" }, `Listen "7001"`},
		{"partitions not a power of two", func(c *Config) { c.Partitions = 12 }, "Partitions:"},
		{"unknown raft log", func(c *Config) { c.RaftLog = "sqlite" }, `RaftLog "sqlite"`},
		{"raft timing", func(c *Config) { c.Raft.LeaderLeaseTimeout = 2 * time.Second }, "Raft: invalid configuration: LeaderLeaseTimeout 2s"},
		{"failure timeouts", func(c *Config) { c.Timeouts.SuspectAfter = time.Minute }, "SuspectAfter (1m0s) <= DeadAfter (30s)"},
		{"max moves", func(c *Config) { c.MaxMoves = -1 }, "MaxMoves is -1"},
		{"snapshot transfers", func(c *Config) { c.MaxSnapshotTransfers = -2 }, "MaxSnapshotTransfers is -2"},
		{"op timeout", func(c *Config) { c.OpTimeout = -time.Second }, "OpTimeout is -1s"},
		{"tombstone grace beside the TTL", func(c *Config) { c.Limits.TombstoneGrace = time.Hour }, "Limits.TombstoneGrace is 1h0m0s: set TombstoneTTL instead"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base
			tc.tweak(&c)
			_, err := c.withDefaults()
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want ErrInvalidConfig naming %q", err, tc.want)
			}
		})
	}
}

// TestDerivedValuesUseDefaults: derived values are computed
// after defaults, so a library user who leaves the Raft timing zero still
// gets heartbeat coalescing (a window of HeartbeatTimeout/10).
func TestDerivedValuesUseDefaults(t *testing.T) {
	cfg, err := Config{ID: "n1", Listen: "127.0.0.1:0", DataDir: t.TempDir()}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if w := heartbeatWindow(cfg); w != raftgroup.DefaultHeartbeatTimeout/10 || w == 0 {
		t.Fatalf("heartbeat window %v, want %v", w, raftgroup.DefaultHeartbeatTimeout/10)
	}
}

// TestHeartbeatWindowStaysInsideTheLease: the window is raft's shortest
// heartbeat gap unless a short lease caps it at LeaderLeaseTimeout/5, so a
// heartbeat round (at most HeartbeatTimeout/5 + the window) never outlasts
// the lease a leader must renew.
func TestHeartbeatWindowStaysInsideTheLease(t *testing.T) {
	ms := time.Millisecond
	for _, tc := range []struct {
		heartbeat, lease, want time.Duration
	}{
		{400 * ms, 200 * ms, 40 * ms},
		{1000 * ms, 500 * ms, 100 * ms},
		{400 * ms, 100 * ms, 20 * ms},
		{1000 * ms, 100 * ms, 20 * ms},
	} {
		var cfg Config
		cfg.Raft.HeartbeatTimeout, cfg.Raft.LeaderLeaseTimeout = tc.heartbeat, tc.lease
		w := heartbeatWindow(cfg)
		if w != tc.want {
			t.Errorf("heartbeat %v, lease %v: window %v, want %v", tc.heartbeat, tc.lease, w, tc.want)
		}
		if round := tc.heartbeat/5 + w; round >= tc.lease && tc.lease >= tc.heartbeat/2 {
			t.Errorf("heartbeat %v, lease %v: a round takes up to %v, past the lease", tc.heartbeat, tc.lease, round)
		}
	}
}

// TestDefaultUpWindowFollowsTheTiming: metrics cannot import raftgroup, so
// its default up window restates three default heartbeat timeouts.
func TestDefaultUpWindowFollowsTheTiming(t *testing.T) {
	if want := 3 * raftgroup.DefaultHeartbeatTimeout; metrics.DefaultUpWindow != want {
		t.Fatalf("metrics.DefaultUpWindow = %v, want %v", metrics.DefaultUpWindow, want)
	}
}

// TestTombstoneTTL: the TTL is the one setting of tombstone purges; the
// replicas' cutoff (Limits.TombstoneGrace) follows it, and a negative TTL
// means the control loop never purges.
func TestTombstoneTTL(t *testing.T) {
	for _, tc := range []struct {
		ttl, wantTTL, wantGrace time.Duration
	}{
		{0, DefaultTombstoneTTL, DefaultTombstoneTTL},
		{time.Hour, time.Hour, time.Hour},
		{-1, -1, 0}, // never purged: no cutoff is ever computed
	} {
		got, err := Config{ID: "n1", Listen: "127.0.0.1:7001", DataDir: "/tmp/x", TombstoneTTL: tc.ttl}.withDefaults()
		if err != nil {
			t.Fatal(err)
		}
		if got.TombstoneTTL != tc.wantTTL || got.Limits.TombstoneGrace != tc.wantGrace {
			t.Errorf("TombstoneTTL %v: got TTL %v, grace %v; want %v, %v", tc.ttl, got.TombstoneTTL, got.Limits.TombstoneGrace, tc.wantTTL, tc.wantGrace)
		}
	}
}

// TestStartRefusesPartsOptions: the options the WAL and the storage engine
// check themselves are Config errors too, as the kvnode flags that set
// them are usage errors.
func TestStartRefusesPartsOptions(t *testing.T) {
	for _, tc := range []struct {
		name  string
		tweak func(*Config)
		want  string
	}{
		{"memtable size", func(c *Config) { c.Storage.MemTableSize = 1 }, "Storage: storage: invalid options: MemTableSize is 1"},
		{"cache size", func(c *Config) { c.Storage.CacheSize = -1 }, "CacheSize is -1"},
		{"wal segment size", func(c *Config) { c.WALSegmentSize = 1 }, "WALSegmentSize: wal: invalid Options.SegmentSize 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Config{ID: "n1", Listen: "127.0.0.1:0", DataDir: t.TempDir()}
			tc.tweak(&c)
			n, err := Start(c)
			if err == nil {
				n.Close()
			}
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want ErrInvalidConfig naming %q", err, tc.want)
			}
		})
	}
}

// A new cluster's partition count is fitted to its initial nodes, as the
// cluster would split to at that size, unless given.
func TestPartitionsFittedToThePeers(t *testing.T) {
	peers := func(n int) []Peer {
		var out []Peer
		for i := range n {
			out = append(out, Peer{ID: string(rune('a' + i)), Addr: "h:1"})
		}
		return out
	}
	for _, tc := range []struct {
		name             string
		peers, perNode   int
		partitions, want int
	}{
		{"3 nodes", 3, 0, 0, 8},
		{"6 nodes", 6, 0, 0, 16},
		{"9 nodes", 9, 0, 0, 32},
		{"3 nodes at 1 per node", 3, 1, 0, 4},
		{"given", 3, 0, 2, 2},
		{"no split for size", 3, -1, 0, 16},
		{"joining (no peers)", 0, 0, 0, 16},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Config{ID: "n1", Listen: "127.0.0.1:7001", DataDir: "/tmp/x", Peers: peers(tc.peers), PartitionsPerNode: tc.perNode, Partitions: tc.partitions}
			got, err := c.withDefaults()
			if err != nil || got.Partitions != tc.want {
				t.Fatalf("Partitions = %d, %v; want %d", got.Partitions, err, tc.want)
			}
		})
	}
}
