// Package consistency maps the consistency a KV request asks for, as the
// wire names it, to the replica's read or write mode.
//
// It sits below router, which serves each request in its mode, and
// metrics, which labels each request with the mode's name, so that the two
// agree on the mapping without metrics importing the router. An
// UNSPECIFIED consistency is the default mode (LOCAL reads, STRONG
// writes); a value this version does not know is InvalidArgument, never a
// guess. The package has no state.
package consistency

import (
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/ringkv/ringkv/proto/ringkvpb"
	"github.com/ringkv/ringkv/shard"
)

// Read maps a request's read consistency to the replica's read mode
// (UNSPECIFIED is LOCAL); an unknown value is InvalidArgument.
func Read(c pb.ReadConsistency) (shard.ReadMode, error) {
	switch c {
	case pb.ReadConsistency_READ_CONSISTENCY_UNSPECIFIED, pb.ReadConsistency_READ_CONSISTENCY_LOCAL:
		return shard.Local, nil
	case pb.ReadConsistency_READ_CONSISTENCY_QUORUM:
		return shard.Quorum, nil
	}
	return 0, status.Errorf(codes.InvalidArgument, "consistency: unknown read consistency %d (want LOCAL or QUORUM)", c)
}

// Write maps a request's write consistency to the replica's write mode
// (UNSPECIFIED is STRONG); an unknown value is InvalidArgument.
func Write(c pb.WriteConsistency) (shard.WriteMode, error) {
	switch c {
	case pb.WriteConsistency_WRITE_CONSISTENCY_UNSPECIFIED, pb.WriteConsistency_WRITE_CONSISTENCY_STRONG:
		return shard.Strong, nil
	case pb.WriteConsistency_WRITE_CONSISTENCY_FAST:
		return shard.Fast, nil
	}
	return 0, status.Errorf(codes.InvalidArgument, "consistency: unknown write consistency %d (want STRONG or FAST)", c)
}
