package node

import (
	"google.golang.org/grpc"

	"github.com/ringkv/ringkv/admin"
	"github.com/ringkv/ringkv/cluster"
)

// adminNode is the node as its Admin service sees it.
type adminNode struct{ *Node }

var _ admin.Node = adminNode{}

func (a adminNode) Advertise() string { return a.advertise }

func (a adminNode) Meta() *cluster.Meta { return a.meta.Load() }

func (a adminNode) Adopt(view *cluster.State) error { return a.startCluster(view, false) }

func (a adminNode) Heard(id string) bool {
	ctl := a.ctl.Load()
	if ctl != nil {
		ctl.Heard(id)
	}
	return ctl != nil
}

func (a adminNode) EngineDiskBytes() uint64 { return a.engine.Stats().DiskBytes }

func (a adminNode) Dial(addr string) (grpc.ClientConnInterface, error) { return a.pool.Dial(addr) }
