package raftgroup

import (
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ringkv/ringkv/internal/testing/wait"
)

func TestTimingWithDefaults(t *testing.T) {
	ms := time.Millisecond
	for _, tc := range []struct {
		name string
		in   Timing
		want Timing // when no error
		err  string
	}{
		{"zero takes every default", Timing{},
			Timing{DefaultHeartbeatTimeout, DefaultElectionTimeout, DefaultLeaderLeaseTimeout, DefaultCommitTimeout}, ""},
		{"set fields are kept", Timing{HeartbeatTimeout: 300 * ms, ElectionTimeout: 300 * ms, LeaderLeaseTimeout: 200 * ms, CommitTimeout: 20 * ms},
			Timing{300 * ms, 300 * ms, 200 * ms, 20 * ms}, ""},
		{"lease longer than heartbeat", Timing{HeartbeatTimeout: 100 * ms, ElectionTimeout: 100 * ms, LeaderLeaseTimeout: 200 * ms}, Timing{},
			"LeaderLeaseTimeout 200ms is longer than HeartbeatTimeout 100ms"},
		{"election shorter than heartbeat", Timing{HeartbeatTimeout: 2 * time.Second, ElectionTimeout: time.Second}, Timing{},
			"ElectionTimeout 1s is shorter than HeartbeatTimeout 2s"},
		{"heartbeat below raft's minimum", Timing{HeartbeatTimeout: ms, ElectionTimeout: ms, LeaderLeaseTimeout: ms}, Timing{},
			"HeartbeatTimeout is 1ms, want at least 5ms"},
		{"negative commit timeout", Timing{CommitTimeout: -ms}, Timing{}, "CommitTimeout is -1ms, want at least 1ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.in.WithDefaults()
			if tc.err != "" {
				if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want ErrInvalid naming %q", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

// nopFSM applies nothing.
type nopFSM struct{}

func (nopFSM) Apply(*raft.Log) any                 { return nil }
func (nopFSM) Snapshot() (raft.FSMSnapshot, error) { return nil, errors.New("no snapshots") }
func (nopFSM) Restore(io.ReadCloser) error         { return nil }

func TestOpenBootstrapLeader(t *testing.T) {
	timing, err := Timing{HeartbeatTimeout: 50 * time.Millisecond, ElectionTimeout: 50 * time.Millisecond,
		LeaderLeaseTimeout: 50 * time.Millisecond, CommitTimeout: 5 * time.Millisecond}.WithDefaults()
	if err != nil {
		t.Fatal(err)
	}
	addr, trans := raft.NewInmemTransport("")
	store := raft.NewInmemStore()
	g, err := Open(Config{ID: "a", Timing: timing, Snapshots: SnapshotPolicy{Threshold: 100, Interval: time.Second, TrailingLogs: 10}},
		Stores{FSM: nopFSM{}, Logs: store, Stable: store, Snapshots: raft.NewInmemSnapshotStore(), Transport: trans})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Shutdown()
	servers := []raft.Server{{ID: "a", Address: addr}}
	for i := range 2 {
		// The second call finds Raft state and must be a no-op, as on
		// every restart of an initial member.
		if err := g.Bootstrap(servers); err != nil {
			t.Fatalf("bootstrap %d: %v", i+1, err)
		}
	}
	wait.Until(t, 10*time.Second, "the lone member to lead", g.IsLeader)
	if id, got := g.Leader(); id != "a" || got != addr {
		t.Fatalf("Leader() = %s at %s, want a at %s", id, got, addr)
	}
}
