package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/ringkv/ringkv/internal/testing/testcluster"
	"github.com/ringkv/ringkv/node"
)

// TestSplit grows a cluster from 4 partitions to 8 with kvctl split, which
// follows the splits until they are placed; every key reads back, and
// bad targets are refused.
func TestSplit(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Partitions: 4, Tweak: func(cfg *node.Config) {
		fastMembership(cfg)
		cfg.PartitionsPerNode = -1 // no split but kvctl's
	}})
	addr := c.Addrs()[0]
	for i := range 40 {
		if r := kvctl(nil, "--addr", addr, "put", fmt.Sprint("key", i), fmt.Sprint("v", i)); r.code != 0 {
			t.Fatalf("put: %+v", r)
		}
	}
	r := kvctl(nil, "--addr", c.Addrs()[1], "split", "--partitions", "8", "--timeout", moveTimeout)
	if r.code != 0 || !strings.HasPrefix(r.stdout, "splitting towards 8 partitions (now 4)\n") || !strings.Contains(r.stdout, "settled: 8 partitions, no partition moving") {
		t.Fatalf("split: %+v", r)
	}
	for i := range 40 {
		if r := kvctl(nil, "--addr", addr, "get", fmt.Sprint("key", i), "-c", "quorum"); r.code != 0 || r.stdout != fmt.Sprint("v", i, "\n") {
			t.Fatalf("get key%d after the split: %+v", i, r)
		}
	}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"split", "--partitions", "2"}, 3, "never merge"},
		{[]string{"split"}, 2, "--partitions = 0"},
		{[]string{"split", "--partitions", "9000"}, 3, "want 1 to 4096"},
		{[]string{"split", "16"}, 2, "split takes no argument"},
	} {
		r := kvctl(nil, append([]string{"--addr", addr}, tc.args...)...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("kvctl %v: %+v, want exit %d and %q", tc.args, r, tc.code, tc.want)
		}
	}
}
