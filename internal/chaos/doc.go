// Package chaos holds failure tests: three projectord processes on loopback
// plus a writer, faults injected for real (kill -9, SIGSTOP, a TCP proxy
// that stops forwarding, a PostgreSQL restart, a rolling SIGTERM restart),
// and after each scenario the read model checked against an oracle computed
// from the events table: nothing missing, nothing applied twice, and never
// two replicas reporting leadership of one projector in a metrics sample.
// TestChaosBalance runs 30 projectors under 8 writers committing out of
// order and checks that the replicas share them (10 ± 1 each, 15 ± 1 after
// a kill, freeze or partition), counting the handovers of each membership
// change. TestChaosSharedReads runs 50 projectors whose filters mix event
// types and stream prefixes, five of them with a slow handler so that they
// lag behind the tail, under 16 writers committing out of order with
// rollbacks, kills -9 the replica leading the most, and checks each
// projector's read model against the events its own filter selects; it
// holds however the replicas read (each projector alone, or one read
// shared by those at the tail).
//
// BenchmarkScale and BenchmarkLiveScale run real replica processes too:
// idle cost and catch-up at 500 projectors on 3 replicas, and issue 16's
// live load (1,000 events/s, 100 and 500 projectors on one replica) with
// and without shared reads and group commit (docs/benchmarks.md).
//
// `make test` runs one round of each scenario; `make chaos` (-chaos.full)
// runs several and prints failover percentiles.
package chaos
