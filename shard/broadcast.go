package shard

import (
	"context"
	"sync"
)

// broadcast lets goroutines wait for a condition that another goroutine
// makes true: the waker calls notify after each change, and every waiter
// re-checks its condition. The zero value is ready to use.
type broadcast struct {
	mu sync.Mutex
	ch chan struct{}
}

func (b *broadcast) channel() chan struct{} {
	if b.ch == nil {
		b.ch = make(chan struct{})
	}
	return b.ch
}

// notify wakes every current waiter.
func (b *broadcast) notify() {
	b.mu.Lock()
	close(b.channel())
	b.ch = make(chan struct{})
	b.mu.Unlock()
}

// wait blocks until done reports true (or an error), ctx ends or closed is
// closed. done is checked after taking the channel of the next
// notification, so a change between the check and the wait is not missed.
func (b *broadcast) wait(ctx context.Context, closed <-chan struct{}, done func() (bool, error)) error {
	for {
		b.mu.Lock()
		ch := b.channel()
		b.mu.Unlock()
		if ok, err := done(); ok || err != nil {
			return err
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-closed:
			return ErrClosed
		}
	}
}
