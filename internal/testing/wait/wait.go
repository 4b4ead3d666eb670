// Package wait is how every test in the tree waits: on a condition, with a
// deadline, never for a fixed time. A loaded 2-core CI machine makes any
// fixed sleep too short somewhere, and a flaky test is a bug.
//
// Conditions are polled from the calling goroutine, first after 5 ms, then
// at doubling intervals capped at 50 ms: quick for a unit test's condition
// that holds almost at once, and light on a cluster whose condition is a
// round of RPCs. A condition is called at least once, even when d is zero.
package wait

import (
	"testing"
	"time"
)

const (
	firstPoll = 5 * time.Millisecond
	maxPoll   = 50 * time.Millisecond
)

// For polls cond until it holds, failing t after d with what and cond's
// last explanation of why it does not hold yet.
func For(t testing.TB, d time.Duration, what string, cond func() (ok bool, why string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for poll := firstPoll; ; poll = min(2*poll, maxPoll) {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			if why == "" {
				t.Fatalf("timed out after %v waiting for %s", d, what)
			}
			t.Fatalf("timed out after %v waiting for %s: %s", d, what, why)
		}
		time.Sleep(poll)
	}
}

// Until is For for a condition that has no reason to give.
func Until(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	For(t, d, what, func() (bool, string) { return cond(), "" })
}
