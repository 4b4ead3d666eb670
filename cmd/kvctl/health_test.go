package main

import (
	"net"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// startHealth serves only the standard health service, reporting st for the
// whole server, on a free loopback port.
func startHealth(t *testing.T, st healthpb.HealthCheckResponse_ServingStatus) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	hs := health.NewServer()
	hs.SetServingStatus("", st)
	healthpb.RegisterHealthServer(srv, hs)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

func TestHealth(t *testing.T) {
	serving := startHealth(t, healthpb.HealthCheckResponse_SERVING)
	notServing := startHealth(t, healthpb.HealthCheckResponse_NOT_SERVING)
	down := closedAddr(t)
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout string
		wantStderr string // contained; empty: stderr must be empty
	}{
		{"serving", []string{"--addr", serving, "health"}, 0, "SERVING\n", ""},
		{"flags after command", []string{"health", "--addr", serving, "--timeout", "5s"}, 0, "SERVING\n", ""},
		{"not serving", []string{"--addr", notServing, "health"}, 3, "", "NOT_SERVING, want SERVING"},
		{"nothing listening", []string{"--addr", down, "--timeout", "5s", "health"}, 3, "", "Unavailable"},
		{"extra argument", []string{"--addr", serving, "health", "x"}, 2, "", "health takes 0 argument(s), got 1"},
		{"bad timeout", []string{"--addr", serving, "--timeout", "-1s", "health"}, 2, "", "--timeout = -1s, want > 0"},
		{"unknown flag", []string{"--addr", serving, "health", "--json"}, 2, "", "json"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := kvctl(nil, tc.args...)
			if got.code != tc.wantCode {
				t.Fatalf("exit %d, want %d; stdout %q stderr %q", got.code, tc.wantCode, got.stdout, got.stderr)
			}
			if got.stdout != tc.wantStdout {
				t.Fatalf("stdout %q, want %q", got.stdout, tc.wantStdout)
			}
			if tc.wantStderr == "" && got.stderr != "" || !strings.Contains(got.stderr, tc.wantStderr) {
				t.Fatalf("stderr %q, want it to contain %q", got.stderr, tc.wantStderr)
			}
		})
	}
}
