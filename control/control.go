package control

import (
	"errors"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"google.golang.org/grpc"

	"github.com/ringkv/ringkv/cluster"
	"github.com/ringkv/ringkv/ring"
)

// ErrDeferred is what a Host answers for a step it cannot take yet but
// will: the next round tries again, with no error logged.
var ErrDeferred = errors.New("control: deferred")

// Host is what the control loop asks of its node.
type Host interface {
	// Partitions lists the partitions the node runs a replica of, in
	// order.
	Partitions() []ring.PartitionID
	// OpenReplica starts the node's replica of p, empty or recovered; a
	// no-op if it runs.
	OpenReplica(p ring.PartitionID) error
	// DropReplica stops the node's replica of p and deletes its data.
	DropReplica(p ring.PartitionID) error
	// Leads reports whether the node's replica of p leads its group.
	Leads(p ring.PartitionID) bool
	// Transfer hands leadership of p, which the node leads, to the replica
	// id at addr.
	Transfer(p ring.PartitionID, id raft.ServerID, addr raft.ServerAddress) error
	// Purge has the node's replica of p, which must lead its group, purge
	// the tombstones older than the TTL, and reports how many it removed.
	Purge(p ring.PartitionID) (int, error)
}

// Config describes a node's control loop. Every field is required but
// Logger, BalanceInterval and TombstoneTTL; the node validated the
// durations.
type Config struct {
	ID        string // the node's id
	Advertise string // the address the node's peers reach it at
	Meta      *cluster.Meta
	// View is the node's latest view of the cluster metadata, never nil.
	View func() *cluster.State
	// ViewChanged fires when View has a newer view.
	ViewChanged <-chan struct{}
	// Dial returns a shared client connection to another node.
	Dial func(addr string) (grpc.ClientConnInterface, error)
	// OnRemoved is called once if the cluster refused this node (it was
	// removed); the node must stop.
	OnRemoved func(error)
	Logger    hclog.Logger

	Timeouts        cluster.Timeouts
	ManageInterval  time.Duration
	MaxMoves        int
	PromoteMaxLag   uint64
	BalanceInterval time.Duration // 0 or less: never
	// TombstoneTTL is how long a delete's tombstone is kept before a purge
	// removes it; it sets how often purges are proposed (purgeInterval).
	// The cutoff is the replicas' own (Host.Purge). 0 or less: never.
	TombstoneTTL time.Duration
	// PartitionsPerNode has the metadata leader split until the cluster
	// has cluster.FittedPartitions(placeable members, PartitionsPerNode)
	// partitions; 0 or less: no split for the cluster's size.
	PartitionsPerNode int
	// SplitSize and SplitWriteRate have the metadata leader split once
	// more whenever a partition's primary reports more bytes on disk, or
	// more committed entries a second, than they say, sampled every
	// SplitCheckInterval (split.go); 0 or less: no such split.
	SplitSize          uint64
	SplitWriteRate     float64
	SplitCheckInterval time.Duration
}

// Controller runs the control loop of one node.
type Controller struct {
	cfg    Config
	host   Host
	log    hclog.Logger
	health health
	stop   chan struct{}
	wg     sync.WaitGroup
}

// Start starts the loops.
func Start(cfg Config, host Host) *Controller {
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	c := &Controller{cfg: cfg, host: host, log: cfg.Logger, stop: make(chan struct{})}
	c.wg.Add(3)
	go c.hostReplicas()
	go c.heartbeat()
	go c.manage()
	if cfg.BalanceInterval > 0 {
		c.wg.Add(1)
		go c.balancePrimaries()
	}
	if cfg.TombstoneTTL > 0 {
		c.wg.Add(1)
		go c.purgeTombstones()
	}
	if (cfg.SplitSize > 0 || cfg.SplitWriteRate > 0) && cfg.SplitCheckInterval > 0 {
		c.wg.Add(1)
		go c.watchLoad()
	}
	return c
}

// Stop ends the loops and waits for them.
func (c *Controller) Stop() {
	close(c.stop)
	c.wg.Wait()
}

// Heard records a heartbeat of member id, as the metadata leader received
// it.
func (c *Controller) Heard(id string) { c.health.heard(id) }

// repeat calls fn every interval, and whenever wake fires, until Stop or fn
// returns false. It runs as one of the loops.
func (c *Controller) repeat(every time.Duration, wake <-chan struct{}, fn func() bool) {
	defer c.wg.Done()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-wake:
		case <-tick.C:
		}
		if !fn() {
			return
		}
	}
}
