//go:build !chaos

package node

import "google.golang.org/grpc"

// Production binaries carry no fault-injection layer (see chaos_on.go).
func chaosDialOptions() []grpc.DialOption { return nil }

func registerChaos(grpc.ServiceRegistrar) {}
