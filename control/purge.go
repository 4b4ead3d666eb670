package control

import "time"

// Bounds of purgeInterval.
const (
	// maxPurgeInterval: a round costs one log entry per led partition that
	// holds tombstones, so rounds more often than hourly would cost little,
	// but they would not save anything either: with the default 24 h TTL a
	// tombstone outlives its TTL by at most an hour.
	maxPurgeInterval = time.Hour
	// minPurgeInterval keeps a tiny TTL (tests use one) from turning the
	// loop into a stream of proposals.
	minPurgeInterval = time.Second
)

// purgeInterval is how often a node proposes tombstone purges for a
// tombstone TTL: a quarter of it, so a tombstone outlives its TTL by at
// most a quarter, but at least every hour and at most every second; 0
// (never) for a TTL of 0 or less. It is derived rather than configured
// because the TTL is the one thing an operator chooses: how long a delete
// still beats a late write (docs/design.md, "Versions and conflicts").
func purgeInterval(ttl time.Duration) time.Duration {
	if ttl <= 0 {
		return 0
	}
	return min(max(ttl/4, minPurgeInterval), maxPurgeInterval)
}

// purgeTombstones has every partition this node leads purge its expired
// tombstones, once per purgeInterval(TombstoneTTL).
func (c *Controller) purgeTombstones() {
	c.repeat(purgeInterval(c.cfg.TombstoneTTL), nil, func() bool {
		c.purgeRound()
		return true
	})
}

// purgeRound asks the node to purge each partition it leads. The purge
// itself (its cutoff, the proposal) is the replica's; the loop only picks
// the partitions. A partition that fails (its leadership moved, no quorum)
// is left to the next round, and the others still go. Stop ends a round
// between partitions, as each purge may take up to the node's op timeout.
func (c *Controller) purgeRound() {
	for _, p := range c.host.Partitions() {
		select {
		case <-c.stop:
			return
		default:
		}
		if !c.host.Leads(p) {
			continue
		}
		n, err := c.host.Purge(p)
		switch {
		case err != nil:
			c.log.Warn("tombstone purge failed; the next round retries", "partition", p, "error", err)
		case n > 0:
			c.log.Info("purged tombstones older than the TTL", "partition", p, "tombstones", n, "ttl", c.cfg.TombstoneTTL)
		}
	}
}
