// Package pgcluster runs a throwaway PostgreSQL server from the locally
// installed server binaries. Tests use it through package pgtest, and
// `projectord dev` uses it directly, so it must not depend on package testing.
//
// A cluster lives in its own temporary directory, runs as an unprivileged
// user even when we are root (PostgreSQL refuses to run as root), listens on
// 127.0.0.1 only, and dies with the process that started it:
//
//	Start(ctx, opts)
//	       │  find binaries, sweep stale dirs,
//	       │  mkdir /tmp/projectord-pg-<pid>-*, initdb
//	       ▼
//	 ┌──────────┐   Stop(ctx)    ┌─────────┐
//	 │ running  │ ─────────────▶ │ stopped │
//	 │          │ ◀───────────── │         │
//	 └──────────┘ c.Start(ctx)   └─────────┘
//	       │     (same data dir,      │
//	       │      same port)          │
//	       └──────────┬───────────────┘
//	                  │ Close()
//	                  ▼
//	             ┌────────┐
//	             │ closed │  server stopped, temp dir removed
//	             └────────┘
//
// Leaks are prevented at two levels. The postmaster is started with a parent
// death signal, so if our process is killed (a test binary hitting its
// timeout, kill -9) the kernel sends it SIGQUIT and it shuts down at once. Its
// directory cannot be cleaned up by a dead process, so every Start and Close
// removes the directories of owners that no longer exist.
package pgcluster
