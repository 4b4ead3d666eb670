package batchsend

import (
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// item is a queued item: id tells items apart, size is its estimate.
type item struct{ id, size int }

func sizeOf(it item) int { return it.size }

func ids(items []item) []int {
	out := make([]int, len(items))
	for i, it := range items {
		out[i] = it.id
	}
	return out
}

var errSend = errors.New("send failed")

// sender is a send function that records each batch. Its first send
// waits until open is closed, so that a test can queue items while a send
// is under way; the failAt-th send (from 1) fails.
type sender struct {
	started chan struct{} // closed once the first send began
	open    chan struct{}
	failAt  int

	mu      sync.Mutex
	batches [][]int
}

func newSender(failAt int) *sender {
	return &sender{started: make(chan struct{}), open: make(chan struct{}), failAt: failAt}
}

func (s *sender) send(batch []item) error {
	s.mu.Lock()
	s.batches = append(s.batches, ids(batch))
	n := len(s.batches)
	s.mu.Unlock()
	if n == 1 {
		close(s.started)
		<-s.open
	}
	if n == s.failAt {
		return errSend
	}
	return nil
}

func (s *sender) sent() [][]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.batches)
}

// await fails the test unless ch is closed or sent on within a deadline.
func await[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// whileSending adds item 0, whose send the sender holds; queues items
// meanwhile, each Add returning at once; runs during (if not nil) while
// the send is still held; then lets the send go on and returns item 0's
// Add's error once it returned.
func whileSending(t *testing.T, q *Queue[item], s *sender, items []item, during func()) error {
	t.Helper()
	firstDone := make(chan error, 1)
	go func() { firstDone <- q.Add(item{id: 0, size: 1}) }()
	await(t, s.started, "the first send")
	added := make(chan struct{})
	go func() {
		defer close(added)
		for _, it := range items {
			if err := q.Add(it); err != nil {
				t.Errorf("Add(%v) during a send: %v", it, err)
			}
		}
	}()
	// Adds that waited for the held send would never return.
	await(t, added, "Adds made during a send to return")
	if during != nil {
		during()
	}
	close(s.open)
	return await(t, firstDone, "the sender's Add to return")
}

// TestLimits: what is queued during a send leaves in the fewest messages
// the limits allow, in order, and an item over the byte limit goes alone.
func TestLimits(t *testing.T) {
	tests := []struct {
		name   string
		limits Limits
		sizes  []int   // of the items queued while item 0 is sent
		want   [][]int // ids of each message
	}{
		{"item limit", Limits{Items: 2, Bytes: 100}, []int{1, 1, 1, 1, 1}, [][]int{{0}, {1, 2}, {3, 4}, {5}}},
		{"byte limit", Limits{Items: 10, Bytes: 100}, []int{40, 40, 40}, [][]int{{0}, {1, 2}, {3}}},
		{"byte limit met exactly", Limits{Items: 10, Bytes: 100}, []int{50, 50, 50}, [][]int{{0}, {1, 2}, {3}}},
		{"a large item alone", Limits{Items: 10, Bytes: 100}, []int{10, 500, 10}, [][]int{{0}, {1}, {2}, {3}}},
		{"a large item first", Limits{Items: 10, Bytes: 100}, []int{500, 10, 10}, [][]int{{0}, {1}, {2, 3}}},
		{"all in one", Limits{Items: 10, Bytes: 100}, []int{1, 2, 3}, [][]int{{0}, {1, 2, 3}}},
		{"an item limit under one sends one", Limits{Items: 0, Bytes: 100}, []int{1, 1}, [][]int{{0}, {1}, {2}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSender(0)
			q := New(tt.limits, sizeOf, s.send)
			var items []item
			for i, size := range tt.sizes {
				items = append(items, item{id: i + 1, size: size})
			}
			if err := whileSending(t, q, s, items, nil); err != nil {
				t.Fatal(err)
			}
			if got := s.sent(); !slices.EqualFunc(got, tt.want, slices.Equal) {
				t.Fatalf("sent %v, want %v", got, tt.want)
			}
		})
	}
}

// TestConcurrentAdds: under many adding goroutines, sends never overlap,
// every message keeps the limits, every item is sent once and each
// goroutine's items leave in its order; once every Add has returned,
// everything has been sent.
func TestConcurrentAdds(t *testing.T) {
	const goroutines, each = 8, 500
	limits := Limits{Items: 7, Bytes: 50}
	var (
		inSend   atomic.Int32
		mu       sync.Mutex
		sent     []item
		messages int
	)
	q := New(limits, sizeOf, func(batch []item) error {
		if inSend.Add(1) != 1 {
			t.Error("two sends at once")
		}
		defer inSend.Add(-1)
		total := 0
		for _, it := range batch {
			total += it.size
		}
		if len(batch) == 0 || len(batch) > limits.Items || (len(batch) > 1 && total > limits.Bytes) {
			t.Errorf("message of %d items, %d bytes, over %+v", len(batch), total, limits)
		}
		mu.Lock()
		sent = append(sent, batch...)
		messages++
		mu.Unlock()
		return nil
	})
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				// ids g*each+i rise within a goroutine; sizes 1 to 60.
				if err := q.Add(item{id: g*each + i, size: 1 + (g*7+i*13)%60}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(sent) != goroutines*each {
		t.Fatalf("%d items sent once every Add returned, want %d", len(sent), goroutines*each)
	}
	last := make([]int, goroutines)
	for g := range last {
		last[g] = -1
	}
	seen := map[int]bool{}
	for _, it := range sent {
		g := it.id / each
		if seen[it.id] || it.id <= last[g] {
			t.Fatalf("item %d sent twice or out of its goroutine's order", it.id)
		}
		seen[it.id], last[g] = true, it.id
	}
	t.Logf("%d items in %d messages", len(sent), messages)
}

// TestStop: a failed send or Stop stops the queue: no send follows, Add
// queues nothing and answers the first error, and Stop hands back what
// was queued and never given to the send function.
func TestStop(t *testing.T) {
	errStop := errors.New("stream broke")
	queued := []item{{1, 1}, {2, 1}, {3, 1}}
	tests := []struct {
		name    string
		failAt  int  // the send that fails, or 0
		stopNow bool // Stop while the first send is under way
		sent    [][]int
		unsent  []int // what Stop returns after the sends
		err     error // Add's once stopped
	}{
		{"a failed send", 2, false, [][]int{{0}, {1}}, []int{2, 3}, errSend},
		{"Stop during a send", 0, true, [][]int{{0}}, nil, errStop},
		{"Stop after the queue emptied", 0, false, [][]int{{0}, {1}, {2}, {3}}, nil, errStop},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSender(tt.failAt)
			q := New(Limits{Items: 1, Bytes: 100}, sizeOf, s.send)
			var during func()
			if tt.stopNow {
				during = func() {
					if got := ids(q.Stop(errStop)); !slices.Equal(got, ids(queued)) {
						t.Errorf("Stop during the send returned %v, want %v", got, ids(queued))
					}
				}
			}
			if err := whileSending(t, q, s, queued, during); err != nil {
				t.Fatalf("the sender's Add: %v, want nil (its item was queued)", err)
			}
			if got := s.sent(); !slices.EqualFunc(got, tt.sent, slices.Equal) {
				t.Fatalf("sent %v, want %v", got, tt.sent)
			}
			if got := ids(q.Stop(errStop)); !slices.Equal(got, tt.unsent) {
				t.Fatalf("Stop returned %v, want %v", got, tt.unsent)
			}
			if err := q.Add(item{id: 9}); !errors.Is(err, tt.err) {
				t.Fatalf("Add once stopped: %v, want %v", err, tt.err)
			}
			if got := q.Stop(errors.New("later")); len(got) != 0 || !errors.Is(q.Add(item{id: 10}), tt.err) {
				t.Fatalf("a second Stop returned %v or replaced the first error", got)
			}
			if got := s.sent(); !slices.EqualFunc(got, tt.sent, slices.Equal) {
				t.Fatalf("sent %v after the queue stopped, want %v", got, tt.sent)
			}
		})
	}
}

func TestStopWithoutError(t *testing.T) {
	q := New(Limits{Items: 1, Bytes: 1}, sizeOf, func([]item) error { return nil })
	q.Stop(nil)
	if err := q.Add(item{}); !errors.Is(err, ErrStopped) {
		t.Fatalf("Add after Stop(nil): %v, want ErrStopped", err)
	}
}
