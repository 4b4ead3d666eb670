// Command kvctl reads and writes keys of a ringkv cluster and shows its
// state.
//
//	kvctl [--addr HOST:PORT] [--timeout D] put KEY VALUE [-c strong|fast]
//	kvctl [--addr HOST:PORT] [--timeout D] get KEY [-c local|quorum] [--json]
//	kvctl [--addr HOST:PORT] [--timeout D] del KEY [-c strong|fast]
//	kvctl [--addr HOST:PORT] [--timeout D] status [--json]
//	kvctl [--addr HOST:PORT] [--timeout D] join ID ADDR [--wait]
//	kvctl [--addr HOST:PORT] [--timeout D] leave ID [--wait]
//	kvctl [--addr HOST:PORT] [--timeout D] split --partitions N [--no-wait]
//
// --addr is any node of the cluster; it defaults to $RINGKV_ADDR, then
// 127.0.0.1:7001. --timeout bounds the whole command: 10s by default, 30m
// for join and leave with --wait and for split, since moving a node's replicas can take
// that long. Flags may also follow the command and its arguments; "--"
// ends the flags, so "kvctl put -- -k- v" stores the key "-k-". A VALUE of
// "-" is read from stdin, byte for byte.
//
// Output: put and del print the version they were given; get prints the
// value and a newline. get --json prints one object:
//
//	{"key": "k", "key_base64": "aw==", "value": "v", "value_base64": "dg==",
//	 "version": 3, "timestamp": {"wall_time": 1700000000000000042, "logical": 0}}
//
// key_base64 and value_base64 (standard encoding, padded) are always there
// and exact; key and value are there only when the bytes are valid UTF-8.
// wall_time is nanoseconds since the Unix epoch.
//
// status queries every node of the cluster map with Admin.Status and prints
// the nodes with their membership state (joining, up, suspect, down,
// leaving), how many partitions and primaries each holds and the size of
// its storage engine on disk (the WAL apart); then per
// partition its primary (the replica that reports itself leader), every
// replica's role, applied index and lag, the learners (replicas being
// added, still catching up) and, while the partition is moving, the target
// its replicas move to; last the number of moves in flight. --json prints
// the same as one object (a replica is as in "replicas", lag fields only
// where the primary exports them):
//
//	{"epoch": 7, "moves_in_flight": 1,
//	 "nodes": [{"id": "n1", "address": "h:7001", "state": "up", "partitions": 6, "primaries": 2,
//	            "engine_disk_bytes": 73400320}],
//	 "partitions": [{"partition": 0, "primary": "n1",
//	   "replicas": [{"node": "n1", "state": "leader", "term": 2, "applied_index": 9,
//	                 "commit_index": 9, "last_log_index": 9}],
//	   "learners": [], "target": ["n1", "n2", "n4"], "moving": true}]}
//
// A node that did not answer has an "error" and its replicas the state
// "unreachable"; it is shown, not fatal.
//
// join sends Admin.Join for the node started without --peers at ADDR, to
// become member ID; leave sends Admin.Leave, which moves ID's replicas to
// other nodes and then removes it. Either prints the metadata epoch that
// recorded it. A leave that would leave fewer than 3 nodes is refused with
// exit status 3. With --wait the command follows the cluster map every
// 500ms, printing a progress line on each change (rewritten in place on a
// terminal), until no partition is moving and a joined node is up or a
// leaving one is gone. Ctrl-C or --timeout stops the wait (exit status 3),
// not the moves.
//
// Exit status: 0 ok, 1 key not found, 2 usage error, 3 any other error,
// described in one line on stderr.
package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/ringkv/ringkv/client"
	pb "github.com/ringkv/ringkv/proto/ringkvpb"
)

// Exit statuses.
const (
	exitOK       = 0
	exitNotFound = 1
	exitUsage    = 2
	exitFailure  = 3
)

const defaultAddr = "127.0.0.1:7001"

const usage = `usage: kvctl [--addr HOST:PORT] [--timeout D (10s; 30m for --wait)] COMMAND
  put KEY VALUE [-c strong|fast]   store VALUE ("-": read stdin); prints the version
  get KEY [-c local|quorum] [--json]
  del KEY [-c strong|fast]         prints the version of the delete
  status [--json]                  nodes (state, partitions, primaries), partitions
                                   (primary, replicas, learners, applied indexes, lag,
                                   target while moving), moves in flight
  join ID ADDR [--wait]            add the node started at ADDR as ID; --wait follows
                                   the replica moves until it is up and all settled
  leave ID [--wait]                decommission ID; --wait follows until its replicas
                                   moved off and it is removed
  split --partitions N [--no-wait] grow to N partitions, one split at a time; follows
                                   until all are split and placed (never merges)
  metrics [--node ID] [--json]     request p50/p95/p99 per mode, WAL size, max lag
  health                           exit 0 if the node at --addr reports SERVING, else 3
  bench [--workload A|B|C|W|R] [--clients N] [--duration D] [--keys K] [--value-size B]
        [--distribution uniform|zipfian] [--write-consistency strong|fast]
        [--read-consistency local|quorum] [--rate OPS] [--load] [--json]
                                   YCSB-style load; HDR latency per operation type
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// usageError is a bad command line: exit status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Sprintf(format, args...)}
}

// options are the flags of every command; each command reads those it
// defines.
type options struct {
	addr        string
	timeout     time.Duration
	consistency string
	json        bool
	node        string
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	err := dispatch(args, stdin, stdout)
	var ue *usageError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(stdout, usage)
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "kvctl: %v\n%s", err, usage)
		return exitUsage
	case errors.Is(err, client.ErrNotFound):
		fmt.Fprintf(stderr, "kvctl: %v\n", err)
		return exitNotFound
	}
	fmt.Fprintf(stderr, "kvctl: %s\n", strings.ReplaceAll(err.Error(), "\n", "; "))
	return exitFailure
}

func dispatch(args []string, stdin io.Reader, stdout io.Writer) error {
	opts := options{addr: os.Getenv("RINGKV_ADDR"), timeout: 10 * time.Second}
	if opts.addr == "" {
		opts.addr = defaultAddr
	}
	global := newFlagSet("kvctl", &opts)
	if err := global.Parse(args); err != nil {
		return err
	}
	if global.NArg() == 0 {
		return usagef("missing command")
	}
	cmd, rest := global.Arg(0), global.Args()[1:]
	fs := newFlagSet(cmd, &opts)
	var nargs int
	switch cmd {
	case "put":
		fs.StringVar(&opts.consistency, "c", "strong", "write consistency: strong or fast")
		nargs = 2
	case "del":
		fs.StringVar(&opts.consistency, "c", "strong", "write consistency: strong or fast")
		nargs = 1
	case "get":
		fs.StringVar(&opts.consistency, "c", "local", "read consistency: local or quorum")
		fs.BoolVar(&opts.json, "json", false, "print a JSON object")
		nargs = 1
	case "status":
		fs.BoolVar(&opts.json, "json", false, "print a JSON object")
	case "metrics":
		fs.BoolVar(&opts.json, "json", false, "print JSON")
		fs.StringVar(&opts.node, "node", "", "only this node")
	case "health":
		return checkHealth(fs, rest, &opts, stdout)
	case "bench":
		return runBench(fs, rest, &opts, stdout, os.Stderr)
	case "join", "leave":
		return memberCmd(cmd, global, fs, rest, &opts, stdout)
	case "split":
		return splitCmd(global, fs, rest, &opts, stdout)
	default:
		return usagef("unknown command %q", cmd)
	}
	pos, err := parseInterleaved(fs, rest)
	if err != nil {
		return err
	}
	if len(pos) != nargs {
		return usagef("%s takes %d argument(s), got %d", cmd, nargs, len(pos))
	}
	if opts.timeout <= 0 {
		return usagef("--timeout = %v, want > 0", opts.timeout)
	}
	// Check the command line fully before reading stdin or dialing.
	var write client.WriteConsistency
	var read client.ReadConsistency
	switch cmd {
	case "put", "del":
		if write, err = choice("c", opts.consistency, client.Strong, client.Fast); err != nil {
			return err
		}
	case "get":
		if read, err = choice("c", opts.consistency, client.Local, client.Quorum); err != nil {
			return err
		}
	}
	var value []byte
	if cmd == "put" {
		if value, err = readValue(pos[1], stdin); err != nil {
			return err
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), opts.timeout)
	defer cancel()
	c, err := client.New(ctx, []string{opts.addr})
	if err != nil {
		return err
	}
	defer c.Close()
	switch cmd {
	case "put", "del":
		var res client.Result
		if cmd == "put" {
			res, err = c.Put(ctx, []byte(pos[0]), value, write)
		} else {
			res, err = c.Delete(ctx, []byte(pos[0]), write)
		}
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(stdout, res.Version)
		return err
	case "get":
		it, err := c.Get(ctx, []byte(pos[0]), read)
		if err != nil {
			return err
		}
		return printItem(stdout, []byte(pos[0]), it, opts.json)
	case "metrics":
		return metricsCmd(ctx, c, stdout, opts.node, opts.json)
	}
	return statusCmd(ctx, c, stdout, opts.json)
}

func newFlagSet(name string, opts *options) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	// run prints errors and usage itself, in one place.
	fs.SetOutput(io.Discard)
	fs.StringVar(&opts.addr, "addr", opts.addr, "HOST:PORT of any node (default $RINGKV_ADDR, then "+defaultAddr+")")
	fs.DurationVar(&opts.timeout, "timeout", opts.timeout, "bound on the whole command")
	return fs
}

// parseInterleaved parses flags that may come before, between or after the
// positional arguments, which it returns. After "--" everything is
// positional.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usagef("%s: %v", fs.Name(), err)
		}
		rest := fs.Args()
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

func readValue(arg string, stdin io.Reader) ([]byte, error) {
	if arg != "-" {
		return []byte(arg), nil
	}
	v, err := io.ReadAll(stdin)
	if err != nil {
		return nil, fmt.Errorf("reading VALUE from stdin: %w", err)
	}
	return v, nil
}

type jsonTimestamp struct {
	WallTime int64  `json:"wall_time"`
	Logical  uint32 `json:"logical"`
}

type jsonItem struct {
	Key         *string       `json:"key,omitempty"`
	KeyBase64   string        `json:"key_base64"`
	Value       *string       `json:"value,omitempty"`
	ValueBase64 string        `json:"value_base64"`
	Version     uint64        `json:"version"`
	Timestamp   jsonTimestamp `json:"timestamp"`
}

// utf8String returns b as a string if it is valid UTF-8, else nil.
func utf8String(b []byte) *string {
	if !utf8.Valid(b) {
		return nil
	}
	s := string(b)
	return &s
}

func printItem(w io.Writer, key []byte, it client.Item, asJSON bool) error {
	if !asJSON {
		_, err := w.Write(append(it.Value, '\n'))
		return err
	}
	return writeJSON(w, jsonItem{
		Key:         utf8String(key),
		KeyBase64:   base64.StdEncoding.EncodeToString(key),
		Value:       utf8String(it.Value),
		ValueBase64: base64.StdEncoding.EncodeToString(it.Value),
		Version:     it.Version,
		Timestamp:   jsonTimestamp{WallTime: it.Timestamp.WallTime, Logical: it.Timestamp.Logical},
	})
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

type statusReport struct {
	Epoch uint64 `json:"epoch"`
	// MovesInFlight counts the partitions that are moving.
	MovesInFlight int               `json:"moves_in_flight"`
	Nodes         []nodeStatus      `json:"nodes"`
	Partitions    []partitionStatus `json:"partitions"`
}

type nodeStatus struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	// State is the membership state the metadata group records.
	State string `json:"state"`
	// Partitions counts the partitions with the node among their replicas
	// or learners; Primaries, those it is the primary of.
	Partitions int `json:"partitions"`
	Primaries  int `json:"primaries"`
	// EngineDiskBytes is what the node's storage engine takes on disk, as
	// the node reported it; 0 if it did not answer.
	EngineDiskBytes uint64 `json:"engine_disk_bytes"`
	// Error is why the node did not answer Status; empty if it did.
	Error string `json:"error,omitempty"`
}

type partitionStatus struct {
	Partition uint32 `json:"partition"`
	// Primary is the replica that reports itself leader, in the highest
	// term if several do; empty if none does.
	Primary string `json:"primary"`
	// Replicas are the voters of the recorded Raft configuration,
	// Learners its non-voters, catching up to become voters.
	Replicas []replicaStatus `json:"replicas"`
	Learners []replicaStatus `json:"learners"`
	// Target is where the placement wants the replicas; Moving says the
	// replicas are not all there yet.
	Target []string `json:"target"`
	Moving bool     `json:"moving"`
}

type replicaStatus struct {
	Node  string `json:"node"`
	State string `json:"state"` // "unreachable" if the node did not answer
	Term  uint64 `json:"term"`
	// AppliedIndex is the last Raft log index applied to the state machine.
	AppliedIndex uint64 `json:"applied_index"`
	CommitIndex  uint64 `json:"commit_index"`
	LastLogIndex uint64 `json:"last_log_index"`
	// LagEntries and LagSeconds are a follower's replication lag as its
	// primary exports it on /metrics; absent for the primary itself, or
	// when the primary serves no metrics.
	LagEntries *uint64  `json:"lag_entries,omitempty"`
	LagSeconds *float64 `json:"lag_seconds,omitempty"`
}

func statusCmd(ctx context.Context, c *client.Client, w io.Writer, asJSON bool) error {
	m, err := c.ClusterMap(ctx)
	if err != nil {
		return err
	}
	// statuses[node] as that node reports it; a node absent did not
	// answer.
	statuses := map[string]*pb.StatusResponse{}
	unreachable := map[string]string{}
	lagOf := map[lagKey]*lag{}
	for _, n := range m.GetNodes() {
		st, err := c.Status(ctx, n.GetAddress())
		if err != nil {
			unreachable[n.GetId()] = err.Error()
			continue
		}
		// Lag is shown where the primary's metrics can be read; status
		// works without them.
		if st.GetMetricsAddress() != "" {
			if fams, err := scrape(ctx, st.GetMetricsAddress(), n.GetAddress()); err == nil {
				lags(fams, lagOf)
			}
		}
		statuses[n.GetId()] = st
	}
	rep := buildStatus(m, statuses, unreachable, lagOf)
	if asJSON {
		return writeJSON(w, rep)
	}
	return printStatus(w, rep)
}

// buildStatus joins the cluster map with what each node reported
// (statuses[node]), the nodes that did not answer and the lags their
// primaries export.
func buildStatus(m *pb.ClusterMapResponse, statuses map[string]*pb.StatusResponse,
	unreachable map[string]string, lagOf map[lagKey]*lag) statusReport {
	rep := statusReport{Epoch: m.GetEpoch()}
	// replicas[node][partition]
	replicas := map[string]map[uint32]*pb.PartitionStatus{}
	for id, st := range statuses {
		replicas[id] = map[uint32]*pb.PartitionStatus{}
		for _, ps := range st.GetPartitions() {
			replicas[id][ps.GetPartition()] = ps
		}
	}
	for _, pm := range m.GetPartitionMap() {
		p := pm.GetPartition()
		ps := partitionStatus{
			Partition: p,
			Replicas:  []replicaStatus{},
			Learners:  []replicaStatus{},
			Target:    slices.DeleteFunc(slices.Clone(pm.GetTarget()), func(id string) bool { return id == "" }),
			Moving:    pm.GetMoving(),
		}
		if ps.Target == nil {
			ps.Target = []string{}
		}
		if ps.Moving {
			rep.MovesInFlight++
		}
		var leaderTerm uint64
		replicaOf := func(id string) replicaStatus {
			r := replicas[id][p]
			if r == nil {
				return replicaStatus{Node: id, State: "unreachable"}
			}
			rs := replicaStatus{
				Node:         id,
				State:        strings.ToLower(strings.TrimPrefix(r.GetState().String(), "RAFT_STATE_")),
				Term:         r.GetTerm(),
				AppliedIndex: r.GetAppliedIndex(),
				CommitIndex:  r.GetCommitIndex(),
				LastLogIndex: r.GetLastLogIndex(),
			}
			if r.GetState() == pb.RaftState_RAFT_STATE_LEADER && r.GetTerm() >= leaderTerm {
				ps.Primary, leaderTerm = id, r.GetTerm()
			}
			if l := lagOf[lagKey{p, id}]; l != nil {
				rs.LagEntries = &l.entries
				if l.timed {
					rs.LagSeconds = &l.seconds
				}
			}
			return rs
		}
		for _, id := range pm.GetReplicas() {
			ps.Replicas = append(ps.Replicas, replicaOf(id))
		}
		for _, id := range pm.GetLearners() {
			ps.Learners = append(ps.Learners, replicaOf(id))
		}
		rep.Partitions = append(rep.Partitions, ps)
	}
	for _, n := range m.GetNodes() {
		ns := nodeStatus{ID: n.GetId(), Address: n.GetAddress(), State: n.GetState(), Error: unreachable[n.GetId()],
			EngineDiskBytes: statuses[n.GetId()].GetEngineDiskBytes()}
		for _, ps := range rep.Partitions {
			if slices.ContainsFunc(ps.Replicas, func(r replicaStatus) bool { return r.Node == ns.ID }) ||
				slices.ContainsFunc(ps.Learners, func(r replicaStatus) bool { return r.Node == ns.ID }) {
				ns.Partitions++
			}
			if ps.Primary == ns.ID {
				ns.Primaries++
			}
		}
		rep.Nodes = append(rep.Nodes, ns)
	}
	return rep
}

func printStatus(w io.Writer, rep statusReport) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "NODE\tADDRESS\tSTATE\tPARTITIONS\tPRIMARIES\tENGINE DISK\tSTATUS\n")
	for _, n := range rep.Nodes {
		st, disk := "ok", bytesString(float64(n.EngineDiskBytes))
		if n.Error != "" {
			st, disk = "unreachable: "+n.Error, "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%s\n", n.ID, n.Address, n.State, n.Partitions, n.Primaries, disk, st)
	}
	fmt.Fprintf(tw, "\nPARTITION\tPRIMARY\tREPLICAS (state/term/applied, lag entries/seconds)\n")
	for _, p := range rep.Partitions {
		primary := p.Primary
		if primary == "" {
			primary = "(none)"
		}
		var rs []string
		for _, r := range p.Replicas {
			rs = append(rs, replicaString(r))
		}
		for _, r := range p.Learners {
			rs = append(rs, "learner "+replicaString(r))
		}
		if p.Moving {
			rs = append(rs, "moving to "+joinIDs(p.Target))
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\n", p.Partition, primary, strings.Join(rs, "  "))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "\nmoves in flight: %d\n", rep.MovesInFlight)
	return err
}

func replicaString(r replicaStatus) string {
	s := fmt.Sprintf("%s=%s/%d/%d", r.Node, r.State, r.Term, r.AppliedIndex)
	if r.LagEntries != nil {
		s += fmt.Sprintf(" lag %d", *r.LagEntries)
		if r.LagSeconds != nil {
			s += fmt.Sprintf("/%.3fs", *r.LagSeconds)
		}
	}
	return s
}
