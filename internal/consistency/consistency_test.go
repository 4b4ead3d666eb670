package consistency

import (
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/ringkv/ringkv/proto/ringkvpb"
)

// TestModes pins the mapping and the modes' names, which are metric label
// values: a dashboard breaks if they change.
func TestModes(t *testing.T) {
	tests := []struct {
		name    string
		mapping func() (fmt.Stringer, error)
		label   string // "" for InvalidArgument
	}{
		{"read unspecified", readOf(pb.ReadConsistency_READ_CONSISTENCY_UNSPECIFIED), "local"},
		{"read local", readOf(pb.ReadConsistency_READ_CONSISTENCY_LOCAL), "local"},
		{"read quorum", readOf(pb.ReadConsistency_READ_CONSISTENCY_QUORUM), "quorum"},
		{"read unknown", readOf(9), ""},
		{"write unspecified", writeOf(pb.WriteConsistency_WRITE_CONSISTENCY_UNSPECIFIED), "strong"},
		{"write strong", writeOf(pb.WriteConsistency_WRITE_CONSISTENCY_STRONG), "strong"},
		{"write fast", writeOf(pb.WriteConsistency_WRITE_CONSISTENCY_FAST), "fast"},
		{"write unknown", writeOf(9), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := tt.mapping()
			if tt.label == "" {
				if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "consistency: unknown") {
					t.Fatalf("got %v, %v; want InvalidArgument naming the consistency", m, err)
				}
				return
			}
			if err != nil || m.String() != tt.label {
				t.Fatalf("got %v, %v; want %q", m, err, tt.label)
			}
		})
	}
}

func readOf(c pb.ReadConsistency) func() (fmt.Stringer, error) {
	return func() (fmt.Stringer, error) { return Read(c) }
}

func writeOf(c pb.WriteConsistency) func() (fmt.Stringer, error) {
	return func() (fmt.Stringer, error) { return Write(c) }
}
