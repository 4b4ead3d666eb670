package shard

import (
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// TestSnapshotTransfersAreCapped checks that the node-wide gate holds
// snapshot transfers, outgoing (Open) and incoming (Create), to its size.
func TestSnapshotTransfersAreCapped(t *testing.T) {
	store := &gatedSnapshots{SnapshotStore: raft.NewInmemSnapshotStore(), gate: make(chan struct{}, 1)}
	sink, err := store.Create(raft.SnapshotVersionMax, 10, 1, raft.Configuration{}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sink.Write([]byte("state")); err != nil {
		t.Fatal(err)
	}
	opened := make(chan error, 1)
	go func() {
		_, rc, err := store.Open(sink.ID())
		if err == nil {
			err = rc.Close()
		}
		opened <- err
	}()
	// A wait that passes proves nothing; one that ends early proves the cap
	// broken, so a short bound suffices.
	select {
	case err := <-opened:
		t.Fatalf("a second transfer started while the only token was held (err %v)", err)
	case <-time.After(200 * time.Millisecond):
	}
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-opened:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(waitFor):
		t.Fatal("the waiting transfer did not start after the first one finished")
	}
	if len(store.gate) != 0 {
		t.Fatalf("%d tokens still held after every transfer closed", len(store.gate))
	}
}
