// Package ringkvpb is the generated Go code of ringkv's gRPC API, protobuf
// package ringkv.v1 (proto/ringkv/v1/*.proto):
//
//   - KV, the client API (Put, Get, Delete), with the NotPrimary status
//     detail and the hops forwarding counter;
//   - Raft, hashicorp/raft's RPCs tagged with their partition, served by
//     package transport;
//   - Admin, the operator API (Status).
//
// The *.pb.go files are generated and committed; do not edit them. Change
// the .proto files and run `make proto` (scripts/gen-proto.sh), which pins
// the generator versions so the output is reproducible.
package ringkvpb
