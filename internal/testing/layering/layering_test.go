// Package layering checks the import arrows of docs/design.md's package
// map: each production package imports only the packages of this module
// the map allows it, and none imports a test harness (internal/testing).
// A new package fails the test until it is added to the map and to allowed.
package layering

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/ringkv/ringkv/"

// allowed is the package map's arrows: for each production package, the
// packages of this module it may import.
var allowed = map[string][]string{
	// Leaves.
	"hlc":                  nil,
	"ring":                 nil,
	"wal":                  nil,
	"proto/ringkvpb":       nil,
	"raftgroup":            nil,
	"internal/lenprefix":   nil,
	"internal/connpool":    nil,
	"internal/batchsend":   nil,
	"internal/storage":     nil,
	"fsm":                  {"hlc", "internal/storage", "ring"},
	"raftwal":              {"wal", "internal/lenprefix"},
	"transport":            {"proto/ringkvpb", "internal/lenprefix"},
	"shard":                {"fsm", "hlc", "internal/storage", "raftgroup", "raftwal", "ring", "wal", "internal/lenprefix"},
	"cluster":              {"raftgroup", "raftwal", "ring", "wal"},
	"internal/consistency": {"proto/ringkvpb", "shard"},
	"router":               {"fsm", "internal/consistency", "internal/batchsend", "proto/ringkvpb", "ring", "shard"},
	"metrics":              {"internal/consistency", "internal/storage", "proto/ringkvpb", "shard", "transport", "wal"},
	"control":              {"cluster", "proto/ringkvpb", "ring"},
	"admin":                {"cluster", "proto/ringkvpb", "ring", "router", "shard"},
	"node": {"admin", "cluster", "control", "fsm", "hlc", "internal/connpool", "internal/storage", "metrics", "proto/ringkvpb",
		"raftgroup", "ring", "router", "shard", "transport", "wal"},
	"client":     {"hlc", "internal/batchsend", "internal/connpool", "proto/ringkvpb", "ring"},
	"cmd/kvnode": {"cluster", "internal/storage", "node", "raftgroup", "ring", "shard"},
	"cmd/kvctl":  {"client", "internal/connpool", "proto/ringkvpb"},
	"deploy":     nil,
	"test/chaos": nil,
	"test/e2e":   nil,
}

func TestImportsFollowThePackageMap(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}} {{join .Imports " "}}`, module+"...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg := strings.TrimPrefix(fields[0], module)
		if strings.HasPrefix(pkg, "internal/testing/") {
			continue
		}
		ok, known := allowed[pkg]
		if !known {
			t.Errorf("%s is not in the package map: add it to docs/design.md and to allowed", pkg)
			continue
		}
		for _, imp := range fields[1:] {
			dep, ours := strings.CutPrefix(imp, module)
			if !ours {
				continue
			}
			if strings.HasPrefix(dep, "internal/testing/") {
				t.Errorf("%s imports the test harness %s: production code never imports test code", pkg, dep)
			} else if !slices.Contains(ok, dep) {
				t.Errorf("%s imports %s, which the package map does not allow", pkg, dep)
			}
		}
	}
}
