package shard

import (
	"io"
	"sync"

	"github.com/hashicorp/raft"
)

// gatedSnapshots caps snapshot transfers on a node: sending one (Open, when
// a follower needs it) and receiving one (Create) each hold a token from the
// node-wide gate until the stream is closed, so a restarted node does not set
// off every partition's transfer at once. Snapshots taken locally pass
// through Create too and queue behind transfers; they are rare.
type gatedSnapshots struct {
	raft.SnapshotStore
	gate chan struct{}
}

func (g *gatedSnapshots) Create(version raft.SnapshotVersion, index, term uint64, c raft.Configuration, ci uint64, t raft.Transport) (raft.SnapshotSink, error) {
	g.gate <- struct{}{}
	sink, err := g.SnapshotStore.Create(version, index, term, c, ci, t)
	if err != nil {
		<-g.gate
		return nil, err
	}
	return &gatedSink{SnapshotSink: sink, release: g.releaser()}, nil
}

func (g *gatedSnapshots) Open(id string) (*raft.SnapshotMeta, io.ReadCloser, error) {
	g.gate <- struct{}{}
	meta, rc, err := g.SnapshotStore.Open(id)
	if err != nil {
		<-g.gate
		return nil, nil, err
	}
	return meta, &gatedReader{ReadCloser: rc, release: g.releaser()}, nil
}

func (g *gatedSnapshots) releaser() func() {
	var once sync.Once
	return func() { once.Do(func() { <-g.gate }) }
}

type gatedSink struct {
	raft.SnapshotSink
	release func()
}

func (s *gatedSink) Close() error  { defer s.release(); return s.SnapshotSink.Close() }
func (s *gatedSink) Cancel() error { defer s.release(); return s.SnapshotSink.Cancel() }

type gatedReader struct {
	io.ReadCloser
	release func()
}

func (r *gatedReader) Close() error { defer r.release(); return r.ReadCloser.Close() }
