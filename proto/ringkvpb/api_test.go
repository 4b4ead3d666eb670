package ringkvpb

import (
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// TestRequestsCarryRoutingFields checks the fields that routing relies on:
// every Raft request names its partition (an InstallSnapshot stream in its
// first message), and every KV request carries the forwarding hop count.
func TestRequestsCarryRoutingFields(t *testing.T) {
	tests := []struct {
		service protoreflect.ServiceDescriptor
		field   protoreflect.Name
	}{
		{File_ringkv_v1_raft_proto.Services().ByName("Raft"), "partition"},
		{File_ringkv_v1_kv_proto.Services().ByName("KV"), "hops"},
	}
	for _, tt := range tests {
		methods := tt.service.Methods()
		for i := range methods.Len() {
			m := methods.Get(i)
			in := m.Input()
			switch in.FullName() {
			case "ringkv.v1.InstallSnapshotChunk":
				in = in.Fields().ByName("request").Message()
			case "ringkv.v1.HeartbeatBatch": // each heartbeat names its own
				in = in.Fields().ByName("heartbeats").Message()
			}
			f := in.Fields().ByName(tt.field)
			if f == nil || f.Kind() != protoreflect.Uint32Kind || f.Cardinality() == protoreflect.Repeated {
				t.Errorf("%s: request %s has no uint32 field %s", m.FullName(), in.FullName(), tt.field)
			}
		}
	}
}
