package control

import (
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/ringkv/ringkv/cluster"
	"github.com/ringkv/ringkv/ring"
)

// fakeHost records what the control loop asked of it.
type fakeHost struct {
	hosted          []ring.PartitionID
	opened, dropped []ring.PartitionID
	leads           map[ring.PartitionID]bool
	purged          []ring.PartitionID
	// purge answers Purge when set (purge_test.go).
	purge func(ring.PartitionID) (int, error)
	// transfer answers Transfer when set (balance_test.go).
	transfer func(ring.PartitionID, raft.ServerID) error
}

func (h *fakeHost) Partitions() []ring.PartitionID { return h.hosted }
func (h *fakeHost) OpenReplica(p ring.PartitionID) error {
	h.opened = append(h.opened, p)
	return nil
}
func (h *fakeHost) DropReplica(p ring.PartitionID) error {
	h.dropped = append(h.dropped, p)
	return nil
}
func (h *fakeHost) Leads(p ring.PartitionID) bool { return h.leads[p] }
func (h *fakeHost) Transfer(p ring.PartitionID, id raft.ServerID, _ raft.ServerAddress) error {
	if h.transfer == nil {
		return nil
	}
	return h.transfer(p, id)
}
func (h *fakeHost) Purge(p ring.PartitionID) (int, error) {
	h.purged = append(h.purged, p)
	if h.purge == nil {
		return 0, nil
	}
	return h.purge(p)
}

// testView is a new cluster of four members, a to d, all up, with eight
// partitions placed over them.
func testView(t *testing.T) *cluster.State {
	t.Helper()
	r, err := ring.New(8)
	if err != nil {
		t.Fatal(err)
	}
	ids := []ring.NodeID{"a", "b", "c", "d"}
	asg, err := r.Place(nil, ids)
	if err != nil {
		t.Fatal(err)
	}
	var members []cluster.Member
	for _, id := range ids {
		members = append(members, cluster.Member{ID: string(id), Addr: string(id) + ":1"})
	}
	view, err := cluster.New("c1", members, asg, time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	return view
}

// TestReconcileHostsExactlyWhatTheViewPlaces: a node opens the replicas its
// view places on it and drops (deleting their data) only those that neither
// the target placement nor the recorded configuration places there.
func TestReconcileHostsExactlyWhatTheViewPlaces(t *testing.T) {
	view := testView(t)
	var want, unwanted []ring.PartitionID
	for p := range ring.PartitionID(8) {
		if view.Hosts("a", p) {
			want = append(want, p)
		} else {
			unwanted = append(unwanted, p)
		}
	}
	if len(want) == 0 || len(unwanted) == 0 {
		t.Fatalf("placement gives a %d of 8 partitions; the test needs some of each", len(want))
	}
	// a hosts one partition it should and one it should not.
	h := &fakeHost{hosted: []ring.PartitionID{want[0], unwanted[0]}}
	c := &Controller{cfg: Config{ID: "a"}, host: h, log: hclog.NewNullLogger()}
	c.reconcile(view)
	if !slices.Equal(h.opened, want[1:]) {
		t.Errorf("opened %v, want %v", h.opened, want[1:])
	}
	if !slices.Equal(h.dropped, unwanted[:1]) {
		t.Errorf("dropped %v, want %v", h.dropped, unwanted[:1])
	}
}
