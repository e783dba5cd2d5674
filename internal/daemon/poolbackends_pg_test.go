package daemon

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/config"
)

// The daemon's pool connections are registered in its node row, where a
// standby's takeover finds them, even when the URL names them itself, and
// they carry the coordination keepalives.
func TestPGPoolConnectionsAreRegisteredWhateverTheirName(t *testing.T) {
	t.Parallel()
	tb := setupPG(t)
	tb.appendEvents(t, 100, 100, "A")
	cfg := tb.config(t, config.Projector{Name: "alpha"})
	cfg.Database.URL = tb.url + "&application_name=myapp"
	cfg.Coordination.KeepaliveIdle = 3 * time.Second
	d := tb.startDaemon(t, cfg, "node-a")
	tb.waitCaughtUp(t, "alpha")

	// Every backend of this database named myapp, except the coordination
	// session (its URL is the same), is registered with its backend_start.
	var unregistered, registered []int32
	require.Eventually(t, func() bool {
		err := tb.pool.QueryRow(context.Background(), `
			WITH n AS (SELECT * FROM projectord.nodes WHERE node_id = 'node-a'),
			     pool AS (SELECT a.pid, a.backend_start FROM pg_stat_activity a, n
			              WHERE a.application_name = 'myapp' AND a.datname = current_database() AND a.pid <> n.backend_pid)
			SELECT coalesce((SELECT array_agg(pid) FROM pool p WHERE NOT EXISTS (
			           SELECT 1 FROM n, unnest(n.pool_backends) b WHERE b.pid = p.pid AND b.backend_start = p.backend_start)), '{}'),
			       coalesce((SELECT array_agg(b.pid) FROM n, unnest(n.pool_backends) b), '{}')`).Scan(&unregistered, &registered)
		return err == nil && len(registered) > 0 && len(unregistered) == 0
	}, 30*time.Second, 10*time.Millisecond, "pool backends missing from the node row: %v (registered %v)", &unregistered, &registered)

	var idle, userTimeout string
	require.NoError(t, d.Pools()["source"].QueryRow(tb.ctx,
		`SELECT current_setting('tcp_keepalives_idle'), current_setting('tcp_user_timeout')`).Scan(&idle, &userTimeout))
	require.Equal(t, []string{"3", "10000"}, []string{idle, userTimeout}, "coordination keepalives on pool connections")
}
