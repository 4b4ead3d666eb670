package transport

import (
	"time"

	"github.com/hashicorp/raft"

	pb "github.com/ringkv/ringkv/proto/ringkvpb"
)

// The conversions below copy raft's structs field by field; byte slices are
// shared, not copied. TestConvertRoundTrip fills every field by reflection,
// so a field raft adds and these miss fails it.

func headerToProto(h raft.RPCHeader) *pb.RPCHeader {
	return &pb.RPCHeader{ProtocolVersion: int64(h.ProtocolVersion), Id: h.ID, Addr: h.Addr}
}

func headerFromProto(h *pb.RPCHeader) raft.RPCHeader {
	return raft.RPCHeader{ProtocolVersion: raft.ProtocolVersion(h.GetProtocolVersion()), ID: h.GetId(), Addr: h.GetAddr()}
}

// timeToProto maps the zero time.Time to 0, which UnixNano leaves undefined.
func timeToProto(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func timeFromProto(nanos int64) time.Time {
	if nanos == 0 {
		return time.Time{}
	}
	return time.Unix(0, nanos)
}

func appendEntriesRequestToProto(partition uint32, r *raft.AppendEntriesRequest) *pb.AppendEntriesRequest {
	var entries []*pb.Log
	if len(r.Entries) > 0 {
		// One allocation for all entries instead of one per entry.
		logs := make([]pb.Log, len(r.Entries))
		entries = make([]*pb.Log, len(r.Entries))
		for i, e := range r.Entries {
			l := &logs[i]
			l.Index, l.Term, l.Type = e.Index, e.Term, pb.LogType(e.Type)
			l.Data, l.Extensions, l.AppendedAt = e.Data, e.Extensions, timeToProto(e.AppendedAt)
			entries[i] = l
		}
	}
	return &pb.AppendEntriesRequest{
		Partition:         partition,
		Header:            headerToProto(r.RPCHeader),
		Term:              r.Term,
		Leader:            r.Leader,
		PrevLogEntry:      r.PrevLogEntry,
		PrevLogTerm:       r.PrevLogTerm,
		Entries:           entries,
		LeaderCommitIndex: r.LeaderCommitIndex,
	}
}

func appendEntriesRequestFromProto(r *pb.AppendEntriesRequest) *raft.AppendEntriesRequest {
	var entries []*raft.Log
	if n := len(r.GetEntries()); n > 0 {
		logs := make([]raft.Log, n)
		entries = make([]*raft.Log, n)
		for i, e := range r.GetEntries() {
			logs[i] = raft.Log{
				Index:      e.GetIndex(),
				Term:       e.GetTerm(),
				Type:       raft.LogType(e.GetType()),
				Data:       e.GetData(),
				Extensions: e.GetExtensions(),
				AppendedAt: timeFromProto(e.GetAppendedAt()),
			}
			entries[i] = &logs[i]
		}
	}
	return &raft.AppendEntriesRequest{
		RPCHeader:         headerFromProto(r.GetHeader()),
		Term:              r.GetTerm(),
		Leader:            r.GetLeader(),
		PrevLogEntry:      r.GetPrevLogEntry(),
		PrevLogTerm:       r.GetPrevLogTerm(),
		Entries:           entries,
		LeaderCommitIndex: r.GetLeaderCommitIndex(),
	}
}

func appendEntriesResponseToProto(r *raft.AppendEntriesResponse) *pb.AppendEntriesResponse {
	return &pb.AppendEntriesResponse{
		Header:         headerToProto(r.RPCHeader),
		Term:           r.Term,
		LastLog:        r.LastLog,
		Success:        r.Success,
		NoRetryBackoff: r.NoRetryBackoff,
	}
}

func appendEntriesResponseFromProto(r *pb.AppendEntriesResponse) raft.AppendEntriesResponse {
	return raft.AppendEntriesResponse{
		RPCHeader:      headerFromProto(r.GetHeader()),
		Term:           r.GetTerm(),
		LastLog:        r.GetLastLog(),
		Success:        r.GetSuccess(),
		NoRetryBackoff: r.GetNoRetryBackoff(),
	}
}

func requestVoteRequestToProto(partition uint32, r *raft.RequestVoteRequest) *pb.RequestVoteRequest {
	return &pb.RequestVoteRequest{
		Partition:          partition,
		Header:             headerToProto(r.RPCHeader),
		Term:               r.Term,
		Candidate:          r.Candidate,
		LastLogIndex:       r.LastLogIndex,
		LastLogTerm:        r.LastLogTerm,
		LeadershipTransfer: r.LeadershipTransfer,
	}
}

func requestVoteRequestFromProto(r *pb.RequestVoteRequest) *raft.RequestVoteRequest {
	return &raft.RequestVoteRequest{
		RPCHeader:          headerFromProto(r.GetHeader()),
		Term:               r.GetTerm(),
		Candidate:          r.GetCandidate(),
		LastLogIndex:       r.GetLastLogIndex(),
		LastLogTerm:        r.GetLastLogTerm(),
		LeadershipTransfer: r.GetLeadershipTransfer(),
	}
}

func requestVoteResponseToProto(r *raft.RequestVoteResponse) *pb.RequestVoteResponse {
	return &pb.RequestVoteResponse{
		Header:  headerToProto(r.RPCHeader),
		Term:    r.Term,
		Peers:   r.Peers,
		Granted: r.Granted,
	}
}

func requestVoteResponseFromProto(r *pb.RequestVoteResponse) raft.RequestVoteResponse {
	return raft.RequestVoteResponse{
		RPCHeader: headerFromProto(r.GetHeader()),
		Term:      r.GetTerm(),
		Peers:     r.GetPeers(),
		Granted:   r.GetGranted(),
	}
}

func requestPreVoteRequestToProto(partition uint32, r *raft.RequestPreVoteRequest) *pb.RequestPreVoteRequest {
	return &pb.RequestPreVoteRequest{
		Partition:    partition,
		Header:       headerToProto(r.RPCHeader),
		Term:         r.Term,
		LastLogIndex: r.LastLogIndex,
		LastLogTerm:  r.LastLogTerm,
	}
}

func requestPreVoteRequestFromProto(r *pb.RequestPreVoteRequest) *raft.RequestPreVoteRequest {
	return &raft.RequestPreVoteRequest{
		RPCHeader:    headerFromProto(r.GetHeader()),
		Term:         r.GetTerm(),
		LastLogIndex: r.GetLastLogIndex(),
		LastLogTerm:  r.GetLastLogTerm(),
	}
}

func requestPreVoteResponseToProto(r *raft.RequestPreVoteResponse) *pb.RequestPreVoteResponse {
	return &pb.RequestPreVoteResponse{
		Header:  headerToProto(r.RPCHeader),
		Term:    r.Term,
		Granted: r.Granted,
	}
}

func requestPreVoteResponseFromProto(r *pb.RequestPreVoteResponse) raft.RequestPreVoteResponse {
	return raft.RequestPreVoteResponse{
		RPCHeader: headerFromProto(r.GetHeader()),
		Term:      r.GetTerm(),
		Granted:   r.GetGranted(),
	}
}

func timeoutNowRequestToProto(partition uint32, r *raft.TimeoutNowRequest) *pb.TimeoutNowRequest {
	return &pb.TimeoutNowRequest{Partition: partition, Header: headerToProto(r.RPCHeader)}
}

func timeoutNowRequestFromProto(r *pb.TimeoutNowRequest) *raft.TimeoutNowRequest {
	return &raft.TimeoutNowRequest{RPCHeader: headerFromProto(r.GetHeader())}
}

func timeoutNowResponseToProto(r *raft.TimeoutNowResponse) *pb.TimeoutNowResponse {
	return &pb.TimeoutNowResponse{Header: headerToProto(r.RPCHeader)}
}

func timeoutNowResponseFromProto(r *pb.TimeoutNowResponse) raft.TimeoutNowResponse {
	return raft.TimeoutNowResponse{RPCHeader: headerFromProto(r.GetHeader())}
}

func installSnapshotRequestToProto(partition uint32, r *raft.InstallSnapshotRequest) *pb.InstallSnapshotRequest {
	return &pb.InstallSnapshotRequest{
		Partition:          partition,
		Header:             headerToProto(r.RPCHeader),
		SnapshotVersion:    int64(r.SnapshotVersion),
		Term:               r.Term,
		Leader:             r.Leader,
		LastLogIndex:       r.LastLogIndex,
		LastLogTerm:        r.LastLogTerm,
		Peers:              r.Peers,
		Configuration:      r.Configuration,
		ConfigurationIndex: r.ConfigurationIndex,
		Size:               r.Size,
	}
}

func installSnapshotRequestFromProto(r *pb.InstallSnapshotRequest) *raft.InstallSnapshotRequest {
	return &raft.InstallSnapshotRequest{
		RPCHeader:          headerFromProto(r.GetHeader()),
		SnapshotVersion:    raft.SnapshotVersion(r.GetSnapshotVersion()),
		Term:               r.GetTerm(),
		Leader:             r.GetLeader(),
		LastLogIndex:       r.GetLastLogIndex(),
		LastLogTerm:        r.GetLastLogTerm(),
		Peers:              r.GetPeers(),
		Configuration:      r.GetConfiguration(),
		ConfigurationIndex: r.GetConfigurationIndex(),
		Size:               r.GetSize(),
	}
}

func installSnapshotResponseToProto(r *raft.InstallSnapshotResponse) *pb.InstallSnapshotResponse {
	return &pb.InstallSnapshotResponse{
		Header:  headerToProto(r.RPCHeader),
		Term:    r.Term,
		Success: r.Success,
	}
}

func installSnapshotResponseFromProto(r *pb.InstallSnapshotResponse) raft.InstallSnapshotResponse {
	return raft.InstallSnapshotResponse{
		RPCHeader: headerFromProto(r.GetHeader()),
		Term:      r.GetTerm(),
		Success:   r.GetSuccess(),
	}
}
