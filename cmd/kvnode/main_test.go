package main

import (
	"strings"
	"testing"
)

func TestBadFlagsAreUsageErrors(t *testing.T) {
	base := []string{"--id", "n1", "--data-dir", t.TempDir()}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"log level", []string{"--log-level", "loud"}, `--log-level "loud"`},
		{"log format", []string{"--log-format", "xml"}, `--log-format "xml": want text or json`},
		{"contention profiles without pprof", []string{"--pprof-contention"}, "--pprof-contention needs --pprof"},
		{"sample ratio above 1", []string{"--trace-sample-ratio", "1.5"}, "--trace-sample-ratio 1.5: must be in [0, 1]"},
		{"negative sample ratio", []string{"--trace-sample-ratio", "-0.1"}, "must be in [0, 1]"},
		{"otlp endpoint", []string{"--otlp-endpoint", "collector"}, `--otlp-endpoint "collector"`},
		// Checked by node.Config, so library users get them too.
		{"raft log", []string{"--raft-log", "sqlite"}, `RaftLog "sqlite": want "wal" or "boltdb"`},
		{"max moves", []string{"--max-moves", "-1"}, "MaxMoves is -1, want at least 1"},
		{"failure timeouts out of order", []string{"--suspect-after", "10s", "--dead-after", "5s"}, "want 0 < SuspectAfter (10s) <= DeadAfter (5s)"},
		{"listen address", []string{"--listen", "7001"}, `Listen "7001"`},
		{"lease longer than heartbeat", []string{"--leader-lease", "2s"}, "LeaderLeaseTimeout 2s is longer than HeartbeatTimeout"},
		{"partitions", []string{"--partitions", "12"}, "Partitions:"},
		{"peers", []string{"--peers", "n1=127.0.0.1"}, "--peers: n1: address"},
		{"tombstone ttl", []string{"--tombstone-ttl", "a day"}, `invalid value "a day" for flag -tombstone-ttl`},
		// Checked by the storage engine when the node opens it.
		{"memtable size", []string{"--memtable-size", "1"}, "MemTableSize is 1, want 1 MiB to 4 GiB"},
		{"compaction concurrency", []string{"--compaction-concurrency", "-1"}, "CompactionConcurrency is -1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stderr strings.Builder
			if code := run(append(base, tc.args...), &stderr); code != 2 || !strings.Contains(stderr.String(), tc.want) {
				t.Fatalf("exit %d, stderr %q; want 2 and %q", code, stderr.String(), tc.want)
			}
		})
	}
}

func TestTracerProviderEndpoints(t *testing.T) {
	for _, ep := range []string{"127.0.0.1:4317", "http://127.0.0.1:4317", "https://collector.example:4317"} {
		tp, err := tracerProvider(ep, 0.5, "n1")
		if err != nil {
			t.Errorf("%s: %v", ep, err)
			continue
		}
		if err := tp.Shutdown(t.Context()); err != nil {
			t.Errorf("%s: shutdown: %v", ep, err)
		}
	}
}
