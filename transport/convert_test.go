package transport

import (
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	pb "github.com/ringkv/ringkv/proto/ringkvpb"
)

// filler sets every field of a value to a distinct non-zero value, so a field
// dropped by a conversion shows up as a difference.
type filler struct{ next uint64 }

func (f *filler) fill(v reflect.Value) {
	f.next++
	switch v.Kind() {
	case reflect.Struct:
		if v.Type() == reflect.TypeFor[time.Time]() {
			v.Set(reflect.ValueOf(time.Unix(1_700_000_000+int64(f.next), int64(f.next))))
			return
		}
		for i := range v.NumField() {
			f.fill(v.Field(i))
		}
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		f.fill(v.Elem())
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			v.SetBytes([]byte{byte(f.next), 0, byte(f.next >> 8)})
			return
		}
		v.Set(reflect.MakeSlice(v.Type(), 3, 3))
		for i := range v.Len() {
			f.fill(v.Index(i))
		}
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int64:
		v.SetInt(int64(f.next))
	case reflect.Uint8:
		v.SetUint(f.next % 6)
	case reflect.Uint32, reflect.Uint64:
		v.SetUint(f.next)
	default:
		panic("filler: add kind " + v.Kind().String())
	}
}

// wire marshals and unmarshals m, as the RPC does.
func wire[M proto.Message](t *testing.T, m M) M {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	out := m.ProtoReflect().New().Interface().(M)
	if err := proto.Unmarshal(b, out); err != nil {
		t.Fatal(err)
	}
	return out
}

func roundTrip[R any, M proto.Message](t *testing.T, toProto func(*R) M, fromProto func(M) R) {
	t.Helper()
	var in R
	(&filler{}).fill(reflect.ValueOf(&in).Elem())
	if got := fromProto(wire(t, toProto(&in))); !reflect.DeepEqual(got, in) {
		t.Errorf("%T round trip:\n got %+v\nwant %+v", in, got, in)
	}
}

// requestRoundTrip also checks that the partition travels with the request.
func requestRoundTrip[R any, M interface {
	proto.Message
	GetPartition() uint32
}](t *testing.T, toProto func(uint32, *R) M, fromProto func(M) *R) {
	t.Helper()
	const partition = 0xfeedbeef
	var in R
	(&filler{}).fill(reflect.ValueOf(&in).Elem())
	m := wire(t, toProto(partition, &in))
	if m.GetPartition() != partition {
		t.Errorf("%T partition = %d, want %d", m, m.GetPartition(), partition)
	}
	if got := fromProto(m); !reflect.DeepEqual(*got, in) {
		t.Errorf("%T round trip:\n got %+v\nwant %+v", in, *got, in)
	}
}

func TestConvertRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		run  func(*testing.T)
	}{
		{"AppendEntriesRequest", func(t *testing.T) {
			requestRoundTrip(t, appendEntriesRequestToProto, appendEntriesRequestFromProto)
		}},
		{"AppendEntriesResponse", func(t *testing.T) {
			roundTrip(t, appendEntriesResponseToProto, appendEntriesResponseFromProto)
		}},
		{"RequestVoteRequest", func(t *testing.T) {
			requestRoundTrip(t, requestVoteRequestToProto, requestVoteRequestFromProto)
		}},
		{"RequestVoteResponse", func(t *testing.T) {
			roundTrip(t, requestVoteResponseToProto, requestVoteResponseFromProto)
		}},
		{"RequestPreVoteRequest", func(t *testing.T) {
			requestRoundTrip(t, requestPreVoteRequestToProto, requestPreVoteRequestFromProto)
		}},
		{"RequestPreVoteResponse", func(t *testing.T) {
			roundTrip(t, requestPreVoteResponseToProto, requestPreVoteResponseFromProto)
		}},
		{"TimeoutNowRequest", func(t *testing.T) {
			requestRoundTrip(t, timeoutNowRequestToProto, timeoutNowRequestFromProto)
		}},
		{"TimeoutNowResponse", func(t *testing.T) {
			roundTrip(t, timeoutNowResponseToProto, timeoutNowResponseFromProto)
		}},
		{"InstallSnapshotRequest", func(t *testing.T) {
			requestRoundTrip(t, installSnapshotRequestToProto, installSnapshotRequestFromProto)
		}},
		{"InstallSnapshotResponse", func(t *testing.T) {
			roundTrip(t, installSnapshotResponseToProto, installSnapshotResponseFromProto)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, tt.run)
	}
}

func TestConvertEmptyAppendEntries(t *testing.T) {
	// A heartbeat has no entries and a zero AppendedAt must stay zero, not
	// become the Unix epoch.
	tests := []struct {
		name string
		in   raft.AppendEntriesRequest
	}{
		{"heartbeat", *heartbeat(3, "127.0.0.1:1")},
		{"zero time", raft.AppendEntriesRequest{Term: 1, Entries: []*raft.Log{{Index: 1, Term: 1, Data: []byte("x")}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := appendEntriesRequestFromProto(wire(t, appendEntriesRequestToProto(1, &tt.in)))
			if !reflect.DeepEqual(*got, tt.in) {
				t.Errorf("got %+v, want %+v", *got, tt.in)
			}
		})
	}
}

// TestLogTypeMirrorsRaft checks that every raft.LogType has the proto enum
// value of the same number and name, which makes the conversion a cast.
func TestLogTypeMirrorsRaft(t *testing.T) {
	if got, want := len(pb.LogType_name), int(raft.LogConfiguration)+1; got != want {
		t.Fatalf("proto LogType has %d values, raft has %d", got, want)
	}
	for lt := raft.LogCommand; lt <= raft.LogConfiguration; lt++ {
		want := "LOG_TYPE_" + upperSnake(strings.TrimPrefix(lt.String(), "Log"))
		if got := pb.LogType(lt).String(); got != want {
			t.Errorf("raft %v (%d) is proto %s, want %s", lt, lt, got, want)
		}
	}
}

func upperSnake(camel string) string {
	var b strings.Builder
	for i, r := range camel {
		if unicode.IsUpper(r) && i > 0 {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToUpper(r))
	}
	return b.String()
}
