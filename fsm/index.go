package fsm

import (
	"hash/maphash"
	"sync"
	"unsafe"
)

// indexShards spreads point reads over this many locks, so two cores
// reading different keys rarely touch the same lock word and a reader
// contends with the writer only when both hit the same shard.
const indexShards = 256

// index maps every key the writer state holds, tombstones included, to its
// entry: the same immutable *entry the B-tree item points at. It serves
// Store.Get, Store.Lookup and the writer's conflict check in a hash lookup
// of two or three cache misses, where a B-tree descent over 1M keys takes
// about twenty. The single writer mutates it in place, a key at a time, so
// unlike a Snapshot it is not a consistent view of one applied index.
type index struct {
	seed   maphash.Seed
	shards [indexShards]indexShard
}

type indexShard struct {
	mu sync.RWMutex
	// m's keys alias the entries' own key bytes, which are never modified,
	// so the index copies no key; assigning an existing key also replaces
	// the stored string, releasing the old entry's bytes.
	m map[string]*entry
}

func newIndex() *index {
	x := &index{seed: maphash.MakeSeed()}
	for i := range x.shards {
		x.shards[i].m = make(map[string]*entry)
	}
	return x
}

func (x *index) shard(key []byte) *indexShard {
	return &x.shards[maphash.Bytes(x.seed, key)%indexShards]
}

func (x *index) get(key []byte) (*entry, bool) {
	sh := x.shard(key)
	sh.mu.RLock()
	e, ok := sh.m[string(key)]
	sh.mu.RUnlock()
	return e, ok
}

// set maps e's key to e in one assignment, so a concurrent reader sees the
// old entry or the new one and never a missing key.
func (x *index) set(e *entry) {
	key := e.key()
	sh := x.shard(key)
	sh.mu.Lock()
	sh.m[unsafe.String(unsafe.SliceData(key), len(key))] = e
	sh.mu.Unlock()
}

func (x *index) delete(key []byte) {
	sh := x.shard(key)
	sh.mu.Lock()
	delete(sh.m, string(key))
	sh.mu.Unlock()
}
