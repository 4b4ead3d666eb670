package node

import (
	"github.com/ringkv/ringkv/ring"
	"github.com/ringkv/ringkv/router"
)

// routerDirectory is the node as its router's Directory. It is a type of
// its own because the router wants its Replica as an interface while the
// rest of the node works with the concrete *shard.Replica.
// Lookup and Addrs are the node's own.
type routerDirectory struct{ *Node }

var _ router.Directory = routerDirectory{}

// Replica is the node's replica of p, or a nil interface when it hosts
// none: returning the nil *shard.Replica as a router.Replica would make a
// non-nil interface, and the router would serve from it.
func (d routerDirectory) Replica(p ring.PartitionID) router.Replica {
	if r := d.Node.Replica(p); r != nil {
		return r
	}
	return nil
}

// Owner is the hosted replica whose store owns key (router.Directory).
func (d routerDirectory) Owner(key []byte) (ring.PartitionID, bool) {
	for p, r := range *d.replicas.Load() {
		if r.Store().Owns(key) == nil {
			return p, true
		}
	}
	return 0, false
}
