package control

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ringkv/ringkv/cluster"
	pb "github.com/ringkv/ringkv/proto/ringkvpb"
)

// health is the metadata leader's bookkeeping: when it last heard from
// each member. It lives in memory only: a new leader gives every member a
// full timeout from its own start before suspecting it.
type health struct {
	mu          sync.Mutex
	leaderSince time.Time // zero while this node does not lead
	seen        map[string]time.Time
}

func (m *health) heard(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.seen != nil {
		m.seen[id] = time.Now()
	}
}

// lastSeen is when id was last heard from; for a member not heard from
// under this leader, the leader's start (zero for a joining member, which
// must be heard from to count as up).
func (m *health) lastSeen(mb cluster.Member) time.Time {
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

func (m *health) lead(leading bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case leading && m.seen == nil:
		m.leaderSince, m.seen = time.Now(), map[string]time.Time{}
	case !leading:
		m.leaderSince, m.seen = time.Time{}, nil
	}
}

// heartbeat reports this node to the metadata leader, which marks silent
// members suspect and then down. An answer that this node was removed
// stops it: its replicas were re-created elsewhere, and it must not serve
// or vote with stale data.
func (c *Controller) heartbeat() {
	every := min(max(c.cfg.Timeouts.SuspectAfter/5, 100*time.Millisecond), time.Second)
	round := 0
	c.repeat(every, nil, func() bool {
		round++
		id, addr := c.cfg.Meta.Leader()
		if string(id) == c.cfg.ID {
			c.health.heard(c.cfg.ID)
			return true
		}
		view := c.cfg.View()
		if id == "" {
			// No leader known — maybe this node was removed from the
			// metadata group: ask the members in turn, any of which
			// refuses a removed node.
			others := slices.DeleteFunc(slices.Clone(view.Members), func(m cluster.Member) bool { return m.ID == c.cfg.ID })
			if len(others) == 0 {
				return true
			}
			m := others[round%len(others)]
			id, addr = raft.ServerID(m.ID), raft.ServerAddress(m.Addr)
		}
		conn, err := c.cfg.Dial(string(addr))
		if err != nil {
			return true
		}
		ctx, cancel := context.WithTimeout(context.Background(), every)
		defer cancel()
		_, err = pb.NewAdminClient(conn).Heartbeat(ctx, &pb.HeartbeatRequest{NodeId: c.cfg.ID, Address: c.cfg.Advertise, ClusterId: view.ClusterID})
		if status.Code(err) == codes.PermissionDenied {
			c.cfg.OnRemoved(fmt.Errorf("the metadata leader %s refused this node: %s", id, status.Convert(err).Message()))
			return false
		}
		return true
	})
}
