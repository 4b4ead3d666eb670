package node

import (
	"cmp"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.opentelemetry.io/otel/trace"

	"github.com/ringkv/ringkv/cluster"
	"github.com/ringkv/ringkv/fsm"
	"github.com/ringkv/ringkv/internal/storage"
	"github.com/ringkv/ringkv/raftgroup"
	"github.com/ringkv/ringkv/ring"
	"github.com/ringkv/ringkv/shard"
)

// Defaults of Config; kvnode's flags default to the same values. The Raft
// timing defaults are raftgroup's, the snapshot and op-timeout defaults
// shard's, and the failure-detection defaults cluster's.
const (
	DefaultMaxSnapshotTransfers = 2
	DefaultBalanceInterval      = 5 * time.Second
	DefaultMaxMoves             = 2
	DefaultPromoteMaxLag        = 256
	DefaultManageInterval       = 250 * time.Millisecond
	DefaultReadyMaxLag          = 1000
	// DefaultTombstoneTTL keeps a delete's tombstone a day, far longer than
	// any delay a late write meets while its replica is up and connected
	// (see Config.TombstoneTTL).
	DefaultTombstoneTTL = 24 * time.Hour
	// DefaultPartitionsPerNode: the cluster splits until it has
	// cluster.FittedPartitions(nodes, 2) partitions, 2 per node rounded up
	// to a power of two: enough for a joining node to lead its share,
	// few enough that a node's groups still batch their writes (see
	// docs/benchmarks.md, "Partitions").
	DefaultPartitionsPerNode = 2
	// DefaultSplitSize: a partition splits once it holds 256 MiB on disk.
	// The split copies the half that moves on the parent's apply
	// goroutine, so a partition split small is unavailable briefly.
	DefaultSplitSize          = 256 << 20
	DefaultSplitCheckInterval = 10 * time.Second
)

// ErrInvalidConfig marks every error Start returns for a Config it refuses;
// the error names the field and the limit. It is raftgroup.ErrInvalid, the
// sentinel the Raft timing's, cluster's and shard's checks wrap, so that
// their errors need no wrapping again; the engine's and the WAL's own
// sentinels are wrapped where the node opens them.
var ErrInvalidConfig = raftgroup.ErrInvalid

// Peer is a member of the initial cluster.
type Peer struct {
	ID   string
	Addr string
}

// Config describes a node. Zero fields take the defaults above (or those of
// the package that owns the field).
type Config struct {
	ID     string // required
	Listen string // gRPC address to listen on, host:port; required
	// Advertise is the address peers and clients reach this node at. By
	// default: the node's address in the cluster metadata (its Peers entry,
	// or the address it joined with), else Listen.
	Advertise string
	DataDir   string // required
	// Peers creates the cluster on first start (every initial node gets the
	// same list, itself included). Ignored once DataDir is initialized.
	Peers []Peer
	// ClusterToken goes into the cluster id with Peers, as etcd's
	// --initial-cluster-token does: a cluster bootstrapped again from the
	// same Peers under another token is another cluster, and its nodes
	// refuse the old one's stale nodes. Ignored once DataDir is initialized.
	ClusterToken string
	// Partitions of a new cluster, a power of two; default: the count
	// PartitionsPerNode fits to len(Peers) (cluster.FittedPartitions),
	// else ring.DefaultPartitions.
	Partitions int
	RaftLog    shard.LogBackend
	Limits     fsm.Options
	Logger     hclog.Logger
	// Listener, if set, is used instead of listening on Listen (tests pass
	// a :0 listener and its address as Listen).
	Listener net.Listener

	// Raft is the timing of every Raft group of the node, partitions and
	// metadata group alike.
	Raft raftgroup.Timing
	// SnapshotPolicy is when partitions snapshot (shard's defaults).
	SnapshotPolicy raftgroup.SnapshotPolicy
	// OpTimeout bounds a strong write or quorum read that cannot reach a
	// majority (shard.DefaultOpTimeout).
	OpTimeout time.Duration
	// MaxSnapshotTransfers caps concurrent snapshot sends and receives on
	// the node.
	MaxSnapshotTransfers int
	// Pprof serves net/http/pprof under /debug/pprof/ on the metrics
	// address, for profiling a live node; off by default.
	Pprof bool
	// BalanceInterval is how often the node hands partitions it leads to
	// their preferred primaries; negative: never.
	BalanceInterval time.Duration
	// Timeouts of failure detection and replacement (cluster's defaults).
	Timeouts cluster.Timeouts
	// MaxMoves caps the partitions whose replicas move at the same time.
	MaxMoves int
	// PromoteMaxLag is how far (in entries) a new replica may trail the
	// primary's commit index when it is promoted to voter.
	PromoteMaxLag uint64
	// ManageInterval is how often the metadata leader checks health and
	// advances replica moves.
	ManageInterval time.Duration
	// TombstoneTTL is how long a delete's tombstone is kept: each primary
	// proposes a purge of the older ones every quarter of the TTL (between
	// a second and an hour; package control). A write that arrives after the
	// purge with a stamp older than the delete — a re-offered fast write of
	// a replica that was away for longer — is no longer stopped by it, and
	// the key comes back (docs/design.md, "Versions and conflicts"); so
	// the TTL must exceed the longest a replica can be away and still
	// return. Negative: never purge, tombstones are kept forever. It is the
	// one knob of the purge: Limits.TombstoneGrace, the cutoff the
	// replicas compute, is set from it.
	TombstoneTTL time.Duration
	// FastJournalRecords and FastJournalBytes bound, per partition, the
	// fast writes a primary has acknowledged and not yet applied; a fast
	// write that finds no room within its op timeout fails Unavailable
	// (shard.DefaultJournalEntries and DefaultJournalBytes).
	FastJournalRecords int
	FastJournalBytes   int64
	// PartitionsPerNode has the cluster split until it has
	// cluster.FittedPartitions(placeable nodes, PartitionsPerNode)
	// partitions; negative: never for its size.
	PartitionsPerNode int
	// SplitSize splits once more when a partition's primary reports more
	// bytes on disk; negative: never for size.
	SplitSize int64
	// SplitWriteRate splits once more when a partition commits more
	// entries a second; 0 (the default): never for load, since on the
	// same nodes more partitions share the same cores.
	SplitWriteRate float64
	// SplitCheckInterval is how often the metadata leader samples the
	// partitions' sizes and write rates.
	SplitCheckInterval time.Duration
	// WALSegmentSize overrides the WAL's segment size (tests use small ones).
	WALSegmentSize int64
	// Storage sizes the node's storage engine (storage's defaults): its
	// block cache, memtables and compactions. Dir and FS are the node's.
	Storage storage.Options

	// MetricsAddr, if set, serves /metrics, /healthz and /readyz over HTTP.
	MetricsAddr string
	// MetricsListener, if set, is used instead of listening on MetricsAddr.
	MetricsListener net.Listener
	// ReadyMaxLag is how far (in entries) a replica's applied index may
	// trail its commit index while the node counts as ready.
	ReadyMaxLag uint64
	// TracerProvider traces KV and Admin calls, served and sent, and the
	// spans below them (forward, Raft apply, WAL append). Nil: no tracing,
	// at no cost.
	TracerProvider trace.TracerProvider
	// TraceRaft also traces Raft RPCs (high volume; off by default).
	TraceRaft bool
}

// withDefaults fills zero fields and checks everything, so that a library
// user (the test cluster, say) gets the checks kvnode's users get. Every
// error wraps ErrInvalidConfig and names the field.
func (c Config) withDefaults() (Config, error) {
	if c.ID == "" {
		return c, invalid("ID is required")
	}
	if c.DataDir == "" {
		return c, invalid("DataDir is required")
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return c, invalid("Listen %q: %v", c.Listen, err)
	}
	c.RaftLog = cmp.Or(c.RaftLog, shard.LogWAL)
	if c.RaftLog != shard.LogWAL && c.RaftLog != shard.LogBoltDB {
		return c, invalid("RaftLog %q: want %q or %q", c.RaftLog, shard.LogWAL, shard.LogBoltDB)
	}
	var err error
	if c.Raft, err = c.Raft.WithDefaults(); err != nil {
		return c, fmt.Errorf("node: Raft: %w", err)
	}
	if c.Timeouts, err = c.Timeouts.WithDefaults(); err != nil {
		return c, fmt.Errorf("node: %w", err)
	}
	c.OpTimeout = cmp.Or(c.OpTimeout, shard.DefaultOpTimeout)
	c.MaxSnapshotTransfers = cmp.Or(c.MaxSnapshotTransfers, DefaultMaxSnapshotTransfers)
	c.MaxMoves = cmp.Or(c.MaxMoves, DefaultMaxMoves)
	c.PromoteMaxLag = cmp.Or(c.PromoteMaxLag, DefaultPromoteMaxLag)
	c.ReadyMaxLag = cmp.Or(c.ReadyMaxLag, DefaultReadyMaxLag)
	c.ManageInterval = cmp.Or(c.ManageInterval, DefaultManageInterval)
	c.BalanceInterval = cmp.Or(c.BalanceInterval, DefaultBalanceInterval)
	c.TombstoneTTL = cmp.Or(c.TombstoneTTL, DefaultTombstoneTTL)
	c.PartitionsPerNode = cmp.Or(c.PartitionsPerNode, DefaultPartitionsPerNode)
	c.FastJournalRecords = cmp.Or(c.FastJournalRecords, shard.DefaultJournalEntries)
	c.FastJournalBytes = cmp.Or(c.FastJournalBytes, shard.DefaultJournalBytes)
	if c.FastJournalRecords < 0 || c.FastJournalBytes < 0 {
		return c, invalid("FastJournalRecords is %d and FastJournalBytes %d: want more than 0", c.FastJournalRecords, c.FastJournalBytes)
	}
	// A new cluster starts with the partitions it would split to at its
	// size, so that it does not split at once.
	c.Partitions = cmp.Or(c.Partitions, cluster.FittedPartitions(len(c.Peers), c.PartitionsPerNode), ring.DefaultPartitions)
	if _, err := ring.New(c.Partitions); err != nil {
		return c, invalid("Partitions: %v", err)
	}
	c.SplitSize = cmp.Or(c.SplitSize, DefaultSplitSize)
	c.SplitCheckInterval = cmp.Or(c.SplitCheckInterval, DefaultSplitCheckInterval)
	switch {
	case c.SplitWriteRate < 0:
		return c, invalid("SplitWriteRate is %v, want 0 (never) or more", c.SplitWriteRate)
	case c.SplitCheckInterval < 0:
		return c, invalid("SplitCheckInterval is %v, want more than 0", c.SplitCheckInterval)
	}
	switch {
	case c.OpTimeout < 0:
		return c, invalid("OpTimeout is %v, want more than 0", c.OpTimeout)
	case c.MaxSnapshotTransfers < 1:
		return c, invalid("MaxSnapshotTransfers is %d, want at least 1", c.MaxSnapshotTransfers)
	case c.MaxMoves < 1:
		return c, invalid("MaxMoves is %d, want at least 1", c.MaxMoves)
	case c.ManageInterval < 0:
		return c, invalid("ManageInterval is %v, want more than 0", c.ManageInterval)
	case c.Limits.TombstoneGrace != 0:
		// Two settings of one duration could disagree; the control loop
		// needs it too, to know how often to purge.
		return c, invalid("Limits.TombstoneGrace is %v: set TombstoneTTL instead", c.Limits.TombstoneGrace)
	}
	if c.TombstoneTTL > 0 {
		c.Limits.TombstoneGrace = c.TombstoneTTL
	}
	if c.Storage.Dir != "" || c.Storage.FS != nil {
		return c, invalid("Storage.Dir and Storage.FS are the node's: DataDir/state")
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	return c, nil
}

// invalid is a Config error: it wraps ErrInvalidConfig. A named function
// rather than a closure, so that vet checks its callers' formats.
func invalid(format string, a ...any) error {
	return fmt.Errorf("node: %w: %s", ErrInvalidConfig, fmt.Sprintf(format, a...))
}

// ParsePeers parses "n1=host:port,n2=host:port,...".
func ParsePeers(s string) ([]Peer, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var peers []Peer
	seen := map[string]bool{}
	for _, part := range strings.Split(s, ",") {
		id, addr, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || id == "" || addr == "" {
			return nil, fmt.Errorf("%q is not ID=HOST:PORT", part)
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("%s: address %q: %w", id, addr, err)
		}
		if seen[id] {
			return nil, fmt.Errorf("node id %q appears twice", id)
		}
		seen[id] = true
		peers = append(peers, Peer{ID: id, Addr: addr})
	}
	return peers, nil
}
