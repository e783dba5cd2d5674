package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projectord/projectord/internal/store"
)

// The store benchmarks read the event stores' own tables, written by the
// stores' own code: Emmett's through its npm package (Node scripts in
// internal/stores/node), Message DB's through its install scripts and its
// write_message function. Each compares projectord reading the store
// through its preset with the store's own reader, and with projectord
// reading the native table holding the same events.

var flagStoreEvents = flag.Int("bench.store-events", 100_000, "events in each store benchmark (a multiple of 5)")

const (
	storeBatch = 1000 // projectord's batch in the store benchmarks, as in the catch-up benchmark
	// Message DB's get_category_messages reads 1,000 messages when not told.
	messageDBBatch = 1000
	// Emmett's appenders at once. One: with several, transaction order
	// differs from global_position order, and Emmett 0.42.0's consumer,
	// which orders by transaction_id but resumes after a global_position,
	// skips events (bench-emmett-write.mjs), so it would never see them all.
	emmettWriters = 1
)

var labelPeer = pprof.Labels("side", "peer")

// nodeDir is where the stores' npm packages and our scripts are, relative
// to this package (go test runs in the package's directory).
const nodeDir = "../stores/node"

// needTool skips b when a program the benchmark drives is missing, unless
// CI is set: there a missing tool is a failure, never a green skip.
func needTool(b *testing.B, what, hint string, ok bool) {
	b.Helper()
	if ok {
		return
	}
	if os.Getenv("CI") != "" {
		b.Fatalf("%s is missing (%s)", what, hint)
	}
	b.Skipf("%s is missing (%s); CI is unset, so skipping", what, hint)
}

func needNode(b *testing.B) string {
	b.Helper()
	node, err := exec.LookPath("node")
	needTool(b, "node", "install Node.js 20 or later", err == nil)
	_, err = os.Stat(filepath.Join(nodeDir, "node_modules", ".package-lock.json"))
	needTool(b, "the stores' npm packages", "run `make node-deps`", err == nil)
	return node
}

// runNode runs a Node script to completion and decodes the last line it
// prints into out. Its stderr is shown only when it fails.
func runNode(b *testing.B, script string, out any, args ...string) {
	b.Helper()
	node := needNode(b)
	ctx, cancel := context.WithTimeout(b.Context(), setupTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, append([]string{script}, args...)...)
	cmd.Dir = nodeDir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		b.Fatalf("%s failed: %v\n%s", script, err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), out); err != nil {
		b.Fatalf("%s printed %q, not the JSON expected: %v", script, stdout.String(), err)
	}
}

// nodePeerResult is what bench-emmett-consume.mjs prints after consuming.
type nodePeerResult struct {
	Events     int     `json:"events"`
	Last       string  `json:"last_global_position"`
	Seconds    float64 `json:"seconds"`
	CPUSeconds float64 `json:"cpu_seconds"`
}

// measureNodePeer runs a Node peer through its line protocol (see
// bench-emmett-consume.mjs): CPU is sampled between its go line and its
// result, while the server processes serving it still exist, and its own
// CPU is the client's, not other processes' load.
func measureNodePeer(b *testing.B, script string, args ...string) (measurement, nodePeerResult) {
	b.Helper()
	node := needNode(b)
	ctx, cancel := context.WithTimeout(b.Context(), runTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, append([]string{script}, args...)...)
	cmd.Dir = nodeDir
	cmd.WaitDelay = stopTimeout
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatalf("starting %s: %v", script, err)
	}
	fail := func(format string, a ...any) {
		b.Helper()
		_ = stdin.Close()
		_ = cmd.Wait()
		b.Fatalf("%s: %s\n%s", script, fmt.Sprintf(format, a...), stderr.String())
	}
	lines := bufio.NewScanner(stdout)
	next := func(what string, v any) {
		b.Helper()
		if !lines.Scan() {
			fail("ended before printing %s (%v)", what, lines.Err())
		}
		if err := json.Unmarshal(lines.Bytes(), v); err != nil {
			fail("printed %q where %s was expected: %v", lines.Text(), what, err)
		}
	}
	var ready struct{ Ready bool }
	if next("ready", &ready); !ready.Ready {
		fail("printed %q where ready was expected", lines.Text())
	}
	var res nodePeerResult
	var u cpuUse
	pprof.Do(ctx, labelPeer, func(context.Context) {
		c0 := sampleCPU()
		if _, err := io.WriteString(stdin, "go\n"); err != nil {
			fail("writing go: %v", err)
		}
		next("its result", &res)
		u = sampleCPU().since(c0)
	})
	if err := stdin.Close(); err != nil {
		fail("closing stdin: %v", err)
	}
	_, _ = io.Copy(io.Discard, stdout)
	if err := cmd.Wait(); err != nil {
		b.Fatalf("%s ended with %v\n%s", script, err, stderr.String())
	}
	peerCPU := time.Duration(res.CPUSeconds * float64(time.Second))
	u.client += peerCPU // this process only waited meanwhile
	if u.foreignOK {
		u.foreign = max(0, u.foreign-peerCPU)
	}
	return measurement{took: time.Duration(res.Seconds * float64(time.Second)), events: res.Events, cpu: u}, res
}

// storeRows is what one store benchmark reads: the last cursor and the
// number of the rows the store's own reader reads.
type storeRows struct {
	last   store.Cursor
	events int
}

// copyToNative copies the store's events, as selected by from (a query
// yielding stream_id, stream_version, event_type, data, metadata,
// created_at, position, ordered for reading), into the native table, in
// ten transactions as loadOrders writes, so the native side reads the very
// same payloads.
func (db *benchDB) copyToNative(b *testing.B, from string, events int) storeRows {
	b.Helper()
	per := (events + 9) / 10
	for lo := 0; lo < events; lo += per {
		db.exec(b, `INSERT INTO events (stream_id, stream_version, event_type, data, metadata, created_at)
			SELECT stream_id, stream_version, event_type, data, metadata, created_at
			FROM (`+from+`) e ORDER BY n OFFSET $1 LIMIT $2`, lo, per)
	}
	var r storeRows
	ctx, cancel := context.WithTimeout(b.Context(), setupTimeout)
	defer cancel()
	err := db.pool.QueryRow(ctx, `SELECT transaction_id, global_position, (SELECT count(*) FROM events)
		FROM events ORDER BY transaction_id DESC, global_position DESC LIMIT 1`).Scan(&r.last.XID, &r.last.Position, &r.events)
	if err != nil {
		b.Fatal(err)
	}
	if r.events != events {
		b.Fatalf("copied %d events into the native table, want %d", r.events, events)
	}
	return r
}

// settle vacuums and analyses what the benchmark reads and checkpoints, so
// that no side pays for the other's writes.
func (db *benchDB) settle(b *testing.B, tables ...string) {
	b.Helper()
	db.exec(b, `VACUUM ANALYZE `+strings.Join(tables, ", "))
	ctx, cancel := context.WithTimeout(b.Context(), setupTimeout)
	defer cancel()
	if _, err := db.pool.Exec(ctx, `CHECKPOINT`); err != nil {
		b.Logf("CHECKPOINT skipped: %v", err)
	}
}

// presetSource is the source a configuration naming only source.preset
// reads: the preset's table and columns, xid8 ordering.
func presetSource(name string) *store.Source {
	p := store.Presets[name]
	return &store.Source{Preset: name, Table: p.Table, Columns: p.Columns, Ordering: store.OrderXID8}
}

// prepare runs `source prepare --apply` on src as the command does (the
// plan from the catalogue, each step as --apply runs it) and verifies what
// it leaves: on Emmett's partitioned table, the index ON ONLY each
// partitioned level, built concurrently on each leaf and attached; on
// Message DB's, the xid8 column and the index.
func (db *benchDB) prepare(b *testing.B, src store.Source) {
	b.Helper()
	ctx := b.Context()
	r, err := src.Resolve(ctx, db.pool)
	if err != nil {
		b.Fatal(err)
	}
	steps, err := store.PlanPrepare(ctx, db.pool, r, false, "")
	if err != nil {
		b.Fatal(err)
	}
	for _, st := range steps {
		if err := store.ApplyPrepareStep(ctx, db.pool, st, 0); err != nil {
			b.Fatal(err)
		}
	}
	if err := store.VerifyPrepared(ctx, db.pool, r, false); err != nil {
		b.Fatal(err)
	}
	if err := store.CheckCursorIndex(ctx, db.pool, r); err != nil {
		b.Fatal(err)
	}
}

// storeRun is one store benchmark's projectord sides: the preset and the
// native table in the same database, each with its own watcher and
// coordination session, as two daemons would have.
type storeRun struct {
	db             *benchDB
	preset, native *projectord
	presetRows     storeRows
	nativeRows     storeRows
	sink           *store.SQLSink
}

func (db *benchDB) startStoreRun(b *testing.B, presetName string, presetRows, nativeRows storeRows) *storeRun {
	b.Helper()
	sink, err := store.CompileSQLSink(map[string]string{}, "")
	if err != nil {
		b.Fatal(err)
	}
	native := nativeSource
	s := &storeRun{db: db, presetRows: presetRows, nativeRows: nativeRows, sink: sink,
		preset: db.startProjectord(b, projectordOptions{source: presetSource(presetName), node: "bench-" + presetName}),
		native: db.startProjectord(b, projectordOptions{source: &native, node: "bench-native"})}
	// One untimed catch-up each, so that neither timed side pays for
	// bringing its table and index into the caches, or for planning.
	s.catchUp(b, s.preset, "warm-"+presetName, s.presetRows)
	s.catchUp(b, s.native, "warm-native", s.nativeRows)
	return s
}

// catchUp is one projectord catch-up with the no-op sink, checked: the
// checkpoint must end at the last row, having applied nothing (a sink
// without handlers passes over every event).
func (s *storeRun) catchUp(b *testing.B, p *projectord, name string, rows storeRows) measurement {
	b.Helper()
	m := p.measureCatchUp(b, name, storeBatch, s.sink, rows.last, rows.events)
	cp, ok, err := store.NewTarget(s.db.pool, setupTimeout).Load(b.Context(), name)
	if err != nil || !ok || cp.Cursor != rows.last || cp.EventsApplied != 0 {
		b.Fatalf("projector %s: checkpoint %+v (found %v, err %v), want cursor %s and no events applied", name, cp, ok, err, rows.last)
	}
	return m
}

// presetVsNative runs the preset and the native table in paired rounds.
func (s *storeRun) presetVsNative(b *testing.B, presetName string) roundResults {
	b.Helper()
	return rounds(b, "native", presetName+" preset",
		func(r int) measurement { return s.catchUp(b, s.native, fmt.Sprintf("native-%d", r), s.nativeRows) },
		func(r int) measurement {
			return s.catchUp(b, s.preset, fmt.Sprintf("%s-%d", presetName, r), s.presetRows)
		})
}

// BenchmarkStores measures catching up through the emmett and messagedb
// presets on tables the stores' own code created and filled, against the
// stores' own readers over the same rows and against projectord on the
// native table holding the same events.
func BenchmarkStores(b *testing.B) {
	if *flagStoreEvents%5 != 0 || *flagStoreEvents <= 0 {
		b.Fatalf("-bench.store-events must be a positive multiple of 5, got %d", *flagStoreEvents)
	}
	b.Run("emmett", benchEmmett)
	b.Run("messagedb", benchMessageDB)
}

// benchEmmett: Emmett's schema from Emmett's migrations, rows from its
// appendToStream, its own consumer as the peer.
func benchEmmett(b *testing.B) {
	needNode(b)
	db := newBenchDB(b)
	orders := *flagStoreEvents / 5
	var wrote struct {
		Events  int     `json:"events"`
		Seconds float64 `json:"seconds"`
	}
	runNode(b, "bench-emmett-write.mjs", &wrote, "--url", db.url, "--orders", strconv.Itoa(orders), "--concurrency", strconv.Itoa(emmettWriters))
	b.Logf("Emmett's appendToStream wrote %d events (%d orders, one transaction each, %d at a time) in %.1fs", wrote.Events, orders, emmettWriters, wrote.Seconds)

	src := presetSource("emmett")
	// emt_messages already has transaction_id xid8, so preparing it is the
	// index alone.
	db.prepare(b, *src)
	// The rows the preset reads, as Emmett's readMessagesBatch selects them.
	const emmettRows = `FROM public.emt_messages WHERE partition = 'emt:default' AND is_archived = FALSE AND message_kind = 'E'`
	var pr storeRows
	if err := db.pool.QueryRow(b.Context(), `SELECT transaction_id, global_position, count(*) OVER () `+emmettRows+`
		ORDER BY transaction_id DESC, global_position DESC LIMIT 1`).Scan(&pr.last.XID, &pr.last.Position, &pr.events); err != nil {
		b.Fatal(err)
	}
	if pr.events != *flagStoreEvents || wrote.Events != pr.events {
		b.Fatalf("Emmett's table holds %d events to read (the writer reported %d), want %d", pr.events, wrote.Events, *flagStoreEvents)
	}
	nr := db.copyToNative(b, `SELECT stream_id, stream_position AS stream_version, message_type AS event_type, message_data AS data,
		message_metadata AS metadata, created AS created_at, row_number() OVER (ORDER BY transaction_id, global_position) AS n `+emmettRows, pr.events)
	db.settle(b, "public.emt_messages", "public.events")

	s := db.startStoreRun(b, "emmett", pr, nr)
	res := s.presetVsNative(b, "emmett")

	// Emmett's consumer runs once per configuration: as shipped it sleeps
	// 50 ms between batches of 100, so 100k events take over a minute,
	// and its figure is far from what the target has to tell apart.
	peer := func(name string, args ...string) measurement {
		args = append([]string{"--url", db.url, "--events", strconv.Itoa(pr.events), "--processor-id", name}, args...)
		m, out := measureNodePeer(b, "bench-emmett-consume.mjs", args...)
		if out.Events != pr.events || out.Last != strconv.FormatInt(pr.last.Position, 10) {
			b.Fatalf("Emmett's consumer (%s) saw %d events ending at global position %s, want %d ending at %d", name, out.Events, out.Last, pr.events, pr.last.Position)
		}
		b.Logf("Emmett's consumer (%s): %d events in %s (%.0f/s); CPU node %.1fs, server %s; other processes %.2f cores", name, m.events,
			m.took.Round(time.Millisecond), m.rate(), out.CPUSeconds, m.cpu.server.Round(time.Millisecond), m.foreignCores())
		return m
	}
	shipped := peer("bench-defaults")
	tuned := peer("bench-tuned", "--batch-size", strconv.Itoa(storeBatch), "--pulling-ms", "0")

	reportStore(b, "emmett", pr.events, res,
		peerResult{name: "Emmett postgreSQLEventStoreConsumer, defaults (batch 100, 50 ms pulls)", metric: "emmett_consumer", m: sideResults{shipped}, target: 50},
		peerResult{name: fmt.Sprintf("Emmett postgreSQLEventStoreConsumer, batch %d, 0 ms pulls", storeBatch), metric: "emmett_consumer_tuned", m: sideResults{tuned}})
}

// benchMessageDB: Message DB's schema from its install script, rows from
// its write_message, get_category_messages in a loop as the peer.
func benchMessageDB(b *testing.B) {
	psql, err := exec.LookPath("psql")
	needTool(b, "psql", "Message DB's install script runs it; install postgresql-client", err == nil)
	db := newBenchDB(b)
	db.installMessageDB(b, psql)
	db.writeMessages(b, *flagStoreEvents/5, 10)

	src := presetSource("messagedb")
	// Message DB has no xid8 column: `source prepare --apply` adds it (the
	// rows written so far get xid 1) and builds the index concurrently.
	db.prepare(b, *src)
	var pr storeRows
	if err := db.pool.QueryRow(b.Context(), `SELECT transaction_id, global_position, count(*) OVER () FROM message_store.messages
		ORDER BY transaction_id DESC, global_position DESC LIMIT 1`).Scan(&pr.last.XID, &pr.last.Position, &pr.events); err != nil {
		b.Fatal(err)
	}
	if pr.events != *flagStoreEvents {
		b.Fatalf("message_store.messages holds %d messages, want %d", pr.events, *flagStoreEvents)
	}
	nr := db.copyToNative(b, `SELECT stream_name AS stream_id, position AS stream_version, type AS event_type, data, metadata,
		time AT TIME ZONE 'UTC' AS created_at, global_position AS n FROM message_store.messages`, pr.events)
	db.settle(b, "message_store.messages", "public.events")

	// Message DB's functions name its objects unqualified: its clients put
	// message_store on the search_path.
	pc, err := pgxpool.ParseConfig(db.url)
	if err != nil {
		b.Fatal(err)
	}
	pc.MaxConns = db.pool.Config().MaxConns
	pc.ConnConfig.RuntimeParams["search_path"] = "message_store, public"
	peerPool, err := pgxpool.NewWithConfig(b.Context(), pc)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(peerPool.Close)
	if n, err := messageDBCatchUp(b.Context(), peerPool, "order", messageDBBatch); err != nil || n != pr.events {
		b.Fatalf("warm-up: get_category_messages read %d of %d messages: %v", n, pr.events, err)
	}

	s := db.startStoreRun(b, "messagedb", pr, nr)
	res := s.presetVsNative(b, "messagedb")
	peerRes := rounds(b, "get_category_messages", "messagedb preset",
		func(int) measurement {
			m, err := measure(b.Context(), labelPeer, func(ctx context.Context) (int, error) {
				return messageDBCatchUp(ctx, peerPool, "order", messageDBBatch)
			})
			if err != nil || m.events != pr.events {
				b.Fatalf("get_category_messages read %d of %d messages: %v", m.events, pr.events, err)
			}
			return m
		},
		func(r int) measurement { return s.catchUp(b, s.preset, fmt.Sprintf("messagedb-peer-%d", r), pr) })
	reportStore(b, "messagedb", pr.events, res,
		peerResult{name: fmt.Sprintf("Message DB get_category_messages loop (batch %d)", messageDBBatch), metric: "get_category_messages",
			m: peerRes.base, paired: &peerRes, target: 50},
		peerResult{})
}

// installMessageDB runs Message DB's own install script against db's
// database (CREATE_DATABASE=off: the database exists). The message_store
// role it creates is cluster-wide; the script tolerates it existing.
func (db *benchDB) installMessageDB(b *testing.B, psql string) {
	b.Helper()
	cc, err := pgx.ParseConfig(db.url)
	if err != nil {
		b.Fatal(err)
	}
	dir := filepath.Join(nodeDir, "node_modules", "@eventide", "message-db", "database")
	_, err = os.Stat(filepath.Join(dir, "install.sh"))
	needTool(b, "Message DB's install script", "run `make node-deps`", err == nil)
	ctx, cancel := context.WithTimeout(b.Context(), setupTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "install.sh")
	cmd.Dir = dir
	// psql reads the connection from the environment; the password, if
	// any, goes there too, never onto a command line or into a log.
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(psql)+string(os.PathListSeparator)+os.Getenv("PATH"),
		"PGHOST="+cc.Host, "PGPORT="+strconv.Itoa(int(cc.Port)), "PGUSER="+cc.User, "PGPASSWORD="+cc.Password,
		"PGSSLMODE="+sslMode(db.url), "DATABASE_NAME="+cc.Database, "CREATE_DATABASE=off")
	out, err := cmd.CombinedOutput()
	if err != nil {
		b.Fatalf("Message DB's install.sh failed: %v\n%s", err, out)
	}
}

// sslMode is the URL's sslmode, "prefer" (libpq's default) when unset.
func sslMode(url string) string {
	if _, q, ok := strings.Cut(url, "?"); ok {
		for kv := range strings.SplitSeq(q, "&") {
			if k, v, _ := strings.Cut(kv, "="); k == "sslmode" {
				return v
			}
		}
	}
	return "prefer"
}

// writeMessages writes the events of orders 1..n with Message DB's own
// write_message, one call per message (each takes the category's advisory
// lock and reads the stream's version, as every Message DB writer does),
// shaped as loadOrders shapes them, in txs transactions.
func (db *benchDB) writeMessages(b *testing.B, n, txs int) {
	b.Helper()
	per := (n + txs - 1) / txs
	ctx, cancel := context.WithTimeout(b.Context(), setupTimeout)
	defer cancel()
	start := time.Now()
	for lo := 1; lo <= n; lo += per {
		hi := min(lo+per-1, n)
		err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SET LOCAL search_path TO message_store, public`); err != nil {
				return err
			}
			// The subquery's ORDER BY runs before its volatile select list:
			// write_message is called in that order, so each stream's
			// positions follow its events.
			_, err := tx.Exec(ctx, `SELECT count(*) FROM (SELECT message_store.write_message(gen_random_uuid()::text, 'order-' || o,
				CASE WHEN s = 1 THEN 'OrderPlaced'
				     WHEN s = len AND o % 10 <> 0 THEN 'OrderShipped'
				     ELSE 'ItemAdded' END,
				CASE WHEN s = 1 THEN jsonb_build_object('order_id', 'order-' || o, 'customer', 'customer-' || (o % 997),
				                                        'channel', (ARRAY['web', 'app', 'store'])[1 + o % 3])
				     WHEN s = len AND o % 10 <> 0 THEN jsonb_build_object('order_id', 'order-' || o, 'carrier', 'dhl',
				                                        'tracking', md5(o::text))
				     ELSE jsonb_build_object('order_id', 'order-' || o, 'sku', 'sku-' || ((o * 31 + s * 17) % 6),
				                             'qty', 1 + (o + s) % 4, 'price', round(1 + ((o * 13 + s * 7) % 5000) / 100.0, 2)) END,
				jsonb_build_object('correlation_id', md5('c' || o), 'user', 'user-' || (o % 101)))
			FROM (SELECT o, 3 + (o * 7) % 5 AS len FROM generate_series($1::int, $2::int) o) orders,
				generate_series(1, len) s
			ORDER BY o / 500, s, o) w`, lo, hi)
			return err
		})
		if err != nil {
			b.Fatalf("write_message: %v", err)
		}
	}
	b.Logf("Message DB's write_message wrote the events of %d orders in %d transactions in %s", n, txs, time.Since(start).Round(time.Millisecond))
}

// messageDBCatchUp is the Message DB peer: its own reader function in a
// plain loop, from position 1 until a batch comes back empty, scanning
// every message as Message DB returns it.
func messageDBCatchUp(ctx context.Context, pool *pgxpool.Pool, category string, batch int) (int, error) {
	type message struct {
		id, streamName, typ string
		position, globalPos int64
		data, metadata      []byte
		time                time.Time
	}
	buf := make([]message, 0, batch)
	pos := int64(1)
	n := 0
	for {
		rows, err := pool.Query(ctx, `SELECT id, stream_name, type, position, global_position, data, metadata, time
			FROM message_store.get_category_messages($1, $2, $3)`, category, pos, batch)
		if err != nil {
			return n, err
		}
		buf = buf[:0]
		for rows.Next() {
			buf = append(buf, message{})
			m := &buf[len(buf)-1]
			if err := rows.Scan(&m.id, &m.streamName, &m.typ, &m.position, &m.globalPos, &m.data, &m.metadata, &m.time); err != nil {
				rows.Close()
				return n, err
			}
		}
		if err := rows.Err(); err != nil {
			return n, err
		}
		if len(buf) == 0 {
			return n, nil
		}
		n += len(buf)
		pos = buf[len(buf)-1].globalPos + 1
	}
}

// peerResult is one store's own reader as a baseline.
type peerResult struct {
	name, metric string
	m            sideResults
	paired       *roundResults // measured in rounds paired with projectord, or nil
	target       float64       // 0: informational
}

const storeTitle = "Catch-up through store presets"

// reportStore reports a store benchmark's metrics on b and adds the
// summary rows: projectord through the preset against the store's own
// reader (ratios above 1 mean projectord is faster) and against the
// native table of the same events.
func reportStore(b *testing.B, storeName string, events int, vsNative roundResults, peer, info peerResult) {
	b.Helper()
	nativeRate, rate := vsNative.base.medianRate(), vsNative.proj.medianRate()
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(rate, "preset_events/s")
	b.ReportMetric(nativeRate, "native_events/s")
	b.ReportMetric(vsNative.pairedRatio(), "ratio_vs_native")
	note := "Events per second, median over the rounds kept; projectord with a no-op SQL sink, batch " + strconv.Itoa(storeBatch) + ". " +
		"A ratio paired over rounds is the median of projectord/baseline within each round; a baseline run once (Emmett's consumer, over a minute as shipped) " +
		"is divided into projectord's median. Other load: CPU other processes used meanwhile, in cores (the peer's own Node process counts as the peer's)."
	header := []string{"store", "events", "baseline", "baseline events/s", "projectord events/s", "ratio", "target", "verdict", "rounds kept", "other load (cores)"}
	verdict := func(ratio, target float64) string {
		switch {
		case target == 0:
			return "—"
		case ratio < target:
			return "**misses**"
		}
		return "meets"
	}
	target := func(t float64) string {
		if t == 0 {
			return "(information)"
		}
		return fmt.Sprintf("≥ %.2f", t)
	}
	for _, p := range []peerResult{peer, info} {
		if p.name == "" {
			continue
		}
		peerRate := p.m.medianRate()
		var ratio float64
		kept, load := fmt.Sprintf("%d run", len(p.m)), foreignNote(p.m)
		projRate := rate
		if p.paired != nil {
			ratio, projRate = p.paired.pairedRatio(), p.paired.proj.medianRate()
			kept, load = p.paired.roundsNote(), p.paired.foreignNote()
		} else {
			ratio = rate / peerRate
		}
		b.ReportMetric(peerRate, p.metric+"_events/s")
		b.ReportMetric(ratio, "ratio_vs_"+p.metric)
		summary.add(storeTitle, note, header, storeName+" preset", fmt.Sprint(events), p.name, fmt.Sprintf("%.0f", peerRate),
			fmt.Sprintf("%.0f", projRate), fmt.Sprintf("%.2f", ratio), target(p.target), verdict(ratio, p.target), kept, load)
	}
	ratio := vsNative.pairedRatio()
	summary.add(storeTitle, note, header, storeName+" preset", fmt.Sprint(events), "projectord on the native table of the same events",
		fmt.Sprintf("%.0f", nativeRate), fmt.Sprintf("%.0f", rate), fmt.Sprintf("%.2f", ratio), target(0.8), verdict(ratio, 0.8),
		vsNative.roundsNote(), vsNative.foreignNote())

	cpu := func(s sideResults) (string, string) {
		c, sv, ok := s.cpuPerEvent()
		if !ok {
			return "n/a", "n/a"
		}
		return fmt.Sprintf("%.2f", c), fmt.Sprintf("%.2f", sv)
	}
	pc, ps := cpu(vsNative.proj)
	for _, side := range []struct {
		name string
		m    sideResults
	}{{peer.name, peer.m}, {info.name, info.m}, {"projectord, native table", vsNative.base}} {
		if side.name == "" {
			continue
		}
		c, s := cpu(side.m)
		summary.add("Store presets: CPU per event", "CPU µs per event (median): client = the reading process (this Go process; for Emmett, "+
			"its Node process), server = all processes of the PostgreSQL cluster.",
			[]string{"store", "baseline", "baseline client µs/ev", "baseline server µs/ev", "projectord preset client µs/ev", "projectord preset server µs/ev"},
			storeName, side.name, c, s, pc, ps)
	}
}

// foreignNote is other processes' median load over a side's runs.
func foreignNote(s sideResults) string {
	var f []float64
	for _, m := range s {
		if m.cpu.foreignOK {
			f = append(f, m.foreignCores())
		}
	}
	if len(f) == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", median(f))
}
