// Package coord elects one leader per projector across replicas with
// PostgreSQL advisory locks held on a single, unpooled coordination session
// per replica (docs/architecture.md, rule 3).
//
// Session life cycle:
//
//	         connect ok
//	[down] ───────────────> [up] ──┐ heartbeat ok / notification / request
//	  ^  \                   │ ^───┘
//	  │   backoff+jitter     │ conn error, heartbeat failure,
//	  └──────────────────────┘ heartbeat older than lease_timeout/2
//	       every lease on the session is lost at once
//
// Every session that was up and ends for any cause but Stop is reported
// once to Config.OnSessionLost, with one of LossReasons: connection,
// heartbeat, query, stalled or pooler.
//
// While up, the session serves lock requests (acquire attempts arriving
// together are coalesced into one query, so load does not grow with the
// number of projectors), verifies every held lock in pg_locks on each
// heartbeat, refreshes this node's row in projectord.nodes, and listens for
// release notifications so standbys retry at once instead of at their next
// tick. Locks are never re-checked with pg_try_advisory_lock: they stack.
// Soon after it comes up, and then at most once a minute on a heartbeat,
// it deletes the rows of other nodes silent for Config.NodeExpiry whose
// coordination backend is gone.
package coord
