// Package rooms holds the project's import rules, the "room rules" the
// README states (which folder may import which), as a test: rooms_test.go
// reads the import graph with `go list -deps -test -json` and fails with
// the import chain that breaks a rule. It has no code of its own.
package rooms
