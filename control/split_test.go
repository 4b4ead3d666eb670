package control

import (
	"strings"
	"testing"
	"time"
)

func TestOverloaded(t *testing.T) {
	t0 := time.Unix(1000, 0)
	prev := map[uint32]load{1: {at: t0, bytes: 10, commit: 100}, 2: {at: t0, bytes: 10, commit: 100}}
	for _, tc := range []struct {
		name string
		cur  map[uint32]load
		size uint64
		rate float64
		want string // a substring of the reason, "" for none
	}{
		{"under both", map[uint32]load{1: {at: t0.Add(time.Second), bytes: 50, commit: 150}}, 100, 100, ""},
		{"over the size", map[uint32]load{2: {at: t0.Add(time.Second), bytes: 500, commit: 100}}, 100, 100, "partition 2 holds 500 bytes"},
		{"size off", map[uint32]load{2: {at: t0.Add(time.Second), bytes: 500, commit: 100}}, 0, 100, ""},
		{"over the rate", map[uint32]load{1: {at: t0.Add(2 * time.Second), bytes: 10, commit: 700}}, 100, 100, "partition 1 commits 300 entries/s"},
		{"rate off", map[uint32]load{1: {at: t0.Add(2 * time.Second), bytes: 10, commit: 700}}, 100, 0, ""},
		{"no earlier sample", map[uint32]load{3: {at: t0.Add(time.Second), bytes: 10, commit: 1e6}}, 100, 100, ""},
		{"a new primary's lower commit", map[uint32]load{1: {at: t0.Add(time.Second), bytes: 10, commit: 50}}, 100, 1, ""},
		{"the first partition over", map[uint32]load{1: {at: t0, bytes: 500}, 2: {at: t0, bytes: 900}}, 100, 0, "partition 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := overloaded(prev, tc.cur, tc.size, tc.rate)
			if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
				t.Fatalf("overloaded = %q, want %q", got, tc.want)
			}
		})
	}
}
