package admin

import (
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ringkv/ringkv/cluster"
	"github.com/ringkv/ringkv/router"
)

// The conditions the Admin service answers with; every error a handler
// returns wraps one of them (or a cluster or shard error), and Status maps
// it to its gRPC code in one place.
var (
	// ErrInvalidArgument: a request field is missing or malformed; the
	// error names the field.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrNoCluster: this node belongs to no cluster yet.
	ErrNoCluster = errors.New("belongs to no cluster yet")
	// ErrNoMetaLeader: the metadata group has no leader, or this node is
	// not it, or the leader has not applied the metadata yet; retry.
	ErrNoMetaLeader = errors.New("no metadata leader")
	// ErrNotHosted: the partition has no replica on this node.
	ErrNotHosted = errors.New("not hosted")
	// ErrNotMember: the node named is not a member of this cluster.
	ErrNotMember = errors.New("not a member")
	// ErrRefused: the caller is another cluster's node or one removed from
	// this cluster.
	ErrRefused = errors.New("refused")
	// ErrConflict: the request contradicts the node's or the cluster's
	// state (another cluster, another address, a removed id); retrying it
	// unchanged will not help.
	ErrConflict = errors.New("conflict")
	// ErrUnreachable: a node the request needed did not answer in time.
	ErrUnreachable = errors.New("unreachable")
	// ErrReconfigure: a partition's configuration change failed.
	ErrReconfigure = errors.New("reconfiguration failed")
)

// codeOf maps each condition to the gRPC code clients see; the first match
// wins. Anything else goes through router.Status: a shard error (NotPrimary
// with its detail, say), so that it reads the same from both services, or
// a status already (the metadata leader's answer to a forwarded request),
// which passes unchanged.
var codeOf = []struct {
	err  error
	code codes.Code
}{
	{ErrInvalidArgument, codes.InvalidArgument},
	{ErrNoCluster, codes.FailedPrecondition},
	{ErrNoMetaLeader, codes.Unavailable},
	{ErrNotHosted, codes.NotFound},
	{ErrNotMember, codes.NotFound},
	{ErrRefused, codes.PermissionDenied},
	{ErrConflict, codes.FailedPrecondition},
	{ErrUnreachable, codes.Unavailable},
	{ErrReconfigure, codes.Aborted},
	{cluster.ErrRefused, codes.FailedPrecondition},
	{cluster.ErrNotLeader, codes.Unavailable},
}

// Status converts a handler's error into the gRPC status the caller sees.
// The table comes first: a condition the handler named decides the code
// even where its error also wraps another node's status.
func Status(err error) error {
	for _, c := range codeOf {
		if errors.Is(err, c.err) {
			return status.Error(c.code, err.Error())
		}
	}
	return router.Status(err)
}
