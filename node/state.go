package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/ringkv/ringkv/cluster"
	"github.com/ringkv/ringkv/ring"
)

const stateFile = "cluster.json"

// localState is what a node keeps in DataDir/cluster.json: whose data dir
// this is, and the latest cluster metadata it has seen (its view), so that
// a restarting node knows its cluster and its replicas before the metadata
// group has caught it up. The view carries its own checksum.
type localState struct {
	NodeID string          `json:"node_id"`
	View   json.RawMessage `json:"view"`
}

// loadState reads the node's view; nil, nil if the data dir has none yet.
func loadState(dir, id string) (*cluster.State, error) {
	path := filepath.Join(dir, stateFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var ls localState
	if err := json.Unmarshal(data, &ls); err != nil {
		return nil, fmt.Errorf("%s: corrupt: %w", path, err)
	}
	if ls.NodeID != id {
		return nil, fmt.Errorf("%s belongs to node %q, not %q", path, ls.NodeID, id)
	}
	view, err := cluster.Decode(ls.View)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return view, nil
}

// saveState writes the node's view atomically: temp file, fsync, rename,
// fsync dir.
func saveState(dir, id string, view *cluster.State) error {
	enc, err := view.Encode()
	if err != nil {
		return err
	}
	data, err := json.Marshal(localState{NodeID: id, View: enc})
	if err != nil {
		return err
	}
	path := filepath.Join(dir, stateFile)
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// newView places the initial cluster. Every initial node computes the same
// view from the same --peers, since ring.Place is deterministic and the
// creation time is not part of the comparison (each node records its own).
func newView(cfg Config) (*cluster.State, error) {
	if len(cfg.Peers) < ring.ReplicationFactor {
		return nil, fmt.Errorf("--peers: a new cluster needs at least %d nodes, got %d", ring.ReplicationFactor, len(cfg.Peers))
	}
	r, err := ring.New(cfg.Partitions)
	if err != nil {
		return nil, fmt.Errorf("--partitions: %w", err)
	}
	ids := make([]ring.NodeID, len(cfg.Peers))
	members := make([]cluster.Member, len(cfg.Peers))
	self := false
	for i, peer := range cfg.Peers {
		ids[i] = ring.NodeID(peer.ID)
		members[i] = cluster.Member{ID: peer.ID, Addr: peer.Addr}
		self = self || peer.ID == cfg.ID
	}
	if !self {
		return nil, fmt.Errorf("--peers does not list this node's --id %q", cfg.ID)
	}
	asg, err := r.Place(nil, ids)
	if err != nil {
		return nil, err
	}
	return cluster.New(clusterID(cfg.Peers, cfg.Partitions, cfg.ClusterToken), members, asg, time.Unix(0, 0))
}
