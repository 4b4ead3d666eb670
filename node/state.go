package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/ringkv/ringkv/ring"
)

const stateFile = "cluster.json"

// clusterState is what a node records at first start: the cluster's
// identity and shape. Assignment carries its own checksum.
type clusterState struct {
	ClusterID  string `json:"cluster_id"`
	NodeID     string `json:"node_id"`
	Partitions int    `json:"partitions"`
	Nodes      []Peer `json:"nodes"`
	Assignment []byte `json:"assignment"`

	assignment *ring.Assignment
	addrs      map[string]string
}

func (s *clusterState) addrOf(id string) string { return s.addrs[id] }

func loadOrCreateState(cfg Config) (*clusterState, error) {
	path := filepath.Join(cfg.DataDir, stateFile)
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		s := &clusterState{}
		if err := json.Unmarshal(data, s); err != nil {
			return nil, fmt.Errorf("%s: corrupt: %w", path, err)
		}
		if s.NodeID != cfg.ID {
			return nil, fmt.Errorf("%s belongs to node %q, not %q", path, s.NodeID, cfg.ID)
		}
		if err := s.index(); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return s, nil
	case !errors.Is(err, os.ErrNotExist):
		return nil, err
	}
	s, err := newState(cfg)
	if err != nil {
		return nil, err
	}
	if err := checkPeers(s); err != nil {
		return nil, err
	}
	return s, s.save(path)
}

// newState places the initial cluster. Every initial node computes the same
// placement from the same --peers, since ring.Place is deterministic.
func newState(cfg Config) (*clusterState, error) {
	if len(cfg.Peers) < ring.ReplicationFactor {
		return nil, fmt.Errorf("--peers: a new cluster needs at least %d nodes, got %d", ring.ReplicationFactor, len(cfg.Peers))
	}
	p := cfg.Partitions
	if p == 0 {
		p = ring.DefaultPartitions
	}
	r, err := ring.New(p)
	if err != nil {
		return nil, fmt.Errorf("--partitions: %w", err)
	}
	ids := make([]ring.NodeID, len(cfg.Peers))
	self := false
	for i, peer := range cfg.Peers {
		ids[i] = ring.NodeID(peer.ID)
		self = self || peer.ID == cfg.ID
	}
	if !self {
		return nil, fmt.Errorf("--peers does not list this node's --id %q", cfg.ID)
	}
	asg, err := r.Place(nil, ids)
	if err != nil {
		return nil, err
	}
	enc, err := asg.MarshalBinary()
	if err != nil {
		return nil, err
	}
	s := &clusterState{ClusterID: clusterID(cfg.Peers, p), NodeID: cfg.ID, Partitions: p, Nodes: cfg.Peers, Assignment: enc}
	return s, s.index()
}

func (s *clusterState) index() error {
	s.assignment = new(ring.Assignment)
	if err := s.assignment.UnmarshalBinary(s.Assignment); err != nil {
		return err
	}
	if s.assignment.Partitions() != s.Partitions {
		return fmt.Errorf("assignment has %d partitions, state says %d", s.assignment.Partitions(), s.Partitions)
	}
	s.addrs = map[string]string{}
	for _, p := range s.Nodes {
		s.addrs[p.ID] = p.Addr
	}
	for _, id := range s.assignment.Nodes() {
		if s.addrs[string(id)] == "" {
			return fmt.Errorf("node %q of the assignment has no address", id)
		}
	}
	return nil
}

// save writes the state atomically: temp file, fsync, rename, fsync dir.
func (s *clusterState) save(path string) error {
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
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
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
