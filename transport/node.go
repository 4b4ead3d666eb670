package transport

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	pb "github.com/ringkv/ringkv/proto/ringkvpb"
)

const (
	// DefaultTimeout is the Options.Timeout used when none is set; it is
	// the value commonly given to raft.NetworkTransport.
	DefaultTimeout = 10 * time.Second

	// DefaultSnapshotChunkSize is the Options.SnapshotChunkSize used when
	// none is set.
	DefaultSnapshotChunkSize = 1 << 20

	// MaxSnapshotChunkSize keeps one chunk message, with its framing, under
	// gRPC's default 4 MiB receive limit.
	MaxSnapshotChunkSize = 4<<20 - 1<<10

	// StreamWindow and ConnWindow are the fixed HTTP/2 flow-control
	// windows of Raft connections, per stream and per connection: the
	// ceiling gRPC's estimator would grow them to, so an 8 MiB append or
	// a stream of 1 MiB snapshot chunks never waits for a window update on
	// a fast link.
	StreamWindow = 16 << 20
	ConnWindow   = 64 << 20

	// snapshotTimeoutScale is the snapshot size that earns one more
	// Options.Timeout of InstallSnapshot time (raft.DefaultTimeoutScale).
	snapshotTimeoutScale = raft.DefaultTimeoutScale
)

var (
	// ErrPartitionRegistered is returned by Node.Transport for a partition
	// that already has an open Group on the node.
	ErrPartitionRegistered = errors.New("transport: partition already registered")

	// ErrUnknownPartition is returned by a Group's RPCs when the peer does
	// not host the partition (never registered, or its Group was closed).
	ErrUnknownPartition = errors.New("transport: peer does not host partition")
)

// OptionError reports an Options field outside its allowed range.
type OptionError struct {
	Field string
	Value any
	Limit string
}

func (e *OptionError) Error() string {
	return fmt.Sprintf("transport: option %s = %v: %s", e.Field, e.Value, e.Limit)
}

// AppendResponse describes one AppendEntries response a leader received from
// a follower, heartbeats and pipelined requests included. With the leader's
// last index it gives the follower's replication lag, which raft does not
// expose.
type AppendResponse struct {
	Partition uint32
	ID        raft.ServerID
	Addr      raft.ServerAddress
	// LastLog is the follower's last log index after handling the request.
	LastLog uint64
	Success bool
	// RTT is the time from sending the request to receiving the response.
	RTT time.Duration
}

// Options configure a Node. The zero value is usable.
type Options struct {
	// DialOptions are applied after the defaults (insecure credentials and
	// a reconnect backoff capped at one second, so a restarted peer is
	// reached again quickly); a later option overrides an earlier one, so
	// TLS credentials or interceptors go here.
	DialOptions []grpc.DialOption

	// Timeout bounds each unary RPC, each pipelined send and each pipelined
	// response, and each connection attempt. InstallSnapshot gets Timeout per
	// 256 KiB of snapshot. Zero means DefaultTimeout.
	Timeout time.Duration

	// MaxInFlight is how many pipelined AppendEntries may be outstanding
	// per pipeline (raft.NetworkTransportConfig.MaxRPCsInFlight). Zero means
	// raft.DefaultMaxRPCsInFlight; 1 disables pipelining.
	MaxInFlight int

	// SnapshotChunkSize is the number of snapshot bytes per InstallSnapshot
	// message. Zero means DefaultSnapshotChunkSize.
	SnapshotChunkSize int

	// HeartbeatWindow is how long a heartbeat may wait for others to the
	// same peer node, to travel in one message with them. Zero sends each
	// at once. It delays the heartbeats raft sends on a timer, never those
	// of an expedited Group (see Group.Expedite); keep it well under the
	// leader lease, which heartbeat answers renew.
	HeartbeatWindow time.Duration

	// OnAppendResponse, if set, is called synchronously for every
	// AppendEntries response received; it must not block.
	OnAppendResponse func(AppendResponse)
}

func (o Options) withDefaults() (Options, error) {
	if o.Timeout < 0 {
		return o, &OptionError{Field: "Timeout", Value: o.Timeout, Limit: "must not be negative"}
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	if o.HeartbeatWindow < 0 || o.HeartbeatWindow >= o.Timeout {
		return o, &OptionError{Field: "HeartbeatWindow", Value: o.HeartbeatWindow, Limit: fmt.Sprintf("must be in [0, Timeout = %v)", o.Timeout)}
	}
	if o.MaxInFlight < 0 {
		return o, &OptionError{Field: "MaxInFlight", Value: o.MaxInFlight, Limit: "must not be negative"}
	}
	if o.MaxInFlight == 0 {
		o.MaxInFlight = raft.DefaultMaxRPCsInFlight
	}
	if o.SnapshotChunkSize < 0 || o.SnapshotChunkSize > MaxSnapshotChunkSize {
		return o, &OptionError{Field: "SnapshotChunkSize", Value: o.SnapshotChunkSize,
			Limit: fmt.Sprintf("must be in [0, %d]", MaxSnapshotChunkSize)}
	}
	if o.SnapshotChunkSize == 0 {
		o.SnapshotChunkSize = DefaultSnapshotChunkSize
	}
	return o, nil
}

// Node multiplexes the Raft groups of one process over one gRPC service and
// one client connection per peer address.
type Node struct {
	local    raft.ServerAddress
	opts     Options
	dialOpts []grpc.DialOption

	mu     sync.RWMutex
	closed bool
	groups map[uint32]*Group

	peersMu sync.RWMutex
	peers   map[raft.ServerAddress]peer

	// ctx ends with Close; it is the parent of the heartbeat streams.
	ctx            context.Context
	cancel         context.CancelFunc
	heartbeatersMu sync.Mutex
	heartbeaters   map[raft.ServerAddress]*heartbeater
}

type peer struct {
	conn   *grpc.ClientConn
	client pb.RaftClient
}

// NewNode returns a Node whose groups advertise local as their address;
// local must be the address the caller's gRPC server is reachable at.
func NewNode(local raft.ServerAddress, opts Options) (*Node, error) {
	if local == "" {
		return nil, &OptionError{Field: "local address", Value: `""`, Limit: "must not be empty"}
	}
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	dialOpts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  100 * time.Millisecond,
				Multiplier: backoff.DefaultConfig.Multiplier,
				Jitter:     backoff.DefaultConfig.Jitter,
				MaxDelay:   time.Second,
			},
			MinConnectTimeout: opts.Timeout,
		}),
		// Fixed windows turn off gRPC's bandwidth estimator, which answers
		// nearly every message of a sparse stream (a heartbeat) with a
		// PING and a window update: more frames, syscalls and wake-ups
		// than the heartbeat itself.
		grpc.WithInitialWindowSize(StreamWindow),
		grpc.WithInitialConnWindowSize(ConnWindow),
	}, opts.DialOptions...)
	ctx, cancel := context.WithCancel(context.Background())
	return &Node{
		local:        local,
		opts:         opts,
		dialOpts:     dialOpts,
		groups:       make(map[uint32]*Group),
		peers:        make(map[raft.ServerAddress]peer),
		ctx:          ctx,
		cancel:       cancel,
		heartbeaters: make(map[raft.ServerAddress]*heartbeater),
	}, nil
}

// ServerOptions are the options the gRPC server carrying the Raft service
// should get: the same fixed flow-control windows as the connections a Node
// dials (StreamWindow, ConnWindow), for the same reason.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.InitialWindowSize(StreamWindow), grpc.InitialConnWindowSize(ConnWindow)}
}

// Register adds the Raft service to s. Call it once, before s.Serve.
//
// An AppendEntries message carries up to raft's Config.MaxAppendEntries log
// entries, so s must accept messages that large (grpc.MaxRecvMsgSize; gRPC's
// default is 4 MiB). Snapshots are chunked and need no such allowance.
func (n *Node) Register(s grpc.ServiceRegistrar) {
	pb.RegisterRaftServer(s, &server{node: n})
}

// Transport registers partition and returns its Group, the raft.Transport
// to give to that partition's raft.NewRaft. It fails with
// ErrPartitionRegistered while another Group of the partition is open.
func (n *Node) Transport(partition uint32) (*Group, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, fmt.Errorf("transport: partition %d: %w", partition, raft.ErrTransportShutdown)
	}
	if _, ok := n.groups[partition]; ok {
		return nil, fmt.Errorf("%w: partition %d on %s", ErrPartitionRegistered, partition, n.local)
	}
	g := newGroup(n, partition)
	n.groups[partition] = g
	return g, nil
}

// Close closes every Group and every peer connection. The gRPC server is
// the caller's and stays up; its Raft handlers answer Unavailable from now on.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	groups := n.groups
	n.groups = nil
	n.mu.Unlock()
	for _, g := range groups {
		g.cancel()
	}
	n.heartbeatersMu.Lock()
	n.cancel()
	n.heartbeatersMu.Unlock()

	n.peersMu.Lock()
	peers := n.peers
	n.peers = nil
	n.peersMu.Unlock()
	var errs []error
	for addr, p := range peers {
		if err := p.conn.Close(); err != nil {
			errs = append(errs, fmt.Errorf("transport: closing connection to %s: %w", addr, err))
		}
	}
	return errors.Join(errs...)
}

// lookup returns the open Group of partition, or a gRPC status error for the
// sender.
func (n *Node) lookup(partition uint32) (*Group, error) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	if n.closed {
		return nil, n.closedError()
	}
	g, ok := n.groups[partition]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "transport: partition %d is not hosted on %s", partition, n.local)
	}
	return g, nil
}

func (n *Node) closedError() error {
	return status.Errorf(codes.Unavailable, "transport: node %s is closed", n.local)
}

func (n *Node) unregister(g *Group) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.groups[g.partition] == g {
		delete(n.groups, g.partition)
	}
}

// client returns the Raft client of target, creating its connection on first
// use. grpc.NewClient does not dial, so the connection is made by the first
// RPC and re-made by gRPC after failures.
func (n *Node) client(target raft.ServerAddress) (pb.RaftClient, error) {
	n.peersMu.RLock()
	p, ok := n.peers[target]
	closed := n.peers == nil
	n.peersMu.RUnlock()
	if ok {
		return p.client, nil
	}
	if closed {
		return nil, raft.ErrTransportShutdown
	}

	n.peersMu.Lock()
	defer n.peersMu.Unlock()
	if n.peers == nil {
		return nil, raft.ErrTransportShutdown
	}
	if p, ok := n.peers[target]; ok {
		return p.client, nil
	}
	conn, err := grpc.NewClient(string(target), n.dialOpts...)
	if err != nil {
		return nil, fmt.Errorf("transport: connection to %s: %w", target, err)
	}
	p = peer{conn: conn, client: pb.NewRaftClient(conn)}
	n.peers[target] = p
	return p.client, nil
}
