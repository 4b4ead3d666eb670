package router

import (
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/ringkv/ringkv/proto/ringkvpb"
)

// scriptedKV answers a Put by its key: "slow" waits for its context,
// "forward" reports a forward to the primary, anything else succeeds with
// the key's length as version.
type scriptedKV struct{ pb.UnimplementedKVServer }

func (scriptedKV) Put(ctx context.Context, req *pb.PutRequest) (*pb.PutResponse, error) {
	switch string(req.GetKey()) {
	case "slow":
		<-ctx.Done()
		return nil, Status(ctx.Err())
	case "forward":
		tellPrimary(ctx, 3, "10.0.0.3:7000")
	}
	return &pb.PutResponse{Version: uint64(len(req.GetKey()))}, nil
}

func (kv scriptedKV) Batch(s pb.KV_BatchServer) error { return ServeBatch(s, kv, nil) }

func TestServeBatch(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	pb.RegisterKVServer(srv, scriptedKV{})
	go srv.Serve(lis)
	defer srv.Stop()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := pb.NewKVClient(conn).Batch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	put := func(id uint64, key string, timeout uint64) *pb.Request {
		return &pb.Request{Id: id, TimeoutMicros: timeout, Op: &pb.Request_Put{Put: &pb.PutRequest{Key: []byte(key)}}}
	}
	if err := stream.Send(&pb.BatchRequest{Requests: []*pb.Request{
		put(1, "slow", 50_000),
		put(2, "abc", 0),
		{Id: 3},
		put(4, "forward", 0),
	}}); err != nil {
		t.Fatal(err)
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	got := map[uint64]*pb.Response{}
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range msg.GetResponses() {
			if got[r.GetId()] != nil {
				t.Fatalf("request %d answered twice", r.GetId())
			}
			got[r.GetId()] = r
		}
	}
	tests := []struct {
		id       uint64
		code     codes.Code
		contains string
		version  uint64
		primary  string
	}{
		{1, codes.DeadlineExceeded, "", 0, ""},
		{2, codes.OK, "", 3, ""},
		{3, codes.InvalidArgument, "requests[id=3].op", 0, ""},
		{4, codes.OK, "", 7, pb.FormatPrimary(3, "10.0.0.3:7000")},
	}
	for _, tt := range tests {
		r := got[tt.id]
		if r == nil {
			t.Errorf("request %d: no answer", tt.id)
			continue
		}
		code, msg := codes.OK, ""
		if e := r.GetError(); e != nil {
			code, msg = codes.Code(e.GetCode()), e.GetMessage()
		}
		if code != tt.code || !strings.Contains(msg, tt.contains) || r.GetPut().GetVersion() != tt.version || r.GetPrimary() != tt.primary {
			t.Errorf("request %d: answer %v, want code %v (message with %q), version %d, primary %q", tt.id, r, tt.code, tt.contains, tt.version, tt.primary)
		}
	}
}
