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
			ins := []protoreflect.MessageDescriptor{m.Input()}
			switch m.Input().FullName() {
			case "ringkv.v1.InstallSnapshotChunk":
				ins[0] = ins[0].Fields().ByName("request").Message()
			case "ringkv.v1.HeartbeatBatch": // each heartbeat names its own
				ins[0] = ins[0].Fields().ByName("heartbeats").Message()
			case "ringkv.v1.BatchRequest": // each request is a unary one
				ins = nil
				op := File_ringkv_v1_kv_proto.Messages().ByName("Request").Oneofs().ByName("op").Fields()
				for j := range op.Len() {
					ins = append(ins, op.Get(j).Message())
				}
			}
			for _, in := range ins {
				f := in.Fields().ByName(tt.field)
				if f == nil || f.Kind() != protoreflect.Uint32Kind || f.Cardinality() == protoreflect.Repeated {
					t.Errorf("%s: request %s has no uint32 field %s", m.FullName(), in.FullName(), tt.field)
				}
			}
		}
	}
}
