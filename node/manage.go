package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ringkv/ringkv/cluster"
	pb "github.com/ringkv/ringkv/proto/ringkvpb"
	"github.com/ringkv/ringkv/ring"
)

// manager is the metadata leader's bookkeeping: when it last heard from
// each member. It lives in memory only: a new leader gives every member a
// full timeout from its own start before suspecting it.
type manager struct {
	mu          sync.Mutex
	leaderSince time.Time // zero while this node does not lead
	seen        map[string]time.Time
}

func (m *manager) heard(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.seen != nil {
		m.seen[id] = time.Now()
	}
}

// lastSeen is when id was last heard from; for a member not heard from
// under this leader, the leader's start (zero for a joining member, which
// must be heard from to count as up).
func (m *manager) lastSeen(mb cluster.Member) time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	if t, ok := m.seen[mb.ID]; ok {
		return t
	}
	if mb.State == cluster.Joining {
		return time.Time{}
	}
	return m.leaderSince
}

func (m *manager) lead(leading bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case leading && m.seen == nil:
		m.leaderSince, m.seen = time.Now(), map[string]time.Time{}
	case !leading:
		m.leaderSince, m.seen = time.Time{}, nil
	}
}

// manage runs on every node and acts while the node leads the metadata
// group: it initializes a new cluster's metadata, tracks members' health,
// re-plans the placement when members change, keeps the metadata group's
// own membership in line, and advances replica moves a step at a time.
// Everything it decides is recorded in the metadata group before or after
// it is done, and every step is re-derived from the recorded and actual
// state, so a new leader finishes what a failed one started.
func (n *Node) manage() {
	n.repeat(n.cfg.ManageInterval, nil, func() bool {
		leading := n.metaMember().IsLeader()
		n.mgr.lead(leading)
		if !leading {
			return true
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := n.manageOnce(ctx); err != nil && !errors.Is(err, cluster.ErrNotLeader) {
			n.log.Warn("cluster management", "error", err)
		}
		return true
	})
}

func (n *Node) manageOnce(ctx context.Context) error {
	view := n.metaMember().State()
	if view == nil {
		// A new cluster: every initial member recorded the same view.
		_, err := n.metaMember().Propose(ctx, cluster.Command{Op: cluster.OpInit, Init: n.view.Load()})
		return err
	}
	now := time.Now()
	for _, m := range view.Members {
		if want := cluster.Health(m, n.mgr.lastSeen(m), now, n.cfg.Timeouts); want != m.State {
			n.log.Info("member health changed", "member", m.ID, "from", m.State, "to", want)
			if _, err := n.metaMember().Propose(ctx, cluster.Command{Op: cluster.OpSetState, ID: m.ID, State: want, At: now.UnixNano()}); err != nil {
				return err
			}
		}
	}
	view = n.metaMember().State()
	next, err := view.Plan(n.ring.Load(), now, n.cfg.Timeouts.ReplaceAfter)
	if err != nil {
		return err
	}
	if next != nil {
		enc, err := next.MarshalBinary()
		if err != nil {
			return err
		}
		n.log.Info("new placement", "nodes", fmt.Sprint(next.Nodes()))
		if view, err = n.metaMember().Propose(ctx, cluster.Command{Op: cluster.OpSetTarget, Target: enc}); err != nil {
			return err
		}
	}
	// A failed change of the metadata group's own membership (a peer
	// that does not answer) must not hold up the replica moves.
	metaErr := n.manageMetaGroup(view)
	n.advanceMoves(ctx, view)
	view = n.metaMember().State()
	for _, m := range view.Members {
		if (m.State == cluster.Leaving || m.State == cluster.Down) && !view.Holds(m.ID) {
			if m.ID == n.cfg.ID {
				// Once removed, this node is refused by every peer and
				// could hand leadership to none of them: hand it over
				// first, and the next leader removes this node.
				n.log.Info("handing metadata leadership over before this node is removed")
				return errors.Join(metaErr, n.metaMember().Raft().LeadershipTransfer().Error())
			}
			n.log.Info("removing a member that holds no replicas", "member", m.ID, "state", m.State)
			if _, err := n.metaMember().Propose(ctx, cluster.Command{Op: cluster.OpRemove, ID: m.ID}); err != nil {
				return errors.Join(metaErr, err)
			}
		}
	}
	if metaErr != nil {
		return fmt.Errorf("metadata group membership: %w", metaErr)
	}
	return nil
}

// manageMetaGroup keeps every member in the metadata group: up to
// MaxVoters healthy members vote, the others follow, removed ones go.
func (n *Node) manageMetaGroup(view *cluster.State) error {
	r := n.metaMember().Raft()
	f := r.GetConfiguration()
	if err := f.Error(); err != nil {
		return err
	}
	cfg := f.Configuration()
	idx := f.Index()
	voters := 0
	in := map[string]raft.ServerSuffrage{}
	for _, s := range cfg.Servers {
		in[string(s.ID)] = s.Suffrage
		if s.Suffrage == raft.Voter {
			voters++
		}
	}
	healthy := func(m *cluster.Member) bool { return m != nil && (m.State == cluster.Up || m.State == cluster.Joining) }
	for _, s := range cfg.Servers {
		if view.Member(string(s.ID)) != nil {
			continue
		}
		if string(s.ID) == n.cfg.ID {
			return r.LeadershipTransfer().Error()
		}
		n.log.Info("metadata group: removing a former member", "member", s.ID)
		return r.RemoveServer(s.ID, idx, 5*time.Second).Error()
	}
	for _, m := range view.Members {
		suf, ok := in[m.ID]
		switch {
		case !ok && voters < cluster.MaxVoters && m.State != cluster.Leaving:
			n.log.Info("metadata group: adding a voter", "member", m.ID)
			return r.AddVoter(raft.ServerID(m.ID), raft.ServerAddress(m.Addr), idx, 5*time.Second).Error()
		case !ok:
			n.log.Info("metadata group: adding a non-voter", "member", m.ID)
			return r.AddNonvoter(raft.ServerID(m.ID), raft.ServerAddress(m.Addr), idx, 5*time.Second).Error()
		case suf == raft.Nonvoter && voters < cluster.MaxVoters && healthy(view.Member(m.ID)):
			n.log.Info("metadata group: promoting a member", "member", m.ID)
			return r.AddVoter(raft.ServerID(m.ID), raft.ServerAddress(m.Addr), idx, 5*time.Second).Error()
		}
	}
	return nil
}

// advanceMoves takes one step on each partition whose configuration
// differs from its target, at most MaxMoves partitions at a time (those
// with a move under way first), in parallel.
func (n *Node) advanceMoves(ctx context.Context, view *cluster.State) {
	var started, fresh []ring.PartitionID
	for p := range ring.PartitionID(view.Partitions) {
		if !view.Moving(p) {
			continue
		}
		if moveStarted(view.Config[p]) {
			started = append(started, p)
		} else {
			fresh = append(fresh, p)
		}
	}
	moving := append(started, fresh...)
	if len(moving) > n.cfg.MaxMoves {
		moving = moving[:max(n.cfg.MaxMoves, len(started))]
	}
	var wg sync.WaitGroup
	for _, p := range moving {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := n.moveStep(ctx, view, p); err != nil {
				n.log.Debug("replica move step", "partition", p, "error", err)
			}
		}()
	}
	wg.Wait()
}

// moveStarted reports whether a configuration is mid-move: it holds a
// non-voter or more than three members.
func moveStarted(config []cluster.Server) bool {
	if len(config) > ring.ReplicationFactor {
		return true
	}
	for _, sv := range config {
		if !sv.Voter {
			return true
		}
	}
	return false
}

// moveStep asks p's primary for its configuration, records it, and takes
// the next step towards the target.
func (n *Node) moveStep(ctx context.Context, view *cluster.State, p ring.PartitionID) error {
	primary, cur, err := n.findPrimary(ctx, view, p)
	if err != nil {
		return err
	}
	if err := n.recordConfig(ctx, p, cur); err != nil {
		return err
	}
	config := serversOf(cur)
	step := cluster.NextStep(config, view.Placement().Replicas(p), primary.id)
	if m := view.Member(step.ID); (step.Kind == cluster.StepAddLearner || step.Kind == cluster.StepPromote) && (m == nil || m.State != cluster.Up) {
		// A replica is only added on a node that is up; the placement
		// leaves out a node once it is down for good.
		return nil
	}
	req := &pb.ReconfigureRequest{Partition: uint32(p), Id: step.ID, Address: view.Addr(step.ID), ConfigIndex: cur.GetConfigIndex()}
	switch step.Kind {
	case cluster.StepNone:
		return nil
	case cluster.StepAddLearner:
		req.Op = pb.ReconfigureRequest_OP_ADD_LEARNER
	case cluster.StepPromote:
		caughtUp, err := n.caughtUp(ctx, view.Addr(step.ID), p, cur.GetCommitIndex())
		if err != nil || !caughtUp {
			return err
		}
		req.Op = pb.ReconfigureRequest_OP_PROMOTE
	case cluster.StepRemove:
		req.Op = pb.ReconfigureRequest_OP_REMOVE
	case cluster.StepTransfer:
		req.Op = pb.ReconfigureRequest_OP_TRANSFER_LEADERSHIP
	}
	n.log.Info("replica move", "partition", p, "op", req.Op.String(), "replica", step.ID, "primary", primary.id)
	after, err := primary.admin.Reconfigure(ctx, req)
	if err != nil {
		return fmt.Errorf("partition %d: %s %s: %w", p, req.Op, step.ID, err)
	}
	return n.recordConfig(ctx, p, after)
}

type primaryConn struct {
	id    string
	admin pb.AdminClient
}

// findPrimary asks p's replicas, those not down first, which one leads,
// and returns it with its configuration.
func (n *Node) findPrimary(ctx context.Context, view *cluster.State, p ring.PartitionID) (primaryConn, *pb.ReconfigureResponse, error) {
	var candidates []cluster.Member
	for _, sv := range view.Config[p] {
		if m := view.Member(sv.ID); m != nil && m.State != cluster.Down {
			candidates = append(candidates, *m)
		}
	}
	var last error = fmt.Errorf("partition %d: no replica reachable", p)
	for i := 0; i < len(candidates) && i < 8; i++ {
		conn, err := n.pool.Dial(candidates[i].Addr)
		if err != nil {
			last = err
			continue
		}
		admin := pb.NewAdminClient(conn)
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		resp, err := admin.Reconfigure(cctx, &pb.ReconfigureRequest{Partition: uint32(p)})
		cancel()
		if err == nil {
			return primaryConn{id: candidates[i].ID, admin: admin}, resp, nil
		}
		last = err
		if np := pb.NotPrimaryOf(err); np != nil && np.GetPrimaryAddr() != "" {
			hint := cluster.Member{ID: np.GetPrimaryId(), Addr: np.GetPrimaryAddr()}
			if !slices.ContainsFunc(candidates[i+1:], func(m cluster.Member) bool { return m.ID == hint.ID }) {
				candidates = append(candidates, hint)
			}
		}
	}
	return primaryConn{}, nil, last
}

func serversOf(resp *pb.ReconfigureResponse) []cluster.Server {
	var out []cluster.Server
	for _, s := range resp.GetServers() {
		out = append(out, cluster.Server{ID: s.GetId(), Voter: s.GetVoter()})
	}
	return out
}

// recordConfig records p's actual configuration if it differs from the
// recorded one.
func (n *Node) recordConfig(ctx context.Context, p ring.PartitionID, resp *pb.ReconfigureResponse) error {
	cfg := serversOf(resp)
	if slices.Equal(n.metaMember().State().Config[p], cfg) {
		return nil
	}
	_, err := n.metaMember().Propose(ctx, cluster.Command{Op: cluster.OpSetConfig, Partition: uint32(p), Config: cfg})
	return err
}

// caughtUp reports whether the replica of p at addr has applied all but
// PromoteMaxLag entries of the primary's commit index.
func (n *Node) caughtUp(ctx context.Context, addr string, p ring.PartitionID, commit uint64) (bool, error) {
	conn, err := n.pool.Dial(addr)
	if err != nil {
		return false, err
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, err := pb.NewAdminClient(conn).Status(cctx, &pb.StatusRequest{})
	if err != nil {
		return false, err
	}
	for _, ps := range st.GetPartitions() {
		if ps.GetPartition() == uint32(p) {
			applied := ps.GetAppliedIndex()
			return applied > 0 && applied+n.cfg.PromoteMaxLag >= commit, nil
		}
	}
	return false, nil
}
