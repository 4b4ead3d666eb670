package ringkvpb

import (
	"strconv"
	"strings"

	"google.golang.org/grpc/status"
)

// NotPrimaryOf extracts the NotPrimary detail of a status error, or nil.
func NotPrimaryOf(err error) *NotPrimary {
	for _, d := range status.Convert(err).Details() {
		if np, ok := d.(*NotPrimary); ok {
			return np
		}
	}
	return nil
}

// PrimaryHeader is the response header a node sets when it served a
// client's request by forwarding it to the partition's primary: its value,
// "PARTITION=ADDRESS", tells the client where to send the next one.
const PrimaryHeader = "ringkv-primary"

// FormatPrimary is the value of PrimaryHeader.
func FormatPrimary(partition uint32, addr string) string {
	return strconv.FormatUint(uint64(partition), 10) + "=" + addr
}

// ParsePrimary parses a PrimaryHeader value.
func ParsePrimary(v string) (partition uint32, addr string, ok bool) {
	ps, addr, ok := strings.Cut(v, "=")
	p, err := strconv.ParseUint(ps, 10, 32)
	if !ok || err != nil || addr == "" {
		return 0, "", false
	}
	return uint32(p), addr, true
}
