package raftwal

import (
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ringkv/ringkv/wal"
)

func open(t *testing.T) *Store {
	t.Helper()
	w, err := wal.Open(t.TempDir(), wal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return New(w, 3, 5*time.Second)
}

func appendLogs(t *testing.T, s *Store, lo, hi uint64) {
	t.Helper()
	var logs []*raft.Log
	for i := lo; i <= hi; i++ {
		logs = append(logs, &raft.Log{Index: i, Term: 2, Type: raft.LogCommand, Data: []byte{byte(i)}, AppendedAt: time.Unix(0, int64(i))})
	}
	if err := s.StoreLogs(logs); err != nil {
		t.Fatal(err)
	}
}

func TestLogRoundTrip(t *testing.T) {
	s := open(t)
	appendLogs(t, s, 1, 5)
	var l raft.Log
	if err := s.GetLog(4, &l); err != nil {
		t.Fatal(err)
	}
	if l.Index != 4 || l.Term != 2 || l.Type != raft.LogCommand || string(l.Data) != "\x04" || l.AppendedAt.UnixNano() != 4 {
		t.Fatalf("GetLog(4) = %+v", l)
	}
	if err := s.GetLog(9, &l); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("GetLog(9) = %v, want raft.ErrLogNotFound", err)
	}
}

func TestDeleteRange(t *testing.T) {
	for _, tc := range []struct {
		name        string
		lo, hi      uint64
		first, last uint64
		wantErr     bool
	}{
		{"prefix", 1, 3, 4, 10, false},
		{"suffix", 7, 10, 1, 6, false},
		{"everything", 1, 10, 0, 0, false},
		{"outside", 20, 30, 1, 10, false},
		{"hole", 4, 6, 1, 10, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t)
			appendLogs(t, s, 1, 10)
			err := s.DeleteRange(tc.lo, tc.hi)
			if (err != nil) != tc.wantErr {
				t.Fatalf("DeleteRange(%d, %d) = %v, want error %v", tc.lo, tc.hi, err, tc.wantErr)
			}
			if tc.wantErr {
				return
			}
			first, _ := s.FirstIndex()
			last, _ := s.LastIndex()
			if first != tc.first || last != tc.last {
				t.Fatalf("log is %d-%d, want %d-%d", first, last, tc.first, tc.last)
			}
		})
	}
}

func TestStable(t *testing.T) {
	s := open(t)
	if v, err := s.GetUint64([]byte("term")); err != nil || v != 0 {
		t.Fatalf("missing key = %d, %v; want 0, nil", v, err)
	}
	if err := s.SetUint64([]byte("term"), 7); err != nil {
		t.Fatal(err)
	}
	if v, err := s.GetUint64([]byte("term")); err != nil || v != 7 {
		t.Fatalf("term = %d, %v; want 7", v, err)
	}
	if err := s.Set([]byte("vote"), []byte("abc")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetUint64([]byte("vote")); !errors.Is(err, wal.ErrCorrupt) {
		t.Fatalf("GetUint64 of a 3-byte value = %v, want wal.ErrCorrupt", err)
	}
}
