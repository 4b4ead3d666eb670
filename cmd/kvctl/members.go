package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/ringkv/ringkv/internal/connpool"
	pb "github.com/ringkv/ringkv/proto/ringkvpb"
)

const (
	// waitTimeout replaces the default --timeout of join and leave --wait:
	// moving every replica of a large node takes minutes, not seconds.
	waitTimeout = 30 * time.Minute
	// pollEvery is how often --wait reads the cluster map.
	pollEvery = 500 * time.Millisecond
	// callTimeout bounds one ClusterMap call of --wait.
	callTimeout = 5 * time.Second
	// sendAttempts bounds the tries of Join or Leave. Both are idempotent,
	// so one that failed with Unavailable (the metadata group is electing
	// a leader) is simply sent again.
	sendAttempts = 4
)

// memberCmd implements "kvctl join ID ADDR [--wait]" and "kvctl leave ID
// [--wait]". The request goes to the node at --addr, which forwards it to
// the metadata leader. --wait then follows the cluster map until the
// change has taken effect everywhere: a joined node is up and no partition
// is moving; a leaving node is gone from the map (it is removed once its
// replicas have moved off) and no partition is moving.
func memberCmd(cmd string, global, fs *flag.FlagSet, args []string, opts *options, stdout io.Writer) error {
	var wait bool
	fs.BoolVar(&wait, "wait", false, "follow the replica moves until the cluster has settled")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	nargs := map[string]int{"join": 2, "leave": 1}[cmd]
	if len(pos) != nargs {
		return usagef("%s takes %d argument(s), got %d", cmd, nargs, len(pos))
	}
	sess, err := openSession(global, fs, opts, wait)
	if err != nil {
		return err
	}
	defer sess.close()
	ctx, admin := sess.ctx, sess.admin

	id := pos[0]
	var epoch uint64
	err = send(ctx, func() error {
		var resp interface{ GetEpoch() uint64 }
		if cmd == "join" {
			resp, err = admin.Join(ctx, &pb.JoinRequest{Id: id, Address: pos[1]})
		} else {
			resp, err = admin.Leave(ctx, &pb.LeaveRequest{Id: id})
		}
		epoch = resp.GetEpoch()
		return err
	})
	if err != nil {
		st, ok := status.FromError(err)
		switch {
		case !ok:
			return fmt.Errorf("%s %s via %s: %w", cmd, id, opts.addr, err)
		case st.Code() == codes.FailedPrecondition:
			// A refusal: the message says why (e.g. too few nodes would
			// remain), the code adds nothing.
			return fmt.Errorf("%s %s via %s: %s", cmd, id, opts.addr, st.Message())
		}
		return fmt.Errorf("%s %s via %s: %s: %s", cmd, id, opts.addr, st.Code(), st.Message())
	}
	verb := map[string]string{"join": "joined", "leave": "leaving"}[cmd]
	if _, err := fmt.Fprintf(stdout, "%s %s at epoch %d\n", id, verb, epoch); err != nil || !wait {
		return err
	}
	return sess.follow(&waiter{id: id, leaving: cmd == "leave", since: epoch}, stdout, "no settled state", "moving replicas")
}

// session is what join, leave and split share: a connection to --addr and
// a context bounded by --timeout that Ctrl-C ends. Ctrl-C ends the wait,
// not the cluster's work: the metadata leader carries on.
type session struct {
	pool   *connpool.Pool
	addr   string
	admin  pb.AdminClient
	sigCtx context.Context
	ctx    context.Context
	close  func()
	// timeout is --timeout, for messages.
	timeout time.Duration
}

// openSession checks --timeout, which a command that waits raises to
// waitTimeout unless it is given, and dials --addr.
func openSession(global, fs *flag.FlagSet, opts *options, wait bool) (*session, error) {
	if wait && !isSet(global, "timeout") && !isSet(fs, "timeout") {
		opts.timeout = waitTimeout
	}
	if opts.timeout <= 0 {
		return nil, usagef("--timeout = %v, want > 0", opts.timeout)
	}
	pool := connpool.New(grpc.WithTransportCredentials(insecure.NewCredentials()))
	conn, err := pool.Dial(opts.addr)
	if err != nil {
		pool.Close()
		return nil, usagef("--addr %q: %v", opts.addr, err)
	}
	sigCtx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	ctx, cancel := context.WithTimeout(sigCtx, opts.timeout)
	return &session{pool: pool, addr: opts.addr, admin: pb.NewAdminClient(conn), sigCtx: sigCtx, ctx: ctx, timeout: opts.timeout,
		close: func() { cancel(); stop(); pool.Close() }}, nil
}

// follow runs w until the change it waits for is done; missed says what
// the timeout missed, and work what the cluster goes on doing.
func (s *session) follow(w *waiter, stdout io.Writer, missed, work string) error {
	w.pool, w.addrs = s.pool, []string{s.addr}
	if err := w.run(s.ctx, newProgress(stdout)); err != nil {
		why := fmt.Sprintf("%s within --timeout %v", missed, s.timeout)
		if s.sigCtx.Err() != nil {
			why = "interrupted"
		}
		return fmt.Errorf("stopped waiting (%s); the cluster goes on %s, follow it with kvctl status; last seen: %v", why, work, err)
	}
	return nil
}

// send calls f until it succeeds, fails other than with Unavailable, or
// sendAttempts calls were made.
func send(ctx context.Context, f func() error) error {
	backoff := 200 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := f()
		if status.Code(err) != codes.Unavailable || attempt == sendAttempts {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(backoff):
		}
		backoff *= 2
	}
}

// isSet reports whether the flag name was given on fs's command line.
func isSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// waiter follows the cluster map until the join or leave of id settled.
type waiter struct {
	pool    *connpool.Pool
	id      string
	leaving bool
	// since is the epoch that recorded the join or leave: a node whose map
	// is older has not heard of it yet, and is not asked.
	since uint64
	// addrs are the nodes to ask for the map, best first (see nextAddrs).
	addrs []string
	// prev summarizes the last map read, to tell a settled cluster from
	// one about to record a new placement (see settled).
	prev *summary
	// partitions, for kvctl split, is the count to wait for instead of a
	// member's change.
	partitions int
}

// summary is what --wait reports of one cluster map.
type summary struct {
	epoch      uint64
	partitions int
	moving     int
	// state is id's state, "" once it is no longer a member.
	state string
	// holding counts the partitions with id among their replicas or
	// learners; targeted, those whose target includes it.
	holding, targeted int
}

func summarize(m *pb.ClusterMapResponse, id string) summary {
	s := summary{epoch: m.GetEpoch(), partitions: len(m.GetPartitionMap())}
	for _, n := range m.GetNodes() {
		if n.GetId() == id {
			s.state = n.GetState()
		}
	}
	for _, pm := range m.GetPartitionMap() {
		if pm.GetMoving() {
			s.moving++
		}
		if slices.Contains(pm.GetReplicas(), id) || slices.Contains(pm.GetLearners(), id) {
			s.holding++
		}
		if slices.Contains(pm.GetTarget(), id) {
			s.targeted++
		}
	}
	return s
}

// line is the progress line for node id.
func (s summary) line(id string) string {
	state := s.state
	if state == "" {
		state = "removed"
	}
	return fmt.Sprintf("moving replicas: %d of %d partitions moving, node %s %s, %s on %s",
		s.moving, s.partitions, id, state, plural(s.holding, "partition"), id)
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// settled reports whether the change is complete as of s.
//
// A joined node is up and nothing moves. The metadata leader records the
// node up and only then a placement that includes it, so a map read in
// between looks settled without being so: it counts only once the node is
// on some partition's target, or when two reads in a row found the same
// epoch (a cluster with more nodes than replicas to place may leave the
// node empty).
func (w *waiter) settled(s summary) bool {
	if w.leaving {
		return s.state == "" && s.moving == 0
	}
	if s.state != "up" || s.moving != 0 {
		return false
	}
	return s.targeted > 0 || w.prev != nil && w.prev.epoch == s.epoch && w.prev.state == "up" && w.prev.moving == 0
}

// run polls until settled, printing a progress line whenever it changes.
// When ctx ends it returns the last progress read from a map; the poll
// that ctx cut short says nothing about the cluster, and is not shown.
func (w *waiter) run(ctx context.Context, prog progress) error {
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	var last string
	lastRead := "no cluster map read yet"
	for !ended(ctx) {
		line, done, err := w.poll(ctx)
		if ended(ctx) {
			break
		}
		if err != nil {
			line = "waiting: " + err.Error()
		} else {
			lastRead = line
		}
		if line != last {
			prog.line(line)
			last = line
		}
		if done {
			prog.done()
			return nil
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
	prog.done()
	return errors.New(lastRead)
}

// ended reports whether ctx is done or past its deadline: a call's own
// deadline derived from ctx may fire a moment before ctx's, and then it is
// ctx that ended, not the call that failed.
func ended(ctx context.Context) bool {
	d, ok := ctx.Deadline()
	return ctx.Err() != nil || ok && !time.Now().Before(d)
}

// poll reads the map once and returns the progress line and whether the
// change is complete.
func (w *waiter) poll(ctx context.Context) (line string, done bool, err error) {
	m, err := w.clusterMap(ctx)
	if err != nil {
		return "", false, err
	}
	s := summarize(m, w.id)
	if w.partitions > 0 {
		// kvctl split: every split done and its child placed.
		done = s.partitions >= w.partitions && s.moving == 0
		if done {
			return fmt.Sprintf("settled: %d partitions, no partition moving (epoch %d)", s.partitions, s.epoch), true, nil
		}
		return fmt.Sprintf("splitting: %d of %d partitions, %d moving", s.partitions, w.partitions, s.moving), false, nil
	}
	done = w.settled(s)
	w.prev = &s
	switch {
	case !done:
		return s.line(w.id), false, nil
	case w.leaving:
		return fmt.Sprintf("settled: %s removed, no partition moving (epoch %d)", w.id, s.epoch), true, nil
	}
	return fmt.Sprintf("settled: %s up with %s, no partition moving (epoch %d)", w.id, plural(s.holding, "partition"), s.epoch), true, nil
}

// clusterMap asks the nodes of w.addrs in turn for a map of epoch w.since
// or later and, on an answer, makes its members the nodes to ask next
// time. An older map still names members to ask: right after the change
// --addr may be the only node known, and the last to hear of it.
func (w *waiter) clusterMap(ctx context.Context) (*pb.ClusterMapResponse, error) {
	cands := slices.Clone(w.addrs)
	var errs, failed []string
	for i := 0; i < len(cands) && !ended(ctx); i++ {
		addr := cands[i]
		m, err := w.ask(ctx, addr)
		if err == nil && m.GetEpoch() >= w.since {
			w.addrs = nextAddrs(m, w.id, append(slices.DeleteFunc(cands, func(a string) bool { return slices.Contains(failed, a) }), failed...))
			return m, nil
		}
		if ended(ctx) {
			break
		}
		if err == nil {
			for _, n := range m.GetNodes() {
				if !slices.Contains(cands, n.GetAddress()) {
					cands = append(cands, n.GetAddress())
				}
			}
			err = fmt.Errorf("at epoch %d", m.GetEpoch())
		}
		errs = append(errs, addr+": "+status.Convert(err).Message())
		// Nodes that do not answer, or answer late, go last.
		failed = append(failed, addr)
	}
	w.addrs = append(slices.DeleteFunc(cands, func(a string) bool { return slices.Contains(failed, a) }), failed...)
	// One line: it is a progress line.
	return nil, fmt.Errorf("no node answered ClusterMap with epoch %d or later: %s", w.since, strings.Join(errs, "; "))
}

// ask reads the map of the node at addr, bounded by callTimeout so that a
// hung node costs one attempt, not the whole wait.
func (w *waiter) ask(ctx context.Context, addr string) (*pb.ClusterMapResponse, error) {
	conn, err := w.pool.Dial(addr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	return pb.NewAdminClient(conn).ClusterMap(ctx, &pb.ClusterMapRequest{})
}

// nextAddrs orders the nodes to ask for the map: the members of m but id,
// in their old order (so that one moved last for not answering stays
// last); then id, since a removed node's view no longer changes; then the
// old addresses m does not list (--addr among them, so that a cluster
// whose members all changed is still reached).
func nextAddrs(m *pb.ClusterMapResponse, id string, old []string) []string {
	var members []string
	self := ""
	for _, n := range m.GetNodes() {
		if n.GetId() == id {
			self = n.GetAddress()
		} else {
			members = append(members, n.GetAddress())
		}
	}
	var out []string
	for _, a := range old {
		if slices.Contains(members, a) {
			out = append(out, a)
		}
	}
	for _, a := range append(append(members, self), old...) {
		if a != "" && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// joinIDs joins ids with commas, "-" for none.
func joinIDs(ids []string) string {
	if len(ids) == 0 {
		return "-"
	}
	return strings.Join(ids, ",")
}

// splitCmd implements "kvctl split --partitions N [--no-wait]": the node at
// --addr forwards the target to the metadata leader, whose manager splits
// one partition at a time; kvctl then follows the cluster map, a progress
// line per change, until the map has N partitions and none is moving.
// Partitions never merge: N below the current count is refused.
func splitCmd(global, fs *flag.FlagSet, args []string, opts *options, stdout io.Writer) error {
	var n int
	var noWait bool
	fs.IntVar(&n, "partitions", 0, "the partition count to grow to (required)")
	fs.BoolVar(&noWait, "no-wait", false, "return once the target is recorded")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	switch {
	case len(pos) != 0:
		return usagef("split takes no argument, got %d", len(pos))
	case n <= 0:
		return usagef("--partitions = %d, want the partition count to grow to", n)
	}
	sess, err := openSession(global, fs, opts, !noWait)
	if err != nil {
		return err
	}
	defer sess.close()
	var resp *pb.SplitResponse
	err = send(sess.ctx, func() (err error) {
		resp, err = sess.admin.Split(sess.ctx, &pb.SplitRequest{Partitions: uint32(n)})
		return err
	})
	if err != nil {
		if st, ok := status.FromError(err); ok {
			return fmt.Errorf("split via %s: %s: %s", opts.addr, st.Code(), st.Message())
		}
		return fmt.Errorf("split via %s: %w", opts.addr, err)
	}
	if _, err := fmt.Fprintf(stdout, "splitting towards %d partitions (now %d)\n", resp.GetTarget(), resp.GetPartitions()); err != nil || noWait {
		return err
	}
	return sess.follow(&waiter{partitions: n}, stdout, "not done", "splitting")
}
