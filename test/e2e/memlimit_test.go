package e2e

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestGoMemoryLimitFollowsTheCgroup starts kvnode inside a cgroup (v1
// memory controller) limited to 512 MiB: it sets Go's memory limit to 90 %
// of that, so that the heap gives way before the kernel kills the process
// (docs/design.md, "Memory"). Needs root and a writable memory cgroup;
// skipped otherwise.
func TestGoMemoryLimitFollowsTheCgroup(t *testing.T) {
	group := memoryCgroup(t)
	const limit = 512 << 20
	if err := os.WriteFile(filepath.Join(group, "memory.limit_in_bytes"), []byte(strconv.Itoa(limit)), 0o644); err != nil {
		t.Skipf("cannot limit the cgroup: %v", err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	// The shell joins the group, then becomes kvnode.
	cmd := exec.Command("sh", "-c", `echo $$ >"$0/cgroup.procs" && exec "$@"`, group, kvnodeBin,
		"--id", "n1", "--listen", addr, "--peers", "n1="+addr, "--data-dir", t.TempDir(), "--log-level", "info")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	set := regexp.MustCompile(`Go memory limit set.* bytes=(\d+)`)
	deadline := time.After(time.Minute)
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatal("kvnode exited without logging its Go memory limit")
			}
			m := set.FindStringSubmatch(line)
			if m == nil {
				continue
			}
			ratio := 0.9
			if got, want := m[1], strconv.Itoa(int(ratio*limit)); got != want {
				t.Fatalf("Go memory limit %s bytes in a cgroup of %d, want %s (90 %%)", got, limit, want)
			}
			return
		case <-deadline:
			t.Fatal("kvnode did not log a Go memory limit within a minute")
		}
	}
}

// memoryCgroup makes a cgroup (v1 memory controller) under this process's
// own, removed when the test ends, or skips the test.
func memoryCgroup(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to make a cgroup")
	}
	own, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Skip(err)
	}
	var path string
	for _, l := range strings.Split(string(own), "\n") {
		if f := strings.SplitN(l, ":", 3); len(f) == 3 && f[1] == "memory" {
			path = f[2]
		}
	}
	if path == "" {
		t.Skip("no cgroup v1 memory controller")
	}
	group := filepath.Join("/sys/fs/cgroup/memory", path, fmt.Sprintf("ringkv-e2e-%d", os.Getpid()))
	if err := os.Mkdir(group, 0o755); err != nil {
		t.Skipf("cannot make a memory cgroup: %v", err)
	}
	t.Cleanup(func() {
		// The group can go once its process is gone.
		eventually(t, 30*time.Second, "the test's cgroup removed", func() bool { return os.Remove(group) == nil })
	})
	return group
}
