package stores

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/testsupport"
)

// emmettReport is what writer-emmett.mjs prints when done.
type emmettReport struct {
	Events   int `json:"events"`
	Commands int `json:"commands"`
	Appends  int `json:"appends"`
	Ms       int `json:"ms"`
}

// emmettOracle is what projectord must apply from Emmett's emt_messages:
// the rows Emmett 0.42's own reader reads (readMessagesBatch: partition
// 'emt:default', is_archived = FALSE), of those the events (message_kind
// 'E'; the emmett preset leaves commands out), each with the values the
// read model must have received.
const emmettOracle = `SELECT message_data->>'uid' AS uid, global_position, stream_id, stream_position AS stream_version,
	message_type AS event_type, message_id AS event_id, message_data AS data, message_metadata AS metadata,
	created AS created_at, transaction_id
	FROM public.emt_messages WHERE partition = 'emt:default' AND is_archived = FALSE AND message_kind = 'E'`

// TestEmmettFailoverReadModelEqualsOracle: Emmett 0.42 from npm creates its
// schema and appends through its own API; `config validate --check-db`
// refuses the table until `source prepare --apply` (run by the table's
// owner) has added the cursor index, and passes after it; then eight
// concurrent Emmett writers append while two replicas project, the leader
// is killed with SIGKILL mid-run and started again, and the read model
// holds every event Emmett's reader reads exactly once, with its values,
// and none of the commands.
func TestEmmettFailoverReadModelEqualsOracle(t *testing.T) {
	e := npmNewEnv(t)
	e.exec(e.pool("postgres", "postgres"), `CREATE DATABASE emmett`)
	db := e.pool("postgres", "emmett")
	owner, runAs := e.url("postgres", "emmett"), e.url("projectord", "emmett")

	var migrated struct{ Applied, Skipped []string }
	e.node(&migrated, "schema-emmett.mjs", owner)
	require.Contains(t, migrated.Applied, "emt:postgresql:eventstore:initial", "Emmett's migrations: %+v", migrated)
	e.npmProjectordRole(db, "emmett", `GRANT SELECT ON public.emt_messages TO projectord`)

	// Rows from before prepare, so the index is built over some.
	var pre emmettReport
	e.node(&pre, "writer-emmett.mjs", "--url", owner, "--writers", "2", "--messages", "40", "--run", "pre")
	require.Positive(t, pre.Commands)

	runCfg := e.config("check", runAs, "emmett", testsupport.Port(t))
	ownerCfg := e.config("owner", owner, "emmett", testsupport.Port(t))
	columns := e.npmColumns(db, "public.emt_messages")

	// Emmett's table has transaction_id xid8 already; what it lacks is the
	// index the reader's range scan needs.
	code, stdout, stderr := e.cli("config", "validate", "--check-db", "--config", runCfg)
	require.Equal(t, 2, code, "check-db before prepare:\n%s%s", stdout, stderr)
	for _, want := range []string{"index", "transaction_id", "global_position", "source prepare"} {
		require.Contains(t, stderr, want, "check-db before prepare names what is missing")
	}

	// Only the table's owner can index it.
	code, stdout, stderr = e.cli("source", "prepare", "--apply", "--config", runCfg)
	require.NotZero(t, code, "prepare as projectord's role:\n%s%s", stdout, stderr)
	require.Contains(t, stderr, "must be owner")

	code, stdout, stderr = e.cli("source", "prepare", "--apply", "--config", ownerCfg)
	require.Zero(t, code, "prepare as the owner:\n%s%s", stdout, stderr)
	require.Contains(t, stdout, "-- Applied and verified.")
	require.Equal(t, columns, e.npmColumns(db, "public.emt_messages"), "prepare changed the columns Emmett writes")

	code, stdout, stderr = e.cli("config", "validate", "--check-db", "--config", runCfg)
	require.Zero(t, code, "check-db after prepare:\n%s%s", stdout, stderr)
	require.Contains(t, stdout, "configuration OK")
	// Emmett declares global_position without NOT NULL (it is filled by
	// a sequence default), which check-db reports without failing.
	require.Contains(t, stderr, `source.columns.position: column "global_position" of public.emt_messages is nullable`)

	code, stdout, stderr = e.cli("migrate", "--config", runCfg)
	require.Zero(t, code, "migrate:\n%s%s", stdout, stderr)

	for _, node := range []string{"node-1", "node-2"} {
		e.start(e.addReplica(node, runAs, "emmett"))
	}
	e.startSampler()
	w := e.startWriter("writer-emmett.mjs", "--url", owner, "--writers", "8", "--messages", "500",
		"--run", "main", "--mark-at", "100", "--hold-at", "300")
	e.npmFailover(db, w)
	var main emmettReport
	w.wait(2*time.Minute, &main)

	e.npmCaughtUp(db, `SELECT transaction_id, global_position FROM (`+emmettOracle+`) o ORDER BY 1 DESC, 2 DESC LIMIT 1`)
	total := e.npmVerdict(db, emmettOracle)
	require.Equal(t, pre.Events+main.Events, total, "events the writers appended and events Emmett's reader reads")
	var commands int
	require.NoError(t, db.QueryRow(e.ctx, `SELECT count(*) FROM public.emt_messages WHERE message_kind = 'C'`).Scan(&commands))
	require.Equal(t, pre.Commands+main.Commands, commands, "commands the writers appended")
	by := e.npmAppliedBy(db)
	require.Len(t, by, 2, "both replicas applied events (the killed leader before, the other after): %v", by)
	samples := e.stopSampler()
	t.Logf("Emmett: %d events and %d commands by 8 writers in %d appends (%d ms); read model = oracle: %d events once each, no command; applied by %v; %d metrics samples, never two leaders",
		main.Events, main.Commands, main.Appends, main.Ms, total, by, samples)
}
