// Package batchsend sends what many goroutines queue as few messages as
// the bounds allow, with no goroutine of its own: the client's Batch
// requests and the server's Batch answers both leave this way.
//
// Whoever queues an item and finds no send under way becomes the sender:
// it sends everything queued, in messages of at most Limits.Items items
// and Limits.Bytes estimated bytes, and keeps going until the queue is
// empty. Items queued during a send therefore leave together in the next
// message, a goroutine that finds a send under way returns at once, and
// nobody waits for work.
//
// Invariants:
//   - At most one send is under way: the send function is never called
//     concurrently, and items leave in the order they were queued.
//   - A message holds at least one item; it holds more only while it stays
//     within both limits, so an item larger than Limits.Bytes goes alone.
//   - Each queued item is handed to the send function once, or returned by
//     Stop, never both.
//   - Once a send has failed or Stop was called the queue is stopped: no
//     new send begins, Add queues nothing, and the first error stays.
//
// Concurrency: a Queue's methods may be called from any goroutine. Its
// mutex guards only the queue's own state and is never held while the send
// function runs, so that function may take its caller's locks and call Add
// or Stop. Add may run the send function, so a caller must not hold a lock
// the send function takes while it calls Add.
package batchsend

import (
	"errors"
	"sync"
)

// MaxBytes bounds the estimated payload of one message of the KV Batch
// stream, either way: at 1 MiB it stays well under gRPC's default 4 MiB
// receive limit on both sides, leaving room for the estimates' error and
// the messages' framing.
const MaxBytes = 1 << 20

// ErrStopped stops a queue that Stop was given no error for.
var ErrStopped = errors.New("batchsend: queue stopped")

// Limits bound one message.
type Limits struct {
	Items int // items in a message
	Bytes int // estimated bytes in a message, unless one item is larger
}

// Queue queues items and sends them in batches; see the package comment.
type Queue[T any] struct {
	limits Limits
	size   func(T) int
	send   func(batch []T) error

	mu      sync.Mutex
	items   []T
	sending bool  // a goroutine is in the send loop
	err     error // set once the queue is stopped
}

// New returns a queue whose messages keep within limits, by size's
// estimate of an item, and go out through send. send owns the batch it is
// given: the queue never touches those elements again. An error from send
// stops the queue; the items of the failed batch are send's to account for.
func New[T any](limits Limits, size func(T) int, send func(batch []T) error) *Queue[T] {
	return &Queue[T]{limits: limits, size: size, send: send}
}

// Add queues item and, if no send is under way, sends until the queue is
// empty, the queue stops, or a send fails. Once the queue is stopped Add
// returns its error and queues nothing. A nil error means the item was
// queued, not that it was sent: a failed send or Stop may still leave it
// to the send function's error handling or to Stop's caller.
func (q *Queue[T]) Add(item T) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.err != nil {
		return q.err
	}
	q.items = append(q.items, item)
	if q.sending {
		return nil
	}
	q.sending = true
	for len(q.items) > 0 && q.err == nil {
		batch := q.take()
		q.mu.Unlock()
		err := q.send(batch)
		q.mu.Lock()
		if err != nil && q.err == nil {
			q.err = err
		}
	}
	q.sending = false
	return nil
}

// take removes the next message's items from the queue; q.mu is held.
func (q *Queue[T]) take() []T {
	n, size := 0, 0
	for n < len(q.items) {
		s := q.size(q.items[n])
		if n > 0 && (n >= q.limits.Items || size+s > q.limits.Bytes) {
			break
		}
		size += s
		n++
	}
	// Capped, so that appends to the queue never write into the batch.
	batch := q.items[:n:n]
	q.items = q.items[n:]
	if len(q.items) == 0 {
		q.items = nil // let the sent items go with their message
	}
	return batch
}

// Stop stops the queue with err (ErrStopped if nil), unless it is stopped
// already (then the first error stays), and returns the items still
// queued, which were never handed to the send function. A send under way
// finishes; none follows.
func (q *Queue[T]) Stop(err error) []T {
	if err == nil {
		err = ErrStopped
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.err == nil {
		q.err = err
	}
	unsent := q.items
	q.items = nil
	return unsent
}
