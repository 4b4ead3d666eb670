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
		{"raft log", []string{"--raft-log", "sqlite"}, `--raft-log "sqlite"`},
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
