package daemon

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/config"
	"github.com/projectord/projectord/internal/runner"
	"github.com/projectord/projectord/internal/store"
	"github.com/projectord/projectord/internal/testsupport"
)

// A halted version 1 that version 2 replaces is not "halted" any more on a
// replica still configured with it: nobody will resume it, and its halt
// would keep the Halted alerts firing there. It reports superseded.
func TestHaltedVersionReportsSupersededOnceANewerOneIsLive(t *testing.T) {
	tb := setupPG(t)
	tb.appendEvents(t, 10, 10, "A")
	p := config.Projector{Name: "hv", Version: 1,
		Sink: config.Sink{SQL: &config.SQLSink{Handlers: map[string]string{"A": `INSERT INTO no_such_table VALUES (@position)`}}}}
	d := tb.startDaemon(t, tb.config(t, p), "old")
	waitState(t, d, "hv", runner.StateHalted)

	target := store.NewTarget(tb.pool, 5*time.Second)
	v2 := store.Version{Name: "hv", Version: 2}
	_, err := target.EnsureVersion(tb.ctx, v2)
	require.NoError(t, err)
	cp, err := target.Claim(tb.ctx, v2.Key(), "new", 0, store.OrderXID8)
	require.NoError(t, err)
	promoted, err := target.Promote(tb.ctx, v2, cp.Epoch)
	require.NoError(t, err)
	require.True(t, promoted)

	testsupport.Until(t, "version 1 reported superseded", 30*time.Second, func() bool {
		return d.States()["hv"] == runner.StateSuperseded
	})
}
