package control

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

// manage runs on every node and acts while the node leads the metadata
// group: it initializes a new cluster's metadata, tracks members' health,
// re-plans the placement when members change, keeps the metadata group's
// own membership in line, and advances replica moves a step at a time.
// Everything it decides is recorded in the metadata group before or after
// it is done, and every step is re-derived from the recorded and actual
// state, so a new leader finishes what a failed one started.
func (c *Controller) manage() {
	c.repeat(c.cfg.ManageInterval, nil, func() bool {
		leading := c.cfg.Meta.IsLeader()
		c.health.lead(leading)
		if !leading {
			return true
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := c.manageOnce(ctx); err != nil && !errors.Is(err, cluster.ErrNotLeader) {
			c.log.Warn("cluster management", "error", err)
		}
		return true
	})
}

func (c *Controller) manageOnce(ctx context.Context) error {
	view := c.cfg.Meta.State()
	if view == nil {
		// A new cluster: every initial member recorded the same view.
		_, err := c.cfg.Meta.Propose(ctx, cluster.Command{Op: cluster.OpInit, Init: c.cfg.View()})
		return err
	}
	now := time.Now()
	for _, m := range view.Members {
		if want := cluster.Health(m, c.health.lastSeen(m), now, c.cfg.Timeouts); want != m.State {
			c.log.Info("member health changed", "member", m.ID, "from", m.State, "to", want)
			if _, err := c.cfg.Meta.Propose(ctx, cluster.Command{Op: cluster.OpSetState, ID: m.ID, State: want, At: now.UnixNano()}); err != nil {
				return err
			}
		}
	}
	view = c.cfg.Meta.State()
	r, err := view.Ring()
	if err != nil {
		return err
	}
	next, err := view.Plan(r, now, c.cfg.Timeouts.ReplaceAfter)
	if err != nil {
		return err
	}
	if next != nil {
		enc, err := next.MarshalBinary()
		if err != nil {
			return err
		}
		c.log.Info("new placement", "nodes", fmt.Sprint(next.Nodes()))
		if view, err = c.cfg.Meta.Propose(ctx, cluster.Command{Op: cluster.OpSetTarget, Target: enc}); err != nil {
			return err
		}
	}
	// A failed change of the metadata group's own membership (a peer
	// that does not answer) must not hold up the replica moves.
	metaErr := c.manageMetaGroup(view)
	c.advanceMoves(ctx, view)
	if err := c.advanceSplit(ctx, c.cfg.Meta.State()); err != nil {
		c.log.Debug("partition split", "error", err)
	}
	view = c.cfg.Meta.State()
	for _, m := range view.Members {
		if (m.State == cluster.Leaving || m.State == cluster.Down) && !view.Holds(m.ID) {
			if m.ID == c.cfg.ID {
				// Once removed, this node is refused by every peer and
				// could hand leadership to none of them: hand it over
				// first, and the next leader removes this node.
				c.log.Info("handing metadata leadership over before this node is removed")
				return errors.Join(metaErr, c.cfg.Meta.Raft().LeadershipTransfer().Error())
			}
			c.log.Info("removing a member that holds no replicas", "member", m.ID, "state", m.State)
			if _, err := c.cfg.Meta.Propose(ctx, cluster.Command{Op: cluster.OpRemove, ID: m.ID}); err != nil {
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
// MaxVoters healthy members vote, the others follow, removed ones go. A
// voter that is down gives its vote up while a healthy non-voter can take
// it, so that losing voters one at a time never costs the group its
// quorum while enough members live; the next round promotes the
// non-voter. One change per round, as raft takes one at a time.
func (c *Controller) manageMetaGroup(view *cluster.State) error {
	r := c.cfg.Meta.Raft()
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
		if string(s.ID) == c.cfg.ID {
			return r.LeadershipTransfer().Error()
		}
		c.log.Info("metadata group: removing a former member", "member", s.ID)
		return r.RemoveServer(s.ID, idx, 5*time.Second).Error()
	}
	standby := slices.ContainsFunc(view.Members, func(m cluster.Member) bool {
		return in[m.ID] == raft.Nonvoter && healthy(&m)
	})
	for _, s := range cfg.Servers {
		if m := view.Member(string(s.ID)); standby && s.Suffrage == raft.Voter && m.State == cluster.Down {
			c.log.Info("metadata group: a down voter gives its vote to a healthy member", "member", s.ID)
			return r.DemoteVoter(s.ID, idx, 5*time.Second).Error()
		}
	}
	for _, m := range view.Members {
		suf, ok := in[m.ID]
		switch {
		case !ok && voters < cluster.MaxVoters && m.State != cluster.Leaving:
			c.log.Info("metadata group: adding a voter", "member", m.ID)
			return r.AddVoter(raft.ServerID(m.ID), raft.ServerAddress(m.Addr), idx, 5*time.Second).Error()
		case !ok:
			c.log.Info("metadata group: adding a non-voter", "member", m.ID)
			return r.AddNonvoter(raft.ServerID(m.ID), raft.ServerAddress(m.Addr), idx, 5*time.Second).Error()
		case suf == raft.Nonvoter && voters < cluster.MaxVoters && healthy(view.Member(m.ID)):
			c.log.Info("metadata group: promoting a member", "member", m.ID)
			return r.AddVoter(raft.ServerID(m.ID), raft.ServerAddress(m.Addr), idx, 5*time.Second).Error()
		}
	}
	return nil
}

// advanceMoves takes one step on each partition whose configuration
// differs from its target, at most MaxMoves partitions at a time (those
// with a move under way first), in parallel.
func (c *Controller) advanceMoves(ctx context.Context, view *cluster.State) {
	var started, fresh []ring.PartitionID
	for p := range ring.PartitionID(view.Partitions) {
		if !view.Moving(p) || (view.Splitting != nil && uint32(p) == view.Splitting.Parent) {
			continue
		}
		if moveStarted(view.Config[p]) {
			started = append(started, p)
		} else {
			fresh = append(fresh, p)
		}
	}
	moving := append(started, fresh...)
	if len(moving) > c.cfg.MaxMoves {
		moving = moving[:max(c.cfg.MaxMoves, len(started))]
	}
	var wg sync.WaitGroup
	for _, p := range moving {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.moveStep(ctx, view, p); err != nil {
				c.log.Debug("replica move step", "partition", p, "error", err)
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
func (c *Controller) moveStep(ctx context.Context, view *cluster.State, p ring.PartitionID) error {
	primary, cur, err := c.findPrimary(ctx, view, p)
	if err != nil {
		return err
	}
	if err := c.recordConfig(ctx, p, cur); err != nil {
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
		caughtUp, err := c.caughtUp(ctx, view.Addr(step.ID), p, cur.GetCommitIndex())
		if err != nil || !caughtUp {
			return err
		}
		req.Op = pb.ReconfigureRequest_OP_PROMOTE
	case cluster.StepRemove:
		req.Op = pb.ReconfigureRequest_OP_REMOVE
	case cluster.StepTransfer:
		req.Op = pb.ReconfigureRequest_OP_TRANSFER_LEADERSHIP
	}
	c.log.Info("replica move", "partition", p, "op", req.Op.String(), "replica", step.ID, "primary", primary.id)
	after, err := primary.admin.Reconfigure(ctx, req)
	if err != nil {
		return fmt.Errorf("partition %d: %s %s: %w", p, req.Op, step.ID, err)
	}
	return c.recordConfig(ctx, p, after)
}

type primaryConn struct {
	id    string
	admin pb.AdminClient
}

// findPrimary asks p's replicas, those not down first, which one leads,
// and returns it with its configuration.
func (c *Controller) findPrimary(ctx context.Context, view *cluster.State, p ring.PartitionID) (primaryConn, *pb.ReconfigureResponse, error) {
	var candidates []cluster.Member
	for _, sv := range view.Config[p] {
		if m := view.Member(sv.ID); m != nil && m.State != cluster.Down {
			candidates = append(candidates, *m)
		}
	}
	var last error = fmt.Errorf("partition %d: no replica reachable", p)
	for i := 0; i < len(candidates) && i < 8; i++ {
		conn, err := c.cfg.Dial(candidates[i].Addr)
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
func (c *Controller) recordConfig(ctx context.Context, p ring.PartitionID, resp *pb.ReconfigureResponse) error {
	cfg := serversOf(resp)
	if slices.Equal(c.cfg.Meta.State().Config[p], cfg) {
		return nil
	}
	_, err := c.cfg.Meta.Propose(ctx, cluster.Command{Op: cluster.OpSetConfig, Partition: uint32(p), Config: cfg})
	return err
}

// caughtUp reports whether the replica of p at addr has applied all but
// PromoteMaxLag entries of the primary's commit index.
func (c *Controller) caughtUp(ctx context.Context, addr string, p ring.PartitionID, commit uint64) (bool, error) {
	conn, err := c.cfg.Dial(addr)
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
			return applied > 0 && applied+c.cfg.PromoteMaxLag >= commit, nil
		}
	}
	return false, nil
}
