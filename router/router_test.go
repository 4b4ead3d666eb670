package router

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ringkv/ringkv/fsm"
	pb "github.com/ringkv/ringkv/proto/ringkvpb"
	"github.com/ringkv/ringkv/shard"
)

func TestStatus(t *testing.T) {
	tests := []struct {
		name    string
		err     error
		code    codes.Code
		mention string
	}{
		{"limit", fmt.Errorf("put: %w", &fsm.LimitError{Field: "key", Size: 5000, Limit: 4096, Err: fsm.ErrKeyTooLarge}), codes.InvalidArgument, "4096"},
		{"not primary", &shard.NotPrimaryError{Partition: 3, LeaderID: "n2", LeaderAddr: "127.0.0.1:7002"}, codes.FailedPrecondition, "n2"},
		{"not found", shard.ErrNotFound, codes.NotFound, "not found"},
		{"no quorum", &shard.NoQuorumError{Partition: 3, Op: "strong write", Timeout: 3 * time.Second, Cause: context.DeadlineExceeded}, codes.Unavailable, "partition 3"},
		{"closed", shard.ErrClosed, codes.Unavailable, "closed"},
		{"journal full", &shard.JournalFullError{Partition: 5, Records: 8192, Bytes: 1 << 20, Cause: context.DeadlineExceeded}, codes.Unavailable, "partition 5: fast-write journal full"},
		{"superseded", &shard.SupersededError{Partition: 3}, codes.Aborted, "lost to"},
		{"deadline", context.DeadlineExceeded, codes.DeadlineExceeded, "deadline"},
		{"canceled", context.Canceled, codes.Canceled, "canceled"},
		{"other", errors.New("disk on fire"), codes.Internal, "disk on fire"},
		{"already a status", status.Error(codes.PermissionDenied, "no"), codes.PermissionDenied, "no"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := Status(tc.err)
			if status.Code(err) != tc.code || !strings.Contains(status.Convert(err).Message(), tc.mention) {
				t.Fatalf("Status(%v) = %v, want %v mentioning %q", tc.err, err, tc.code, tc.mention)
			}
		})
	}
	np := pb.NotPrimaryOf(Status(&shard.NotPrimaryError{Partition: 3, LeaderID: "n2", LeaderAddr: "127.0.0.1:7002"}))
	if np.GetPartition() != 3 || np.GetPrimaryId() != "n2" || np.GetPrimaryAddr() != "127.0.0.1:7002" {
		t.Fatalf("NotPrimary detail %v", np)
	}
	if Status(nil) != nil {
		t.Fatal("Status(nil) is not nil")
	}
}
