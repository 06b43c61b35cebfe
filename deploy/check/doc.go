// Package check holds the tests of the deployment artifacts in deploy/ and
// the Tiltfile, which cannot be run on machines without Docker or
// Kubernetes. It has no code of its own; run it with
//
//	cd deploy/check && GOWORK=off go test ./...
//
// The tests render the kustomize base and decode every object strictly into
// its Kubernetes API type, load the compose file with the compose
// specification's own loader, execute the Tiltfile with recording stand-ins
// for Tilt's built-ins and check every path it names, and start each
// service binary with the flags the artifacts pass, so a renamed or
// misspelled flag fails here instead of in a deployment.
//
// It is a module of its own, outside go.work, so that its dependencies
// (kustomize, the Kubernetes API types, compose-go, starlark) never enter the
// services' module graphs.
package check
