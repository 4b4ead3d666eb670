package node_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/ringkv/ringkv/internal/testing/testcluster"
	"github.com/ringkv/ringkv/node"
	pb "github.com/ringkv/ringkv/proto/ringkvpb"
)

// TestPutTracedAcrossNodes sends a Put to a node that is not the key's
// primary and checks that it yields one trace holding spans of both nodes:
// the coordinator's server span and forward, and below the forward the
// primary's server span, Raft apply wait and WAL append. Raft RPCs are not
// traced.
func TestPutTracedAcrossNodes(t *testing.T) {
	exporters := map[string]*tracetest.InMemoryExporter{}
	c := testcluster.Start(t, testcluster.Options{Tweak: func(cfg *node.Config) {
		exp := tracetest.NewInMemoryExporter()
		exporters[cfg.ID] = exp
		tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp), sdktrace.WithSampler(sdktrace.AlwaysSample()))
		t.Cleanup(func() { tp.Shutdown(context.Background()) })
		cfg.TracerProvider = tp
	}})
	// A key whose primary is known and is not the coordinator, which must
	// forward; any node may coordinate (one node may lead every partition).
	var key []byte
	var primary string
	coordIdx := -1
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; coordIdx < 0; i++ {
		if time.Now().After(deadline) {
			t.Fatal("no partition with a known primary after 30s")
		}
		key = []byte(fmt.Sprintf("traced/%d", i))
		p := c.Nodes[0].Lookup(key)
		for _, n := range c.Nodes {
			if n.Replica(p).IsPrimary() {
				primary = n.ID()
			}
		}
		for ci, n := range c.Nodes {
			if primary != "" && n.ID() != primary {
				coordIdx = ci
				break
			}
		}
		if coordIdx < 0 {
			time.Sleep(10 * time.Millisecond)
		}
	}
	coord := c.Nodes[coordIdx]
	if _, err := pb.NewKVClient(c.Conn(coordIdx)).Put(context.Background(), &pb.PutRequest{Key: key, Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}

	type span struct {
		tracetest.SpanStub
		node string
	}
	var root span
	var byID map[trace.SpanID]span
	find := func(node, name string, kind trace.SpanKind) (span, bool) {
		for _, s := range byID {
			if s.node == node && s.Name == name && s.SpanKind == kind && s.SpanContext.TraceID() == root.SpanContext.TraceID() {
				return s, true
			}
		}
		return span{}, false
	}
	// descends reports whether s has ancestor a, and the path from s up.
	descends := func(s, a span) (bool, string) {
		path := []string{s.node + ":" + s.Name}
		for s.Parent.IsValid() {
			var ok bool
			if s, ok = byID[s.Parent.SpanID()]; !ok {
				return false, strings.Join(path, " <- ") + " <- (missing)"
			}
			path = append(path, s.node+":"+s.Name)
			if s.SpanContext.SpanID() == a.SpanContext.SpanID() {
				return true, strings.Join(path, " <- ")
			}
		}
		return false, strings.Join(path, " <- ")
	}
	const putMethod = "ringkv.v1.KV/Put"
	// Spans end (and are exported) after the reply is sent: poll.
	waitFor(t, 10*time.Second, "the trace's spans", func() (bool, string) {
		byID = map[trace.SpanID]span{}
		root = span{}
		var names []string
		for id, exp := range exporters {
			for _, s := range exp.GetSpans() {
				byID[s.SpanContext.SpanID()] = span{s, id}
				names = append(names, id+":"+s.Name)
				if id == coord.ID() && s.Name == putMethod && s.SpanKind == trace.SpanKindServer {
					root = span{s, id}
				}
			}
		}
		if !root.SpanContext.IsValid() {
			return false, fmt.Sprint(names)
		}
		for _, want := range []struct {
			node, name string
			kind       trace.SpanKind
		}{
			{coord.ID(), "router.forward", trace.SpanKindInternal},
			{coord.ID(), putMethod, trace.SpanKindClient},
			{primary, putMethod, trace.SpanKindServer},
			{primary, "raft.apply", trace.SpanKindInternal},
			{primary, "wal.append", trace.SpanKindInternal},
		} {
			if _, ok := find(want.node, want.name, want.kind); !ok {
				return false, fmt.Sprintf("no %s span %s on %s among %v", want.kind, want.name, want.node, names)
			}
		}
		return true, ""
	})

	if root.Parent.IsValid() {
		t.Errorf("the coordinator's server span has a parent: %v", root.Parent)
	}
	forward, _ := find(coord.ID(), "router.forward", trace.SpanKindInternal)
	served, _ := find(primary, putMethod, trace.SpanKindServer)
	apply, _ := find(primary, "raft.apply", trace.SpanKindInternal)
	walSpan, _ := find(primary, "wal.append", trace.SpanKindInternal)
	for _, check := range []struct{ s, ancestor span }{{forward, root}, {served, forward}, {apply, served}, {walSpan, apply}} {
		if ok, path := descends(check.s, check.ancestor); !ok {
			t.Errorf("%s:%s does not descend from %s:%s: %s", check.s.node, check.s.Name, check.ancestor.node, check.ancestor.Name, path)
		}
	}
	if !walSpan.StartTime.Before(walSpan.EndTime) || walSpan.StartTime.Before(apply.StartTime) {
		t.Errorf("wal.append span [%v, %v] not within raft.apply starting %v", walSpan.StartTime, walSpan.EndTime, apply.StartTime)
	}
	for _, s := range byID {
		if strings.Contains(s.Name, "ringkv.v1.Raft/") || strings.Contains(s.Name, "grpc.health") {
			t.Errorf("%s traced %s", s.node, s.Name)
		}
	}
}
