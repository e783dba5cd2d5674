// Command projectord keeps read models current from a PostgreSQL event store.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/projectord/projectord/internal/config"
	"github.com/projectord/projectord/internal/store"
)

// Exit codes.
const (
	exitOK      = 0
	exitRuntime = 1 // the database or the environment failed
	exitConfig  = 2 // bad configuration or usage: fix the input
)

func main() {
	os.Exit(execute(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// execute runs the command line and returns the exit code. It is the only
// place that decides exit codes; errors print as one line, never with usage.
func execute(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRootCmd(&env{stdin: stdin, stdout: stdout, stderr: stderr})
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	var verr *config.ValidationError
	var uerr *usageError
	switch {
	case errors.As(err, &verr):
		fmt.Fprintf(stderr, "projectord: invalid configuration (%d problem%s):\n", verr.Total(), plural(verr.Total()))
		for _, p := range verr.Problems {
			fmt.Fprintf(stderr, "  %s\n", printable(p.String()))
		}
		if l := verr.OmittedLine(); l != "" {
			fmt.Fprintf(stderr, "  %s\n", l)
		}
		return exitConfig
	case errors.As(err, &uerr), isCobraUsageError(err):
		fmt.Fprintf(stderr, "projectord: %s\nRun 'projectord --help' for usage.\n", oneLine(err.Error()))
		return exitConfig
	case errors.As(err, new(*configError)),
		// Not the database's failure: an operator has to fix the setup.
		errors.Is(err, store.ErrUntrustedSchema), errors.Is(err, store.ErrLockBudget):
		fmt.Fprintf(stderr, "projectord: %s\n", oneLine(err.Error()))
		return exitConfig
	default:
		fmt.Fprintf(stderr, "projectord: %s\n", oneLine(err.Error()))
		return exitRuntime
	}
}

// env is what commands read and write, injectable for tests.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
}

// usageError is a mistake on the command line.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

// configError is a configuration problem that is not a ValidationError
// (a missing or unreadable file, bad YAML, bad handler SQL).
type configError struct{ err error }

func (e *configError) Error() string { return e.err.Error() }
func (e *configError) Unwrap() error { return e.err }

func isCobraUsageError(err error) bool {
	msg := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand flag", "flag needs an argument",
		"invalid argument", "accepts ", "requires at least", "requires at most", "if any flags in the group"} {
		if strings.Contains(msg, p) {
			return true
		}
	}
	return false
}

// oneLine folds a multi-line error (pgx lists every address it tried) into
// one line with single spaces, control characters escaped (errors can
// quote database values).
func oneLine(s string) string {
	s = strings.ReplaceAll(strings.TrimSpace(s), "\n", "; ")
	s = strings.Join(strings.Fields(s), " ")
	return printable(strings.ReplaceAll(s, ":;", ":"))
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
