package stores

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/testsupport"
)

// messageDBReport is what writer-messagedb.mjs prints when done.
type messageDBReport struct {
	Messages     int `json:"messages"`
	Transactions int `json:"transactions"`
	NullMetadata int `json:"nullMetadata"`
	Ms           int `json:"ms"`
}

// messageDBOracle is what projectord must apply from Message DB: every
// message, read through Message DB's own reader, get_category_messages,
// for every category, with the values the read model must have
// received. The function returns data and metadata as text and time as
// the timestamp without time zone the table holds, in UTC.
const messageDBOracle = `SELECT (m.data::jsonb)->>'uid' AS uid, m.global_position, m.stream_name AS stream_id,
	m.position AS stream_version, m.type AS event_type, m.id AS event_id, m.data::jsonb AS data,
	m.metadata::jsonb AS metadata, m.time AT TIME ZONE 'UTC' AS created_at
	FROM (SELECT DISTINCT message_store.category(stream_name) AS c FROM message_store.messages) cats,
	     message_store.get_category_messages(cats.c, 1, -1) m`

// npmPsqlDir is the directory of the psql (and createdb) Message DB's
// install script runs: on PATH, else a Debian server's. Without them the
// test is skipped, unless the run is CI's (.ci/run installs PostgreSQL,
// whose package brings both).
func npmPsqlDir(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("psql"); err == nil {
		if _, err := exec.LookPath("createdb"); err == nil {
			return filepath.Dir(p)
		}
	}
	if found, _ := filepath.Glob("/usr/lib/postgresql/*/bin/psql"); len(found) > 0 {
		return filepath.Dir(found[len(found)-1])
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("psql and createdb are not on PATH; .ci/run installs PostgreSQL")
	}
	t.Skipf("psql and createdb are not on PATH: Message DB's install script needs them")
	return ""
}

// TestMessageDBFailoverReadModelEqualsOracle: Message DB 1.3.1 from npm is
// installed by its own install.sh (database message_store, role
// message_store, its grants) and written through its own write_message;
// `config validate --check-db` refuses the table until `source prepare
// --apply` (run by the table's owner, not the message_store role) has
// added the xid8 column and its index, and passes after it; then eight
// concurrent writers write while two replicas project, the leader is
// killed with SIGKILL mid-run and started again, and the read model holds
// every message Message DB's own reader reads exactly once, with its
// values (NULL metadata as NULL, time as the UTC instant it records).
func TestMessageDBFailoverReadModelEqualsOracle(t *testing.T) {
	e := npmNewEnv(t)
	psql := npmPsqlDir(t)

	ctx, cancel := context.WithTimeout(e.ctx, 2*time.Minute)
	defer cancel()
	install := exec.CommandContext(ctx, "bash", "install.sh")
	install.Dir = filepath.Join(e.nodeDir, "node_modules/@eventide/message-db/database")
	install.Env = append(os.Environ(), "PATH="+psql+string(os.PathListSeparator)+os.Getenv("PATH"),
		"PGHOST=127.0.0.1", "PGPORT="+strconv.Itoa(e.cluster.Port()), "PGUSER=postgres", "PGDATABASE=postgres")
	out, err := install.CombinedOutput()
	require.NoError(t, err, "Message DB's install.sh:\n%s", out)
	require.Contains(t, string(out), "Done Installing Database")

	db := e.pool("postgres", "message_store")
	// Message DB's functions call each other unqualified: its reader runs
	// with its schema on the search_path, as its role message_store has it.
	reader := e.pool("message_store", "message_store")
	owner, runAs, writeAs := e.url("postgres", "message_store"), e.url("projectord", "message_store"), e.url("message_store", "message_store")
	e.npmProjectordRole(db, "message_store",
		`GRANT USAGE ON SCHEMA message_store TO projectord`,
		`GRANT SELECT ON message_store.messages TO projectord`)

	// Rows from before prepare: they get the constant xid 1 and are read
	// first.
	var pre messageDBReport
	e.node(&pre, "writer-messagedb.mjs", "--url", writeAs, "--writers", "2", "--messages", "40", "--run", "pre")

	runCfg := e.config("check", runAs, "messagedb", testsupport.Port(t))
	ownerCfg := e.config("owner", owner, "messagedb", testsupport.Port(t))
	columns := e.npmColumns(db, "message_store.messages")

	code, stdout, stderr := e.cli("config", "validate", "--check-db", "--config", runCfg)
	require.Equal(t, 2, code, "check-db before prepare:\n%s%s", stdout, stderr)
	for _, want := range []string{"transaction_id", "source prepare"} {
		require.Contains(t, stderr, want, "check-db before prepare names what is missing")
	}

	// The table belongs to whoever ran install.sh; neither projectord's
	// role nor message_store may alter it.
	code, stdout, stderr = e.cli("source", "prepare", "--apply", "--config", runCfg)
	require.NotZero(t, code, "prepare as projectord's role:\n%s%s", stdout, stderr)
	require.Contains(t, stderr, "must be owner")

	code, stdout, stderr = e.cli("source", "prepare", "--apply", "--config", ownerCfg)
	require.Zero(t, code, "prepare as the owner:\n%s%s", stdout, stderr)
	require.Contains(t, stdout, "-- Applied and verified.")
	require.Equal(t, append(columns, "transaction_id xid8 NOT NULL DEFAULT pg_current_xact_id()"), e.npmColumns(db, "message_store.messages"),
		"prepare adds the xid8 column, filled by its default for write_message's inserts, and changes nothing else")
	var preXIDs []string
	require.NoError(t, db.QueryRow(e.ctx, `SELECT array_agg(DISTINCT transaction_id::text) FROM message_store.messages`).Scan(&preXIDs))
	require.Equal(t, []string{"1"}, preXIDs, "rows written before prepare")

	code, stdout, stderr = e.cli("config", "validate", "--check-db", "--config", runCfg)
	require.Zero(t, code, "check-db after prepare:\n%s%s", stdout, stderr)
	require.Contains(t, stdout, "configuration OK")
	require.NotContains(t, stderr, "warning:", "Message DB's mapped columns are all NOT NULL")

	code, stdout, stderr = e.cli("migrate", "--config", runCfg)
	require.Zero(t, code, "migrate:\n%s%s", stdout, stderr)

	for _, node := range []string{"node-1", "node-2"} {
		e.start(e.addReplica(node, runAs, "messagedb"))
	}
	e.startSampler()
	w := e.startWriter("writer-messagedb.mjs", "--url", writeAs, "--writers", "8", "--messages", "500",
		"--run", "main", "--mark-at", "100", "--hold-at", "300")
	e.npmFailover(db, w)
	var main messageDBReport
	w.wait(2*time.Minute, &main)

	e.npmCaughtUp(db, `SELECT transaction_id, global_position FROM message_store.messages ORDER BY 1 DESC, 2 DESC LIMIT 1`)
	// The verdict runs as message_store, whose search_path the oracle's
	// get_category_messages needs; it reads the read model and checkpoints
	// through grants given here.
	e.exec(db, `GRANT SELECT ON public.applied TO message_store`)
	total := e.npmVerdict(reader, messageDBOracle)
	var rows, nullMetadata int
	require.NoError(t, db.QueryRow(e.ctx, `SELECT count(*), count(*) FILTER (WHERE metadata IS NULL) FROM message_store.messages`).Scan(&rows, &nullMetadata))
	require.Equal(t, rows, total, "Message DB's reader reads every row")
	require.Equal(t, pre.Messages+main.Messages, total, "messages the writers wrote")
	require.Equal(t, pre.NullMetadata+main.NullMetadata, nullMetadata)
	require.Positive(t, nullMetadata)
	by := e.npmAppliedBy(db)
	require.Len(t, by, 2, "both replicas applied events (the killed leader before, the other after): %v", by)
	samples := e.stopSampler()
	t.Logf("Message DB: %d messages by 8 writers in %d transactions (%d ms), %d with NULL metadata; read model = oracle: %d once each; applied by %v; %d metrics samples, never two leaders",
		main.Messages, main.Transactions, main.Ms, nullMetadata, total, by, samples)
}
