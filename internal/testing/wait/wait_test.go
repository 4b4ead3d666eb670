package wait

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// recorder is a testing.TB whose Fatalf records the message and ends the
// goroutine, as the real one does.
type recorder struct {
	testing.TB
	msg string
}

func (r *recorder) Helper() {}

func (r *recorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	panic(r)
}

// run calls fn with a recorder and returns what it failed with, "" if
// nothing.
func run(fn func(tb testing.TB)) (msg string) {
	r := &recorder{}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer func() {
			if p := recover(); p != nil && p != r {
				panic(p)
			}
		}()
		fn(r)
	}()
	wg.Wait()
	return r.msg
}

func TestFor(t *testing.T) {
	for _, tc := range []struct {
		name    string
		d       time.Duration
		holdsAt int // call on which cond first holds; 0: never
		want    string
	}{
		{"holds at once", 0, 1, ""},
		{"holds later", time.Minute, 4, ""},
		{"never holds", 30 * time.Millisecond, 0, "timed out after 30ms waiting for the thing: only 1 of 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			calls := 0
			got := run(func(tb testing.TB) {
				For(tb, tc.d, "the thing", func() (bool, string) {
					calls++
					return tc.holdsAt > 0 && calls >= tc.holdsAt, "only 1 of 2"
				})
			})
			if got != tc.want {
				t.Fatalf("failed with %q, want %q", got, tc.want)
			}
			if tc.holdsAt > 0 && calls != tc.holdsAt {
				t.Fatalf("cond called %d times, want %d", calls, tc.holdsAt)
			}
		})
	}
}

func TestUntilNamesWhatItWaitedFor(t *testing.T) {
	got := run(func(tb testing.TB) { Until(tb, 0, "a primary", func() bool { return false }) })
	if !strings.HasSuffix(got, "waiting for a primary") {
		t.Fatalf("failed with %q", got)
	}
}
