// Package runner keeps projectors' read models current: one supervisor per
// projector competes for leadership, and the leader runs the catch-up/live
// loop. The runner speaks only the three seams of seams.go; the Postgres
// backend (pgbackend.go) and the in-memory backend (memory.go) implement them.
//
// A supervisor's states:
//
//	           TryAcquire ok, Claim ok
//	standby ─────────────────────────> leader ──┐ batch: read → apply+fenced
//	  ^  ^                               │  ^────┘  checkpoint in one tx
//	  │  └── lease lost / fenced / error ┘
//	  │                                  │ poison event, policy halt
//	  └─ turn (acquire tick or release   v
//	     NOTIFY)                       halted (until resume, reset or changed handlers)
//
// A pause (recorded in the checkpoint; advance() refuses every batch
// meanwhile) keeps the lease:
//
//	leader ── commit refused (PJ002), or nudged and paused ──> paused
//	paused ── resumed (NOTIFY or PauseRecheck) ──> claim again ──> leader
//	claim of a paused checkpoint ──> paused (a new leader waits too)
package runner
