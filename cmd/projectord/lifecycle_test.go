package main

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/projectord/projectord/internal/config"
	"github.com/projectord/projectord/internal/daemon"
	"github.com/projectord/projectord/internal/store"
	"github.com/projectord/projectord/internal/store/pgtest"
)

// lifecycleConfig is a configuration of one projector on url, with no
// HTTP server.
func lifecycleConfig(url string) *config.Config {
	c := config.Default()
	c.Database.URL = url
	c.HTTP.Listen = ""
	c.ShutdownTimeout = 10 * time.Second
	c.Source.PollInterval = 10 * time.Millisecond
	c.Projectors = []config.Projector{{Name: "p", BatchSize: 100,
		OnError: config.ErrorPolicy{MaxAttempts: 2, Initial: time.Millisecond, Max: 10 * time.Millisecond, Then: "halt"},
		Sink:    config.Sink{SQL: &config.SQLSink{Handlers: map[string]string{"*": "SELECT 1"}}}}}
	return &c
}

// TestRunUntilSignalExitsWithTheDaemonsFailure: a daemon that ended with a
// fatal error (here a source without xid8) makes `run` exit 2, even when a
// stop was asked for at the same time: the stop does not turn the failure
// into a clean exit. runUntilSignal waits for a signal, the end of its
// context or the daemon's end, whichever comes first; with the daemon
// already failed and the context already ended, both are ready, and the
// exit code must not depend on which one it picks. A controlled stop of a
// healthy daemon still exits 0.
func TestRunUntilSignalExitsWithTheDaemonsFailure(t *testing.T) {
	t.Parallel()
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	url := pgtest.NewDatabase(t)
	pool, err := pgxpool.New(t.Context(), url)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	for _, q := range store.NativeTableSQL("public.events") {
		_, err := pool.Exec(t.Context(), q)
		require.NoError(t, err)
	}
	_, err = pool.Exec(t.Context(), `ALTER TABLE events DROP COLUMN transaction_id`)
	require.NoError(t, err)

	stopped, cancel := context.WithCancel(context.Background())
	cancel()
	// select picks at random among ready cases: 32 runs leave a one in
	// 2^32 chance for a wrong exit to go unseen.
	for i := 0; i < 32; i++ {
		a, err := startApp(t.Context(), lifecycleConfig(url), log, true)
		require.NoError(t, err)
		select {
		case <-a.daemon.Done():
		case <-time.After(30 * time.Second):
			a.stop(context.Background())
			t.Fatal("the daemon never refused the source")
		}
		require.ErrorIs(t, a.daemon.Cause(), store.ErrNoXID8)
		err = runUntilSignal(stopped, a)
		var cerr *configError
		require.ErrorAs(t, err, &cerr, "run %d: a failed daemon exits 2, not 0", i)
		require.ErrorIs(t, err, store.ErrNoXID8)
	}

	// A healthy daemon stopped on purpose exits 0.
	good := pgtest.NewDatabase(t)
	gpool, err := pgxpool.New(t.Context(), good)
	require.NoError(t, err)
	t.Cleanup(gpool.Close)
	for _, q := range store.NativeTableSQL("public.events") {
		_, err := gpool.Exec(t.Context(), q)
		require.NoError(t, err)
	}
	a, err := startApp(t.Context(), lifecycleConfig(good), log, true)
	require.NoError(t, err)
	require.Eventually(t, func() bool { ok, _ := a.daemon.Readiness(); return ok }, 30*time.Second, 10*time.Millisecond)
	require.NoError(t, runUntilSignal(stopped, a), "a controlled stop exits 0")
	require.ErrorIs(t, a.daemon.Cause(), daemon.ErrStopped)
}
