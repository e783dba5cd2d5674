// Package bench holds projectord's benchmarks (`make bench`). It has no
// code of its own: everything is in its _test.go files.
//
// Absolute times on shared machines are noise, so every benchmark measures
// projectord against a baseline written in plain pgx that does the same
// work on the same data in the same run, alternating the two sides over
// several rounds, and reports the median of the per-round ratios. The run
// ends with a markdown summary on stdout; docs/benchmarks.md explains the
// figures.
//
//	go test -run '^$' -bench . -benchtime 1x -timeout 60m ./internal/bench/
//
// Flags (after the package): -bench.rounds (quiet rounds wanted, default
// 5), -bench.quiet (the most CPU other processes may use during a round
// that counts, in cores, default 0.2), -bench.events (catch-up size, default
// 1,000,000), -bench.orders (SQL sink, default 50,000 orders ≈ 250,000
// events), -bench.live (duration of each live run, default 10s),
// -bench.prepare_rows (rows per table in BenchmarkPrepare1M, default
// 1,000,000), -bench.summary FILE (also write the summary there).
//
// Without -bench nothing is started: `go test ./...` stays fast.
package bench
