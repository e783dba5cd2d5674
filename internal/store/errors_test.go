package store_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/store"
)

func TestClassifySQLSTATE(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		code, msg string
		want      store.ErrorClass
	}{
		// The event's own fault.
		{"22P02", "invalid input syntax for type integer", store.ClassEvent},
		{"23505", "duplicate key value violates unique constraint", store.ClassEvent},
		{"23503", "insert or update violates foreign key constraint (deferred, at commit)", store.ClassEvent},
		{"21000", "more than one row returned by a subquery used as an expression", store.ClassEvent},
		{"54000", "index row size exceeds btree maximum", store.ClassEvent},
		{"54001", "statement is too complex", store.ClassEvent},
		{"P0001", "raised by the handler", store.ClassEvent},
		{"P0002", "query returned no rows (STRICT)", store.ClassEvent},
		{"P0003", "query returned more than one row (STRICT)", store.ClassEvent},
		{"P0004", "assertion failed", store.ClassEvent},
		{"44000", "new row violates check option for view", store.ClassEvent},
		{"42501", `new row violates row-level security policy for table "rm"`, store.ClassEvent},
		{"27000", "tuple to be updated was already modified", store.ClassEvent},
		{"2F005", "function finished without RETURN", store.ClassEvent},
		{"38001", "external routine exception", store.ClassEvent},
		{"39P01", "trigger protocol violated", store.ClassEvent},
		{"20000", "case not found", store.ClassEvent},
		{"40002", "transaction integrity constraint violation", store.ClassEvent},
		// The database's or the configuration's: the same for every event.
		{"42501", `permission denied for table rm`, store.ClassDatabase},
		{"42P01", "relation does not exist", store.ClassDatabase},
		{"42703", "column does not exist", store.ClassDatabase},
		{"0A000", "feature not supported", store.ClassDatabase},
		{"25006", "cannot execute INSERT in a read-only transaction", store.ClassDatabase},
		{"2D000", "invalid transaction termination", store.ClassDatabase},
		{"3D000", "database does not exist", store.ClassDatabase},
		{"3F000", "schema does not exist", store.ClassDatabase},
		{"28000", "invalid authorization", store.ClassDatabase},
		{"55000", "object not in prerequisite state", store.ClassDatabase},
		{"55006", "object in use", store.ClassDatabase},
		{"57P04", "database dropped", store.ClassDatabase},
		{"58030", "could not write", store.ClassDatabase},
		{"XX001", "data corrupted", store.ClassDatabase},
		// Passes by itself.
		{"40001", "could not serialize access", store.ClassTransient},
		{"40P01", "deadlock detected", store.ClassTransient},
		{"08006", "connection failure", store.ClassTransient},
		{"57P01", "terminating connection due to administrator command", store.ClassTransient},
		{"57P03", "the database system is starting up", store.ClassTransient},
		{"53300", "too many connections", store.ClassTransient},
		{"55P03", "lock not available", store.ClassTransient},
		// Ran out of time.
		{"57014", "canceling statement due to statement timeout", store.ClassTimeout},
		// Not placed: charged to the event, so it reaches the policy.
		{"XX000", "internal error", store.ClassUnknown},
		{"HV000", "fdw error", store.ClassUnknown},
		{"ZZ999", "made up", store.ClassUnknown},
	} {
		t.Run(tc.code+" "+tc.msg, func(t *testing.T) {
			t.Parallel()
			pgErr := &pgconn.PgError{Code: tc.code, Message: tc.msg}
			require.Equal(t, tc.want, store.Classify(pgErr))
			// Wrapped as the sink returns it, or as a commit failure.
			require.Equal(t, tc.want, store.Classify(&store.ApplyError{Index: 3, Err: pgErr}))
			require.Equal(t, tc.want, store.Classify(fmt.Errorf("error committing batch: %w", pgErr)))
		})
	}
}

func TestClassifyOtherErrors(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		err  error
		want store.ErrorClass
	}{
		"deadline":                {fmt.Errorf("commit: %w", context.DeadlineExceeded), store.ClassNoAnswer},
		"deadline of a statement": {&store.ApplyError{Index: 1, Err: context.DeadlineExceeded}, store.ClassNoAnswer},
		"deadline, server alive":  {fmt.Errorf("commit: %w: %w", store.ErrSlowBatch, context.DeadlineExceeded), store.ClassTimeout},
		"no connection":           {fmt.Errorf("%w: %w", store.ErrNoConnection, context.DeadlineExceeded), store.ClassTransient},
		"eof":                     {fmt.Errorf("read: %w", io.ErrUnexpectedEOF), store.ClassTransient},
		"connect":                 {&pgconn.ConnectError{}, store.ClassTransient},
		"undecodable event":       {&store.ApplyError{Index: 0, Err: &store.BadRowError{}}, store.ClassEvent},
		"client error, no event":  {errors.New("conn busy"), store.ClassDatabase},
	} {
		require.Equal(t, tc.want, store.Classify(tc.err), name)
	}
	require.True(t, store.ClassUnknown.CountsAgainstEvent())
	require.True(t, store.ClassEvent.CountsAgainstEvent())
	require.True(t, store.ClassTimeout.CountsAgainstEvent())
	require.False(t, store.ClassDatabase.CountsAgainstEvent())
	require.False(t, store.ClassTransient.CountsAgainstEvent())
}
