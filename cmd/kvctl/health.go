package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// checkHealth implements "kvctl health": one grpc.health.v1.Health/Check
// of the node at --addr (service "", the whole server). It succeeds only on
// SERVING; any other status, or no answer within --timeout, is an error and
// so exit status 3. It dials only --addr and never fetches the cluster map,
// so it answers for that node alone: the container image uses it as its
// HEALTHCHECK, since a scratch image has no shell or curl.
func checkHealth(fs *flag.FlagSet, args []string, opts *options, stdout io.Writer) error {
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("health takes 0 argument(s), got %d", len(pos))
	}
	if opts.timeout <= 0 {
		return usagef("--timeout = %v, want > 0", opts.timeout)
	}
	conn, err := grpc.NewClient(opts.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return usagef("--addr %q: %v", opts.addr, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), opts.timeout)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return fmt.Errorf("health of %s: %w", opts.addr, err)
	}
	if st := resp.GetStatus(); st != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("health of %s: %v, want SERVING", opts.addr, st)
	}
	_, err = fmt.Fprintln(stdout, healthpb.HealthCheckResponse_SERVING)
	return err
}
