// Package client is the Go client of a ringkv cluster.
//
// A Client keeps the cluster's partition map (the ring and the primary of
// every partition, fetched with Admin.ClusterMap from any node) and sends
// each request straight to the primary of its key's partition, over one
// shared gRPC connection per node address. The map follows the cluster's
// metadata epoch: a node that forwarded a request because the map named
// the wrong primary says where the primary is (header ringkv-primary), and
// the map is fetched again when a request meets a node that is not the
// primary or cannot be reached (a move, a join or a leave changed the
// placement), from the nodes of the latest map; an answer with an older
// epoch than the map in hand is never taken.
//
// Retries. Every call is bounded by its context and by a maximum number of
// attempts (WithMaxAttempts, default 44). A retry that waits first waits
// a backoff (WithBackoff): 20 ms, doubled for each further wait up to
// 250 ms, less a random part of up to half of it, so clients that failed
// together do not retry together. With the defaults, the waits of a call
// that backs off before every retry until its last attempt add up to
// between 5.0 and 10.05 s: enough to outlast an election even at 1 s Raft
// timeouts (up to 3.3 s measured), while no wait is longer than 250 ms, so
// a call finds a new primary at most that long after it is elected.
//
//   - A NotPrimary answer means the request was not applied, so any call,
//     write or read, is retried: at once against the primary the answer
//     names, or, when it names none (an election is under way), after a
//     backoff against a freshly fetched map.
//   - A read is idempotent: it is also retried, after a backoff and a map
//     refresh, on Unavailable (no quorum, node down, connection refused) and
//     on a server-side DeadlineExceeded while the caller's context is live.
//   - A call whose connection could not be made (the node is down: gRPC's
//     Unavailable "Error while dialing") was never sent, so it is retried
//     like a NotPrimary answer, after a backoff against a fresh map.
//   - Any other write that failed with Unavailable or DeadlineExceeded is NOT
//     retried: it may or may not have been applied, and applying it twice
//     would assign it two versions. The error is returned with its gRPC
//     status; the map is refreshed before the next call, so a caller that
//     knows its write is safe to repeat can simply call again.
//
// Errors. A missing key is ErrNotFound (use errors.Is). Every other server
// error keeps its gRPC status, so status.Code(err) tells InvalidArgument
// (the message names the field and the limit), Unavailable and so on.
//
// Batching. Calls to one node share a single KV.Batch stream: concurrent
// calls travel together, several to a message, and none pays for a gRPC
// call of its own. A call whose context carries a sampled trace span is
// sent as a unary call instead, so that its trace crosses to the nodes
// (the stream carries no per-request trace context). WithoutBatching sends
// every call as a unary call.
//
// A Client is safe for concurrent use.
package client

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ringkv/ringkv/hlc"
	"github.com/ringkv/ringkv/internal/connpool"
	pb "github.com/ringkv/ringkv/proto/ringkvpb"
	"github.com/ringkv/ringkv/ring"
)

// Defaults for the options (the package doc says what they add up to).
const (
	// DefaultMaxAttempts: 43 waits of 20, 40, 80, 160 ms and then 250 ms,
	// less jitter, add up to at least 5 s (TestDefaultRetryBudget).
	DefaultMaxAttempts = 44
	DefaultMinBackoff  = 20 * time.Millisecond
	// DefaultMaxBackoff: a request finds a new primary only at its next
	// retry, so the longest wait is what a failover costs beyond the
	// election; with 1 s it cost up to 1 s more (docs/benchmarks.md,
	// "Failover and Raft timing").
	DefaultMaxBackoff = 250 * time.Millisecond
)

var (
	// ErrNotFound reports a key that is absent or deleted.
	ErrNotFound = errors.New("ringkv: key not found")
	// ErrInvalidOption reports an Option or an argument of New that cannot
	// be used; the error names it and the accepted range.
	ErrInvalidOption = errors.New("ringkv: invalid client option")
	// ErrInvalidClusterMap reports a ClusterMap answer that cannot route
	// requests (bad partition count, missing partitions, unknown primary).
	ErrInvalidClusterMap = errors.New("ringkv: invalid cluster map")
	// ErrClosed reports a call on a closed Client.
	ErrClosed = errors.New("ringkv: client closed")
)

// Client sends requests to the primaries of a ringkv cluster.
type Client struct {
	cfg   config
	seeds []string
	pool  *connpool.Pool

	// batchers holds a *batcher per node address.
	batchers sync.Map

	m atomic.Pointer[clusterMap]
	// stale asks the next call to refresh the map before it is used: set
	// when a write failed in a way that suggests its primary is gone.
	stale atomic.Bool
	// mu serialises changes of m (refreshes and NotPrimary updates).
	mu sync.Mutex
	// refreshing admits one map fetch at a time; a waiter honours its ctx.
	refreshing chan struct{}
	closed     atomic.Bool
}

// clusterMap is an immutable view of the cluster; changes replace it.
type clusterMap struct {
	resp    *pb.ClusterMapResponse
	ring    *ring.Ring
	addrs   []string // every node's address, for refreshes
	primary []string // primary address per partition
}

type config struct {
	dialOpts    []grpc.DialOption
	maxAttempts int
	minBackoff  time.Duration
	maxBackoff  time.Duration
	unary       bool
}

// Option configures New.
type Option func(*config)

// WithDialOptions replaces the gRPC dial options (default: insecure
// transport credentials), e.g. to add TLS or interceptors.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(c *config) { c.dialOpts = opts }
}

// WithMaxAttempts bounds the attempts of one call, the first included; it
// must be at least 1.
func WithMaxAttempts(n int) Option {
	return func(c *config) { c.maxAttempts = n }
}

// WithBackoff sets the wait before the first retry that needs one, doubled
// for each further retry up to max; jitter takes up to half of it off.
func WithBackoff(min, max time.Duration) Option {
	return func(c *config) { c.minBackoff, c.maxBackoff = min, max }
}

// WithoutBatching sends every call as its own unary gRPC call instead of
// on the node's shared Batch stream.
func WithoutBatching() Option {
	return func(c *config) { c.unary = true }
}

func (c config) check() error {
	if c.maxAttempts < 1 {
		return fmt.Errorf("%w: max attempts = %d, want at least 1", ErrInvalidOption, c.maxAttempts)
	}
	if c.minBackoff <= 0 || c.maxBackoff < c.minBackoff {
		return fmt.Errorf("%w: backoff = [%v, %v], want 0 < min <= max", ErrInvalidOption, c.minBackoff, c.maxBackoff)
	}
	return nil
}

// New connects to the cluster through any of addrs (HOST:PORT of some of
// its nodes): it fetches the partition map from the first that answers.
func New(ctx context.Context, addrs []string, opts ...Option) (*Client, error) {
	cfg := config{
		dialOpts:    []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())},
		maxAttempts: DefaultMaxAttempts,
		minBackoff:  DefaultMinBackoff,
		maxBackoff:  DefaultMaxBackoff,
	}
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.check(); err != nil {
		return nil, err
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("%w: addrs is empty, want at least one node address", ErrInvalidOption)
	}
	c := &Client{
		cfg:        cfg,
		seeds:      append([]string(nil), addrs...),
		refreshing: make(chan struct{}, 1),
	}
	c.pool = connpool.New(append(cfg.dialOpts[:len(cfg.dialOpts):len(cfg.dialOpts)], grpc.WithChainUnaryInterceptor(c.learnPrimary))...)
	if _, err := c.refresh(ctx, nil); err != nil {
		c.pool.Close()
		return nil, err
	}
	return c, nil
}

// Close closes every connection. Calls in flight fail; later calls return
// ErrClosed.
func (c *Client) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	return c.pool.Close()
}

// WriteConsistency says when a write is acknowledged.
type WriteConsistency int

const (
	// Strong acknowledges a write once a majority of its partition's Raft
	// group committed it. It is the default.
	Strong WriteConsistency = iota
	// Fast acknowledges a write once the primary's WAL fsync completed; a
	// primary that fails before replicating it can lose it.
	Fast
)

// ReadConsistency says which state a read observes.
type ReadConsistency int

const (
	// Local reads the primary's applied state without a round trip to the
	// group; after a failover it can briefly miss the newest writes. It is
	// the default.
	Local ReadConsistency = iota
	// Quorum is linearizable: the primary confirms its leadership with a
	// quorum first.
	Quorum
)

// WriteOption configures one Put or Delete; Strong and Fast are
// WriteOptions.
type WriteOption interface{ applyWrite(*pb.WriteConsistency) }

// ReadOption configures one Get; Local and Quorum are ReadOptions.
type ReadOption interface{ applyRead(*pb.ReadConsistency) }

func (w WriteConsistency) applyWrite(c *pb.WriteConsistency) {
	*c = pb.WriteConsistency_WRITE_CONSISTENCY_STRONG
	if w == Fast {
		*c = pb.WriteConsistency_WRITE_CONSISTENCY_FAST
	}
}

func (r ReadConsistency) applyRead(c *pb.ReadConsistency) {
	*c = pb.ReadConsistency_READ_CONSISTENCY_LOCAL
	if r == Quorum {
		*c = pb.ReadConsistency_READ_CONSISTENCY_QUORUM
	}
}

func (w WriteConsistency) String() string {
	if w == Fast {
		return "fast"
	}
	return "strong"
}

func (r ReadConsistency) String() string {
	if r == Quorum {
		return "quorum"
	}
	return "local"
}

// Result is what a write reports.
type Result struct {
	// Version is the version the write was given; versions of a key
	// strictly increase, except that a key written again after its
	// delete's tombstone was purged (the nodes' --tombstone-ttl later)
	// starts again at 1.
	Version uint64
	// Timestamp is the write's hybrid logical clock time.
	Timestamp hlc.Timestamp
}

// Item is what a read returns.
type Item struct {
	Value []byte
	// Version and Timestamp are those of the write that stored Value.
	Version   uint64
	Timestamp hlc.Timestamp
}

// Put stores value under key (default Strong).
func (c *Client) Put(ctx context.Context, key, value []byte, opts ...WriteOption) (Result, error) {
	req := &pb.PutRequest{Key: key, Value: value, Consistency: pb.WriteConsistency_WRITE_CONSISTENCY_STRONG}
	for _, o := range opts {
		o.applyWrite(&req.Consistency)
	}
	resp, err := do(ctx, c, "put", key, false, func(ctx context.Context, kv kvCaller) (*pb.PutResponse, error) {
		return kv.Put(ctx, req)
	})
	return writeResult(resp, err)
}

// Delete removes key (default Strong). The delete is itself a new version
// of the key; deleting an absent key succeeds.
func (c *Client) Delete(ctx context.Context, key []byte, opts ...WriteOption) (Result, error) {
	req := &pb.DeleteRequest{Key: key, Consistency: pb.WriteConsistency_WRITE_CONSISTENCY_STRONG}
	for _, o := range opts {
		o.applyWrite(&req.Consistency)
	}
	resp, err := do(ctx, c, "delete", key, false, func(ctx context.Context, kv kvCaller) (*pb.DeleteResponse, error) {
		return kv.Delete(ctx, req)
	})
	return writeResult(resp, err)
}

// Get returns the newest version of key (default Local), or ErrNotFound.
func (c *Client) Get(ctx context.Context, key []byte, opts ...ReadOption) (Item, error) {
	req := &pb.GetRequest{Key: key, Consistency: pb.ReadConsistency_READ_CONSISTENCY_LOCAL}
	for _, o := range opts {
		o.applyRead(&req.Consistency)
	}
	resp, err := do(ctx, c, "get", key, true, func(ctx context.Context, kv kvCaller) (*pb.GetResponse, error) {
		return kv.Get(ctx, req)
	})
	if err != nil {
		return Item{}, err
	}
	return Item{Value: resp.GetValue(), Version: resp.GetVersion(), Timestamp: timestamp(resp.GetTimestamp())}, nil
}

// writeResult converts a PutResponse or DeleteResponse.
func writeResult(resp interface {
	GetVersion() uint64
	GetTimestamp() *pb.Timestamp
}, err error) (Result, error) {
	if err != nil {
		return Result{}, err
	}
	return Result{Version: resp.GetVersion(), Timestamp: timestamp(resp.GetTimestamp())}, nil
}

// Status asks the node at addr for its Admin.Status.
func (c *Client) Status(ctx context.Context, addr string) (*pb.StatusResponse, error) {
	conn, err := c.dial(addr)
	if err != nil {
		return nil, err
	}
	return pb.NewAdminClient(conn).Status(ctx, &pb.StatusRequest{})
}

// ClusterMap fetches the partition map afresh from any reachable node,
// updates the Client's cache with it and returns it.
func (c *Client) ClusterMap(ctx context.Context) (*pb.ClusterMapResponse, error) {
	m, err := c.refresh(ctx, nil)
	if err != nil {
		return nil, err
	}
	return m.resp, nil
}

func timestamp(ts *pb.Timestamp) hlc.Timestamp {
	return hlc.Timestamp{WallTime: ts.GetWallTime(), Logical: ts.GetLogical()}
}

func (c *Client) dial(addr string) (grpc.ClientConnInterface, error) {
	if c.closed.Load() {
		return nil, ErrClosed
	}
	return c.pool.Dial(addr)
}

// do runs call against the primary of key's partition, retrying as the
// package doc describes. idempotent says whether call may be repeated after
// an unknown outcome.
func do[T any](ctx context.Context, c *Client, op string, key []byte, idempotent bool,
	call func(context.Context, kvCaller) (T, error)) (resp T, err error) {
	m := c.m.Load()
	if c.stale.Load() {
		// Best effort: on failure the old map still routes via forwarding.
		if fresh, err := c.refresh(ctx, m); err == nil {
			m = fresh
		}
	}
	backoff := c.cfg.minBackoff
	for attempt := 1; ; attempt++ {
		p := m.ring.Lookup(key)
		addr := m.primary[p]
		kv, err := c.caller(ctx, addr)
		if err != nil {
			return resp, err
		}
		resp, err = call(ctx, kv)
		switch {
		case err == nil:
			return resp, nil
		case status.Code(err) == codes.NotFound:
			return resp, fmt.Errorf("%w (partition %d at %s)", ErrNotFound, p, addr)
		}
		np := pb.NotPrimaryOf(err)
		retry := np != nil || notSent(err) || (idempotent && retryableRead(ctx, err))
		if !retry {
			if code := status.Code(err); code == codes.Unavailable || code == codes.DeadlineExceeded {
				c.stale.Store(true)
			}
			return resp, fmt.Errorf("ringkv: %s partition %d at %s: %w", op, p, addr, err)
		}
		if attempt >= c.cfg.maxAttempts || ctx.Err() != nil {
			return resp, fmt.Errorf("ringkv: %s partition %d at %s, gave up after %d attempts: %w", op, p, addr, attempt, err)
		}
		if np != nil && np.GetPrimaryAddr() != "" && np.GetPrimaryAddr() != addr {
			m = c.setPrimary(m, p, np.GetPrimaryAddr())
			continue
		}
		if serr := sleep(ctx, backoff); serr != nil {
			return resp, fmt.Errorf("ringkv: %s partition %d at %s: %w (last error: %w)", op, p, addr, serr, err)
		}
		backoff = min(2*backoff, c.cfg.maxBackoff)
		if fresh, rerr := c.refresh(ctx, m); rerr == nil {
			m = fresh
		}
	}
}

// caller is how a call reaches the node at addr: its batcher, or a unary
// client for a traced call, for a node that does not serve Batch and with
// WithoutBatching.
func (c *Client) caller(ctx context.Context, addr string) (kvCaller, error) {
	conn, err := c.dial(addr)
	if err != nil {
		return nil, err
	}
	if c.cfg.unary || trace.SpanContextFromContext(ctx).IsSampled() {
		return pb.NewKVClient(conn), nil
	}
	v, ok := c.batchers.Load(addr)
	if !ok {
		v, _ = c.batchers.LoadOrStore(addr, newBatcher(conn, c.notePrimary))
	}
	if b := v.(*batcher); !b.unsupported.Load() {
		return b, nil
	}
	return pb.NewKVClient(conn), nil
}

// notSent reports whether err proves the call never left the client: the
// connection to the node could not be made, or a batched request was never
// sent or never served.
func notSent(err error) bool {
	var ns *notSentError
	return errors.As(err, &ns) ||
		status.Code(err) == codes.Unavailable && strings.Contains(status.Convert(err).Message(), "while dialing")
}

// retryableRead reports whether a read that failed with err may be sent
// again: the server could not serve it, and the caller still waits.
func retryableRead(ctx context.Context, err error) bool {
	switch status.Code(err) {
	case codes.Unavailable:
		return true
	case codes.DeadlineExceeded:
		return ctx.Err() == nil
	}
	return false
}

// sleep waits d less up to half of it (jitter, so that clients that failed
// together do not retry together), or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	d -= rand.N(d/2 + 1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// learnPrimary reads the header a node sets when it forwarded a request
// because this client's map named the wrong primary (an election moved it),
// and records the primary it names, so the next request to the partition
// goes straight there instead of taking two hops until some error forces a
// refresh.
func (c *Client) learnPrimary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	var md metadata.MD
	err := invoker(ctx, method, req, reply, cc, append(opts, grpc.Header(&md))...)
	if v := md.Get(pb.PrimaryHeader); len(v) == 1 {
		c.notePrimary(v[0])
	}
	return err
}

// notePrimary records the primary a PrimaryHeader value (or a batched
// answer's primary) names.
func (c *Client) notePrimary(hint string) {
	if p, addr, ok := pb.ParsePrimary(hint); ok {
		if m := c.m.Load(); m != nil && int(p) < len(m.primary) && m.primary[p] != addr {
			c.setPrimary(m, ring.PartitionID(p), addr)
		}
	}
}

// setPrimary records addr as p's primary, unless the map changed since the
// caller read seen, and returns the map to use.
func (c *Client) setPrimary(seen *clusterMap, p ring.PartitionID, addr string) *clusterMap {
	c.mu.Lock()
	defer c.mu.Unlock()
	cur := c.m.Load()
	if cur != seen {
		return cur
	}
	next := *cur
	next.primary = append([]string(nil), cur.primary...)
	next.primary[p] = addr
	c.m.Store(&next)
	return &next
}

// refresh fetches the map from the known nodes, then the seed addresses,
// and installs it. If seen is not nil and another call already replaced it,
// that newer map is returned without a fetch.
func (c *Client) refresh(ctx context.Context, seen *clusterMap) (*clusterMap, error) {
	select {
	case c.refreshing <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-c.refreshing }()
	if cur := c.m.Load(); seen != nil && cur != seen {
		return cur, nil
	}
	var candidates []string
	if seen != nil {
		candidates = append(candidates, seen.addrs...)
	}
	candidates = append(candidates, c.seeds...)
	var errs []error
	olderOnly := false
	tried := map[string]bool{}
	for _, addr := range candidates {
		if tried[addr] || ctx.Err() != nil {
			continue
		}
		tried[addr] = true
		m, err := c.fetchMap(ctx, addr)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", addr, err))
			continue
		}
		// Epochs only grow: a node that has not caught up with the
		// metadata yet would route by an older placement.
		if seen != nil && m.resp.GetEpoch() < seen.resp.GetEpoch() {
			olderOnly = true
			errs = append(errs, fmt.Errorf("%s: map epoch %d is older than %d", addr, m.resp.GetEpoch(), seen.resp.GetEpoch()))
			continue
		}
		c.mu.Lock()
		c.m.Store(m)
		c.stale.Store(false)
		c.mu.Unlock()
		return m, nil
	}
	if err := ctx.Err(); err != nil {
		errs = append(errs, err)
	} else if olderOnly {
		return seen, nil
	}
	return nil, fmt.Errorf("ringkv: no node answered ClusterMap: %w", errors.Join(errs...))
}

func (c *Client) fetchMap(ctx context.Context, addr string) (*clusterMap, error) {
	conn, err := c.dial(addr)
	if err != nil {
		return nil, err
	}
	resp, err := pb.NewAdminClient(conn).ClusterMap(ctx, &pb.ClusterMapRequest{})
	if err != nil {
		return nil, err
	}
	return newClusterMap(resp)
}

// newClusterMap checks resp and indexes it. A partition whose primary has
// no address is sent to its first replica with one, which forwards.
func newClusterMap(resp *pb.ClusterMapResponse) (*clusterMap, error) {
	initial := resp.GetInitialPartitions()
	if initial == 0 {
		initial = resp.GetPartitions()
	}
	r, err := ring.Grown(int(initial), int(resp.GetPartitions()))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidClusterMap, err)
	}
	if got, want := len(resp.GetPartitionMap()), r.Partitions(); got != want {
		return nil, fmt.Errorf("%w: partition_map has %d entries, want partitions = %d",
			ErrInvalidClusterMap, got, want)
	}
	m := &clusterMap{resp: resp, ring: r}
	addrOf := map[string]string{}
	for _, n := range resp.GetNodes() {
		addrOf[n.GetId()] = n.GetAddress()
		m.addrs = append(m.addrs, n.GetAddress())
	}
	for i, pm := range resp.GetPartitionMap() {
		if pm.GetPartition() != uint32(i) {
			return nil, fmt.Errorf("%w: partition_map[%d].partition = %d, want %d",
				ErrInvalidClusterMap, i, pm.GetPartition(), i)
		}
		addr := pm.GetPrimaryAddr()
		for _, id := range pm.GetReplicas() {
			if addr != "" {
				break
			}
			addr = addrOf[id]
		}
		if addr == "" {
			return nil, fmt.Errorf("%w: partition %d: no address for its primary or any replica",
				ErrInvalidClusterMap, i)
		}
		m.primary = append(m.primary, addr)
	}
	return m, nil
}
