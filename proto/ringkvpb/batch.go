package ringkvpb

import (
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// BatchDrainedTrailer is the trailer a node sets on a KV.Batch stream it
// ends because it is shutting down. It vouches that every request of the
// stream it did not answer was never served, so the client may send those
// requests, writes included, elsewhere.
const BatchDrainedTrailer = "ringkv-batch-drained"

// ErrorOf is err as a Batch Response's error: its gRPC status code and
// message, and its NotPrimary detail if it has one.
func ErrorOf(err error) *Error {
	st := status.Convert(err)
	e := &Error{Code: uint32(st.Code()), Message: st.Message()}
	for _, d := range st.Details() {
		if np, ok := d.(*NotPrimary); ok {
			e.NotPrimary = np
		}
	}
	return e
}

// Err is e as the status error the unary call would have returned. An
// error that claims code OK is reported as Unknown, never as success.
func (e *Error) Err() error {
	code := codes.Code(e.GetCode())
	if code == codes.OK {
		code = codes.Unknown
	}
	st := status.New(code, e.GetMessage())
	if np := e.GetNotPrimary(); np != nil {
		if d, err := st.WithDetails(np); err == nil {
			st = d
		}
	}
	return st.Err()
}
