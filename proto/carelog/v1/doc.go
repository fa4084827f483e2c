// Package carelogv1 is the generated Go code of carelog's gRPC API
// (log.proto beside this file): the Log service's client and server
// interfaces and its messages. Do not edit the generated files; change
// log.proto and run scripts/gen-proto.sh (or go generate) instead.
//
// The server side lives in package personality (Log.RegisterGRPC); the Go
// SDK's client side, which verifies everything the log signs, is
// client.Log.GRPC.
package carelogv1

//go:generate bash ../../../scripts/gen-proto.sh
