package ringkvpb

import "google.golang.org/grpc/status"

// NotPrimaryOf extracts the NotPrimary detail of a status error, or nil.
func NotPrimaryOf(err error) *NotPrimary {
	for _, d := range status.Convert(err).Details() {
		if np, ok := d.(*NotPrimary); ok {
			return np
		}
	}
	return nil
}
