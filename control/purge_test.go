package control

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/ringkv/ringkv/ring"
)

func TestPurgeInterval(t *testing.T) {
	for _, tc := range []struct {
		ttl, want time.Duration
	}{
		{-time.Hour, 0},
		{0, 0},
		{24 * time.Hour, time.Hour}, // the default TTL: capped at an hour
		{4 * time.Hour, time.Hour},
		{2 * time.Hour, 30 * time.Minute},
		{time.Minute, 15 * time.Second},
		{2 * time.Second, time.Second}, // floored
		{time.Nanosecond, time.Second},
	} {
		if got := purgeInterval(tc.ttl); got != tc.want {
			t.Errorf("purgeInterval(%v) = %v, want %v", tc.ttl, got, tc.want)
		}
	}
}

// TestPurgeRound: a round asks for a purge of exactly the hosted partitions
// this node leads, in order; a failure leaves the rest of the round going;
// Stop ends it between partitions.
func TestPurgeRound(t *testing.T) {
	errNoQuorum := errors.New("no quorum")
	for _, tc := range []struct {
		name   string
		hosted []ring.PartitionID
		leads  []ring.PartitionID
		// fail makes these partitions' purges fail.
		fail []ring.PartitionID
		// stopAfter closes Stop during the purge of this partition.
		stopAfter *ring.PartitionID
		want      []ring.PartitionID
	}{
		{name: "leads none", hosted: []ring.PartitionID{0, 3, 5}},
		{name: "only the partitions it leads", hosted: []ring.PartitionID{0, 3, 5, 6}, leads: []ring.PartitionID{3, 6},
			want: []ring.PartitionID{3, 6}},
		{name: "a partition it leads but no longer hosts is not asked", hosted: []ring.PartitionID{1}, leads: []ring.PartitionID{1, 2},
			want: []ring.PartitionID{1}},
		{name: "a failed purge does not end the round", hosted: []ring.PartitionID{0, 1, 2}, leads: []ring.PartitionID{0, 1, 2},
			fail: []ring.PartitionID{0, 1}, want: []ring.PartitionID{0, 1, 2}},
		{name: "stop ends the round between partitions", hosted: []ring.PartitionID{0, 1, 2}, leads: []ring.PartitionID{0, 1, 2},
			stopAfter: ptr(ring.PartitionID(1)), want: []ring.PartitionID{0, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &Controller{cfg: Config{ID: "a", TombstoneTTL: time.Hour}, log: hclog.NewNullLogger(), stop: make(chan struct{})}
			h := &fakeHost{hosted: tc.hosted, leads: map[ring.PartitionID]bool{}}
			for _, p := range tc.leads {
				h.leads[p] = true
			}
			h.purge = func(p ring.PartitionID) (int, error) {
				if tc.stopAfter != nil && *tc.stopAfter == p {
					close(c.stop)
				}
				if slices.Contains(tc.fail, p) {
					return 0, errNoQuorum
				}
				return 2, nil
			}
			c.host = h
			c.purgeRound()
			if !slices.Equal(h.purged, tc.want) {
				t.Fatalf("purged %v, want %v", h.purged, tc.want)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }
