// Package bench holds projectord's benchmarks (`make bench`). It has no
// code of its own: everything is in its _test.go files.
//
// Absolute times on shared machines are noise, so every benchmark measures
// projectord against a baseline that does the same work on the same data
// in the same run — plain pgx, or for BenchmarkStores the event stores' own
// readers (Emmett's consumer through Node, Message DB's
// get_category_messages) and projectord on the native table — alternating
// the sides over several rounds, and reports the median of the per-round
// ratios. The run ends with a markdown summary on stdout; docs/benchmarks.md
// explains the figures.
//
//	go test -run '^$' -bench . -benchtime 1x -timeout 60m ./internal/bench/
//
// Flags (after the package): -bench.rounds (quiet rounds wanted, default
// 5), -bench.quiet (the most CPU other processes may use during a round
// that counts, in cores, default 0.2), -bench.events (catch-up size, default
// 1,000,000), -bench.orders (SQL sink, default 50,000 orders ≈ 250,000
// events), -bench.live (duration of each live run, default 10s),
// -bench.prepare_rows (rows per table in BenchmarkPrepare1M, default
// 1,000,000), -bench.store-events (events per store in BenchmarkStores,
// default 100,000), -bench.summary FILE (also write the summary there).
//
// BenchmarkStores needs node and psql, and the stores' npm packages (`make
// node-deps`); without them it skips, unless CI is set.
//
// Without -bench nothing is started: `go test ./...` stays fast.
package bench
