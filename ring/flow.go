package ring

import (
	"container/heap"
	"math"
)

// flowNet is a min-cost flow network solved by the primal-dual method:
// Dijkstra on reduced costs finds the current shortest s→t distance, then a
// Dinic max flow over the arcs of zero reduced cost pushes every unit that
// can travel at that distance before the next Dijkstra. Placement networks
// have few distinct path costs, so a handful of phases route all 3P units;
// plain successive shortest paths would run one Dijkstra per unit.
//
// Arcs come in pairs: arc a^1 is the residual reverse of arc a. All costs
// are non-negative, so potentials start at zero.
type flowNet struct {
	adj  [][]int32 // vertex → its arcs, in insertion order (the tie-break)
	to   []int32
	cap  []int32 // residual capacity
	cost []int64

	pot   []int64 // vertex potentials: reduced cost = cost + pot[u] - pot[v]
	level []int32 // Dinic BFS level over admissible arcs, -1 if unreached
	next  []int   // Dinic current-arc index into adj[u]
}

func newFlowNet(vertices, arcs int) *flowNet {
	return &flowNet{
		adj:   make([][]int32, vertices),
		to:    make([]int32, 0, 2*arcs),
		cap:   make([]int32, 0, 2*arcs),
		cost:  make([]int64, 0, 2*arcs),
		pot:   make([]int64, vertices),
		level: make([]int32, vertices),
		next:  make([]int, vertices),
	}
}

// addArc adds u→v and returns its index; flow(index) reads its flow later.
func (g *flowNet) addArc(u, v int, capacity int32, cost int64) int {
	a := len(g.to)
	g.to = append(g.to, int32(v), int32(u))
	g.cap = append(g.cap, capacity, 0)
	g.cost = append(g.cost, cost, -cost)
	g.adj[u] = append(g.adj[u], int32(a))
	g.adj[v] = append(g.adj[v], int32(a+1))
	return a
}

// flow returns the flow on arc a: the residual capacity of its reverse.
func (g *flowNet) flow(a int) int32 { return g.cap[a^1] }

func (g *flowNet) reduced(u, a int) int64 {
	return g.cost[a] + g.pot[u] - g.pot[g.to[a]]
}

// minCostFlow routes up to demand units from s to t at minimum total cost
// and returns how many it routed.
func (g *flowNet) minCostFlow(s, t, demand int) int {
	routed := 0
	for routed < demand && g.reprice(s, t) {
		for routed < demand && g.levelize(s, t) {
			for i := range g.next {
				g.next[i] = 0
			}
			for routed < demand {
				pushed := g.push(s, t, int32(demand-routed))
				if pushed == 0 {
					break
				}
				routed += int(pushed)
			}
		}
	}
	return routed
}

// reprice runs Dijkstra from s on reduced costs and adds each vertex's
// distance, capped at t's, to its potential. Arcs stay non-negative (the
// cap preserves d(v) ≤ d(u) + rc) and every shortest s→t path becomes a
// path of zero reduced cost. It reports whether t is reachable.
func (g *flowNet) reprice(s, t int) bool {
	dist := make([]int64, len(g.adj))
	for i := range dist {
		dist[i] = math.MaxInt64
	}
	dist[s] = 0
	q := &distHeap{{v: int32(s)}}
	for q.Len() > 0 {
		it := heap.Pop(q).(distItem)
		u := int(it.v)
		if it.d > dist[u] {
			continue
		}
		for _, a := range g.adj[u] {
			if g.cap[a] == 0 {
				continue
			}
			v := g.to[a]
			if d := it.d + g.reduced(u, int(a)); d < dist[v] {
				dist[v] = d
				heap.Push(q, distItem{d: d, v: v})
			}
		}
	}
	if dist[t] == math.MaxInt64 {
		return false
	}
	for v, d := range dist {
		g.pot[v] += min(d, dist[t])
	}
	return true
}

func (g *flowNet) admissible(u, a int) bool {
	return g.cap[a] > 0 && g.reduced(u, a) == 0
}

// levelize computes BFS levels from s over admissible arcs; levels keep the
// blocking-flow search off zero-cost cycles. It reports whether t is reached.
func (g *flowNet) levelize(s, t int) bool {
	for i := range g.level {
		g.level[i] = -1
	}
	g.level[s] = 0
	queue := []int32{int32(s)}
	for len(queue) > 0 {
		u := queue[0]
		queue = queue[1:]
		for _, a := range g.adj[u] {
			v := g.to[a]
			if g.level[v] < 0 && g.admissible(int(u), int(a)) {
				g.level[v] = g.level[u] + 1
				queue = append(queue, v)
			}
		}
	}
	return g.level[t] >= 0
}

// push sends up to limit units from u to t along one level-increasing
// admissible path and returns how many it sent.
func (g *flowNet) push(u, t int, limit int32) int32 {
	if u == t {
		return limit
	}
	for ; g.next[u] < len(g.adj[u]); g.next[u]++ {
		a := int(g.adj[u][g.next[u]])
		v := int(g.to[a])
		if g.level[v] != g.level[u]+1 || !g.admissible(u, a) {
			continue
		}
		if f := g.push(v, t, min(limit, g.cap[a])); f > 0 {
			g.cap[a] -= f
			g.cap[a^1] += f
			return f
		}
	}
	return 0
}

type distItem struct {
	d int64
	v int32
}

type distHeap []distItem

func (h distHeap) Len() int           { return len(h) }
func (h distHeap) Less(i, j int) bool { return h[i].d < h[j].d || h[i].d == h[j].d && h[i].v < h[j].v }
func (h distHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *distHeap) Push(x any)        { *h = append(*h, x.(distItem)) }
func (h *distHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	*h = old[:len(old)-1]
	return it
}
