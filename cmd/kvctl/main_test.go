package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ringkv/ringkv/internal/testing/testcluster"
)

type result struct {
	code           int
	stdout, stderr string
}

func kvctl(stdin []byte, args ...string) result {
	var out, errOut bytes.Buffer
	code := run(args, bytes.NewReader(stdin), &out, &errOut)
	return result{code, out.String(), errOut.String()}
}

// TestCommands runs kvctl against one cluster; the cases run in order and
// build on each other's writes.
func TestCommands(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	addr := c.Addrs()[1]
	binary := []byte{0, 0xff, '\n', 0xfe, 'x'}
	tests := []struct {
		name       string
		stdin      []byte
		args       []string
		wantCode   int
		wantStdout string // exact, unless "*" (anything) or a "~" prefix (contains)
		wantStderr string // contained; empty: stderr must be empty
	}{
		{"put", nil, []string{"--addr", addr, "put", "k1", "hello"}, 0, "1\n", ""},
		{"get", nil, []string{"--addr", addr, "get", "k1"}, 0, "hello\n", ""},
		{"flags after args", nil, []string{"put", "k1", "again", "-c", "fast", "--addr", addr}, 0, "2\n", ""},
		// A fast write is visible to local reads on the primary at once, to
		// quorum reads once committed (docs/design.md): read it locally.
		{"get after fast put", nil, []string{"get", "--addr", addr, "k1", "-c", "local"}, 0, "again\n", ""},
		{"stdin value is binary-safe", binary, []string{"--addr", addr, "put", "bin", "-"}, 0, "1\n", ""},
		{"get binary", nil, []string{"--addr", addr, "get", "bin"}, 0, string(binary) + "\n", ""},
		{"dash-dash ends flags", nil, []string{"--addr", addr, "put", "--", "-k-", "-c"}, 0, "1\n", ""},
		{"get dash key", nil, []string{"--addr", addr, "get", "--", "-k-"}, 0, "-c\n", ""},
		{"del", nil, []string{"--addr", addr, "del", "k1", "-c", "strong"}, 0, "3\n", ""},
		{"quorum get deleted", nil, []string{"--addr", addr, "get", "k1", "-c", "quorum"}, 1, "", "not found"},
		{"get missing", nil, []string{"--addr", addr, "get", "never"}, 1, "", "not found"},
		{"no command", nil, []string{"--addr", addr}, 2, "", "missing command"},
		{"unknown command", nil, []string{"--addr", addr, "frob"}, 2, "", `unknown command "frob"`},
		{"put without value", nil, []string{"--addr", addr, "put", "k2"}, 2, "", "put takes 2 argument(s), got 1"},
		{"get extra arg", nil, []string{"--addr", addr, "get", "k2", "x"}, 2, "", "get takes 1 argument(s), got 2"},
		{"bad write consistency", nil, []string{"--addr", addr, "put", "k2", "v", "-c", "quorum"}, 2, "", `-c = "quorum", want strong, fast`},
		{"bad read consistency", nil, []string{"--addr", addr, "get", "k2", "-c", "strong"}, 2, "", `-c = "strong", want local, quorum`},
		{"unknown flag", nil, []string{"--addr", addr, "get", "k2", "--bogus"}, 2, "", "bogus"},
		{"bad timeout", nil, []string{"--addr", addr, "--timeout", "0s", "get", "k2"}, 2, "", "--timeout = 0s"},
		{"join without address", nil, []string{"--addr", addr, "join", "n4"}, 2, "", "join takes 2 argument(s), got 1"},
		{"leave without id", nil, []string{"--addr", addr, "leave", "--wait"}, 2, "", "leave takes 1 argument(s), got 0"},
		{"leave two ids", nil, []string{"--addr", addr, "leave", "n1", "n2"}, 2, "", "leave takes 1 argument(s), got 2"},
		{"bad timeout with wait", nil, []string{"--addr", addr, "--timeout", "0s", "leave", "n1", "--wait"}, 2, "", "--timeout = 0s"},
		{"unknown join flag", nil, []string{"--addr", addr, "join", "n4", "h:1", "--json"}, 2, "", "json"},
		{"usage errors wrote nothing", nil, []string{"--addr", addr, "get", "k2", "-c", "quorum"}, 1, "", "not found"},
		{"help", nil, []string{"get", "-h"}, 0, "~usage: kvctl", ""},
		{"server rejects oversize key", nil, []string{"--addr", addr, "put", strings.Repeat("k", 4097), "v"}, 3, "", "4096"},
	}
	for _, tc := range tests {
		if !t.Run(tc.name, func(t *testing.T) {
			got := kvctl(tc.stdin, tc.args...)
			if got.code != tc.wantCode {
				t.Fatalf("exit %d, want %d; stdout %q stderr %q", got.code, tc.wantCode, got.stdout, got.stderr)
			}
			switch {
			case strings.HasPrefix(tc.wantStdout, "~"):
				if !strings.Contains(got.stdout, tc.wantStdout[1:]) {
					t.Fatalf("stdout %q, want it to contain %q", got.stdout, tc.wantStdout[1:])
				}
			case got.stdout != tc.wantStdout:
				t.Fatalf("stdout %q, want %q", got.stdout, tc.wantStdout)
			}
			if tc.wantStderr == "" && got.stderr != "" || !strings.Contains(got.stderr, tc.wantStderr) {
				t.Fatalf("stderr %q, want it to contain %q", got.stderr, tc.wantStderr)
			}
		}) {
			return
		}
	}
}

func TestGetJSON(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	t.Setenv("RINGKV_ADDR", c.Addrs()[0])
	tests := []struct {
		name     string
		key      string
		value    []byte
		wantText bool // value is valid UTF-8
	}{
		{"text", "greeting", []byte("héllo"), true},
		{"binary", "raw\x00", []byte{0xff, 0, 0xfe}, false},
		{"empty", "empty", []byte{}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			put := kvctl(tc.value, "put", tc.key, "-")
			if put.code != 0 {
				t.Fatalf("put: %+v", put)
			}
			version, err := strconv.ParseUint(strings.TrimSpace(put.stdout), 10, 64)
			if err != nil {
				t.Fatalf("put printed %q, want a version", put.stdout)
			}
			got := kvctl(nil, "get", tc.key, "--json")
			if got.code != 0 {
				t.Fatalf("get: %+v", got)
			}
			var item jsonItem
			if err := json.Unmarshal([]byte(got.stdout), &item); err != nil {
				t.Fatalf("get --json printed %q: %v", got.stdout, err)
			}
			val, err := base64.StdEncoding.DecodeString(item.ValueBase64)
			if err != nil || !bytes.Equal(val, tc.value) || item.KeyBase64 != base64.StdEncoding.EncodeToString([]byte(tc.key)) {
				t.Fatalf("value_base64 %q key_base64 %q, want %q, %q", item.ValueBase64, item.KeyBase64, tc.value, tc.key)
			}
			if (item.Value != nil) != tc.wantText || tc.wantText && *item.Value != string(tc.value) {
				t.Fatalf("value field %v, want present = %v", item.Value, tc.wantText)
			}
			if item.Key == nil || *item.Key != tc.key || item.Version != version || item.Timestamp.WallTime == 0 {
				t.Fatalf("got %+v, want key %q version %d and a timestamp", item, tc.key, version)
			}
		})
	}
}

func TestStatus(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	addr := c.Addrs()[0]
	if r := kvctl(nil, "--addr", addr, "put", "k", "v"); r.code != 0 {
		t.Fatalf("put: %+v", r)
	}

	text := kvctl(nil, "status", "--addr", addr)
	if text.code != 0 {
		t.Fatalf("status: %+v", text)
	}
	for _, n := range c.Nodes {
		if !strings.Contains(text.stdout, n.ID()+"  ") || !strings.Contains(text.stdout, n.Addr()) {
			t.Fatalf("status does not list node %s at %s:\n%s", n.ID(), n.Addr(), text.stdout)
		}
	}

	// A replica's applied index lags its leader's for a moment after a
	// write, so wait until every partition's primary has applied the
	// write that made it primary.
	var rep statusReport
	var r result
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		r = kvctl(nil, "--addr", addr, "status", "--json")
		if r.code != 0 {
			t.Fatalf("status --json: %+v", r)
		}
		rep = statusReport{}
		if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
			t.Fatalf("status --json printed %q: %v", r.stdout, err)
		}
		if everyPrimaryApplied(rep) || time.Now().After(deadline) {
			break
		}
	}
	if len(rep.Nodes) != 3 || len(rep.Partitions) != 8 || !everyPrimaryApplied(rep) {
		t.Fatalf("want 3 nodes and 8 partitions, each with a primary that applied an entry:\n%s", r.stdout)
	}
	// Every engine has files on disk (a manifest at least): 0 is a size
	// lost on the way from the node.
	for _, n := range rep.Nodes {
		if n.EngineDiskBytes == 0 {
			t.Fatalf("node %s reports an empty engine after a write:\n%s", n.ID, r.stdout)
		}
	}
	if !strings.Contains(text.stdout, "ENGINE DISK") || !strings.Contains(text.stdout, " MiB ") {
		t.Fatalf("text status lacks the engines' sizes:\n%s", text.stdout)
	}
	for _, p := range rep.Partitions {
		for _, rs := range p.Replicas {
			if rs.State == "unreachable" || rs.AppliedIndex > rs.LastLogIndex {
				t.Fatalf("partition %d replica %+v", p.Partition, rs)
			}
		}
		if !strings.Contains(text.stdout, "\n"+strconv.Itoa(int(p.Partition))+" ") {
			t.Fatalf("text status lacks partition %d:\n%s", p.Partition, text.stdout)
		}
	}

	// A stopped node is shown as unreachable; the command still succeeds.
	c.StopNode(2)
	r = kvctl(nil, "--addr", addr, "status", "--json")
	rep = statusReport{}
	if err := json.Unmarshal([]byte(r.stdout), &rep); r.code != 0 || err != nil {
		t.Fatalf("status with a node down: %+v %v", r, err)
	}
	unreachable := 0
	for _, n := range rep.Nodes {
		if n.Error != "" {
			unreachable++
		}
	}
	if unreachable != 1 {
		t.Fatalf("%d nodes reported unreachable, want 1: %+v", unreachable, rep.Nodes)
	}
}

func everyPrimaryApplied(rep statusReport) bool {
	for _, p := range rep.Partitions {
		applied := false
		for _, rs := range p.Replicas {
			applied = applied || rs.Node == p.Primary && rs.AppliedIndex > 0
		}
		if len(p.Replicas) != 3 || !applied {
			return false
		}
	}
	return true
}

func TestUnreachableClusterFailsWithOneLine(t *testing.T) {
	addr := closedAddr(t)
	for _, cmd := range [][]string{{"get", "k"}, {"leave", "n1", "--wait"}, {"join", "n4", "127.0.0.1:1"}} {
		r := kvctl(nil, append([]string{"--addr", addr, "--timeout", "5s"}, cmd...)...)
		if r.code != 3 || r.stdout != "" || strings.Count(r.stderr, "\n") != 1 || !strings.Contains(r.stderr, addr) {
			t.Fatalf("%s: got %+v, want exit 3 and one stderr line naming %s", cmd[0], r, addr)
		}
	}
}
