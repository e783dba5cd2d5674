// Package storeddl holds other event stores' schemas exactly as their own
// migrations create them, so that tests and benchmarks of `source prepare`
// and of the presets run against the real thing, not a look-alike. Each
// file names the repository, path and commit it was copied from. Imported
// by tests and benchmarks only.
package storeddl

import _ "embed"

// Emmett is Emmett 0.42.0's schema: emt_messages and its siblings,
// LIST-partitioned by partition and then by is_archived, with Emmett's
// functions (emt_add_partition creates a partition its way) and the
// 'emt:default' partition. Run it in one simple-protocol Exec.
//
//go:embed emmett_0_42_0.sql
var Emmett string

// EventCore is eventcore-postgres' migrations 0001 to 0005, in order:
// eventcore_events (uuid event_id, no global position), its stream-version
// trigger and the triggers that raise on UPDATE and DELETE.
//
//go:embed eventcore_0001_0005.sql
var EventCore string
