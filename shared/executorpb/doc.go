// Package executorpb is the executor protocol's wire form: the protobuf
// messages and gRPC services of executor.proto (the Executor service of
// version 1, the WholeJob service of version 2), and their Go code generated
// by protoc-gen-go and protoc-gen-go-grpc. A runner host and a plugin in any
// language speak it over go-plugin's gRPC transport; Go code uses it through
// package shared, which converts to and from the Go contract. executor.proto
// documents every message and field; docs/contract.md says what the calls
// do. Regenerate with `make proto`.
package executorpb
