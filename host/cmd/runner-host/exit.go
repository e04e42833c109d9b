package main

import (
	"errors"
	"fmt"
	"io"
)

// exitError ends runner-host with its code. err, when set, is printed
// first; a job that ran and exited non-zero has none (its own output said
// what went wrong).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err != nil {
		return e.err.Error()
	}
	return fmt.Sprintf("exit status %d", e.code)
}

func (e *exitError) Unwrap() error { return e.err }

// exitStatus prints a verb's error and returns the exit code it stands for:
// an *exitError's code, exitFail for any other error.
func exitStatus(stderr io.Writer, err error) int {
	if e, ok := errors.AsType[*exitError](err); ok {
		if e.err != nil {
			fmt.Fprintln(stderr, "runner-host:", e.err)
		}
		return e.code
	}
	fmt.Fprintln(stderr, "runner-host:", err)
	return exitFail
}
