package wal

import (
	"fmt"
	"slices"
)

// loc is where a record lives: segment sequence, offset and encoded size.
// n == 0 marks a hole, which exists only while recovery replays records
// copied forward by compaction ahead of their neighbours.
type loc struct {
	seq uint64
	off uint32
	n   uint32
}

// stream is the in-memory index of one stream.
type stream struct {
	first  uint64 // index of locs[0]
	locs   []loc
	cache  []cached // ring of recent entries, slot = index % len(cache)
	states map[string]stateVal
}

type cached struct {
	index uint64
	data  []byte
}

type stateVal struct {
	value []byte
	at    loc
}

func (st *stream) last() uint64 {
	if len(st.locs) == 0 {
		return 0
	}
	return st.first + uint64(len(st.locs)) - 1
}

func (st *stream) has(i uint64) bool {
	return len(st.locs) > 0 && i >= st.first && i-st.first < uint64(len(st.locs))
}

func (st *stream) loc(i uint64) loc { return st.locs[i-st.first] }

func (st *stream) cached(i uint64) ([]byte, bool) {
	if len(st.cache) == 0 {
		return nil, false
	}
	c := st.cache[i%uint64(len(st.cache))]
	return c.data, c.index == i && c.data != nil
}

func (st *stream) empty() bool { return len(st.locs) == 0 && len(st.states) == 0 }

// index is the in-memory state of the whole log: every stream and every
// segment with its live byte count. Only the writer goroutine (and Open,
// before it starts) mutates it, under WAL.mu.
type index struct {
	streams      map[uint64]*stream
	segs         []*segment // ascending, contiguous sequence numbers
	cacheEntries int
	// maxHoles bounds how far one record may extend a stream past its
	// current span, so that damaged input cannot make replay allocate
	// without limit. Zero at run time, where appends are contiguous.
	maxHoles uint64
	live     int64 // sum of segs[i].live
	written  int64 // sum of segs[i].size
}

func newIndex(cacheEntries int) *index {
	return &index{streams: make(map[uint64]*stream), cacheEntries: cacheEntries}
}

func (x *index) seg(seq uint64) *segment { return x.segs[seq-x.segs[0].seq] }

func (x *index) addLive(at loc, sign int64) {
	d := sign * int64(at.n)
	x.seg(at.seq).live += d
	x.live += d
}

func (x *index) drop(locs []loc) {
	for _, at := range locs {
		if at.n != 0 {
			x.addLive(at, -1)
		}
	}
}

// apply makes the in-memory state reflect one record at location at. It is
// the single definition of what a record means, used both to replay the log
// and to apply a batch after its sync. cache says whether an entry's data
// should enter the stream's cache (not for copies made by compaction, whose
// data is already there).
func (x *index) apply(r record, at loc, cache bool) error {
	switch r.typ {
	case recEntry:
		st := x.stream(r.stream)
		if err := x.setEntry(st, r.index, at); err != nil {
			return err
		}
		if cache && x.cacheEntries > 0 {
			if st.cache == nil {
				st.cache = make([]cached, x.cacheEntries)
			}
			st.cache[r.index%uint64(len(st.cache))] = cached{r.index, slices.Clone(r.payload)}
		}
	case recTruncateSuffix:
		if st := x.streams[r.stream]; st != nil && len(st.locs) > 0 {
			keep := uint64(0)
			if r.index > st.first {
				keep = min(r.index-st.first, uint64(len(st.locs)))
			}
			x.drop(st.locs[keep:])
			st.locs = st.locs[:keep]
			x.trim(r.stream, st)
		}
	case recTruncatePrefix:
		if st := x.streams[r.stream]; st != nil && len(st.locs) > 0 && r.index >= st.first {
			cut := min(r.index-st.first+1, uint64(len(st.locs)))
			x.drop(st.locs[:cut])
			st.locs = st.locs[cut:]
			st.first += cut
			if cap(st.locs) > 64 && len(st.locs) < cap(st.locs)/2 {
				st.locs = slices.Clone(st.locs) // release the truncated prefix's memory
			}
			x.trim(r.stream, st)
		}
	case recState:
		key, value, _ := parseState(r.payload) // validated by decodeRecord or the writer
		st := x.stream(r.stream)
		if old, ok := st.states[key]; ok {
			x.addLive(old.at, -1)
		}
		if st.states == nil {
			st.states = make(map[string]stateVal)
		}
		st.states[key] = stateVal{value: slices.Clone(value), at: at}
		x.addLive(at, 1)
	case recDeleteStream:
		if st := x.streams[r.stream]; st != nil {
			x.drop(st.locs)
			for _, sv := range st.states {
				x.addLive(sv.at, -1)
			}
			delete(x.streams, r.stream)
		}
	}
	return nil
}

func (x *index) stream(id uint64) *stream {
	st := x.streams[id]
	if st == nil {
		st = &stream{}
		x.streams[id] = st
	}
	return st
}

// setEntry records that entry i of st lives at at, replacing an earlier
// location of the same entry.
func (x *index) setEntry(st *stream, i uint64, at loc) error {
	switch {
	case len(st.locs) == 0:
		st.first = i
		st.locs = append(st.locs[:0], at)
	case i < st.first:
		if st.first-i-1 > x.maxHoles {
			return fmt.Errorf("entry %d is %d before the first entry %d", i, st.first-i, st.first)
		}
		grown := make([]loc, st.first-i+uint64(len(st.locs)))
		grown[0] = at
		copy(grown[st.first-i:], st.locs)
		st.first, st.locs = i, grown
	case i-st.first < uint64(len(st.locs)):
		if old := st.locs[i-st.first]; old.n != 0 {
			x.addLive(old, -1)
		}
		st.locs[i-st.first] = at
	default:
		if gap := i - st.last() - 1; gap > x.maxHoles {
			return fmt.Errorf("entry %d leaves a gap of %d after the last entry %d", i, gap, st.last())
		}
		for st.last()+1 < i {
			st.locs = append(st.locs, loc{})
		}
		st.locs = append(st.locs, at)
	}
	x.addLive(at, 1)
	return nil
}

// trim removes holes at both ends of st's span (there are none at run time)
// and forgets the stream once it holds nothing.
func (x *index) trim(id uint64, st *stream) {
	for len(st.locs) > 0 && st.locs[len(st.locs)-1].n == 0 {
		st.locs = st.locs[:len(st.locs)-1]
	}
	for len(st.locs) > 0 && st.locs[0].n == 0 {
		st.locs = st.locs[1:]
		st.first++
	}
	if st.empty() {
		delete(x.streams, id)
	}
}

// checkContiguous verifies, after replay, that no stream has a hole left.
func (x *index) checkContiguous() error {
	for id, st := range x.streams {
		for k, at := range st.locs {
			if at.n == 0 {
				return &CorruptionError{Reason: fmt.Sprintf("stream %d: entry %d missing between %d and %d", id, st.first+uint64(k), st.first, st.last())}
			}
		}
	}
	return nil
}
