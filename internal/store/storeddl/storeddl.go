// Package storeddl holds other event stores' schemas exactly as their own
// migrations create them, so that tests and benchmarks of `source prepare`
// and of the presets run against the real thing, not a look-alike. Each
// file names the repository, path and commit it was copied from. Imported
// by tests and benchmarks only.
package storeddl

import (
	"embed"
	"io/fs"
	"strings"
)

// Emmett is Emmett 0.42.0's schema: emt_messages and its siblings,
// LIST-partitioned by partition and then by is_archived, with Emmett's
// functions (emt_add_partition creates a partition its way) and the
// 'emt:default' partition. Run it in one simple-protocol Exec.
//
//go:embed emmett_0_42_0.sql
var Emmett string

//go:embed eventcore/*.sql eventuous/*.sql
var files embed.FS

// scripts returns the .sql files of dir in name order, the order both
// stores run them in.
func scripts(dir string) []string {
	names, err := fs.Glob(files, dir+"/*.sql") // sorted
	if err != nil {
		panic(err) // a constant, valid pattern
	}
	out := make([]string, len(names))
	for i, n := range names {
		b, err := files.ReadFile(n)
		if err != nil {
			panic(err) // embedded: cannot fail
		}
		out[i] = string(b)
	}
	return out
}

// EventCoreMigrations is eventcore-postgres' migrations 0001 to 0007, in
// order; sqlx runs each in a transaction of its own.
var EventCoreMigrations = scripts("eventcore")

// EventCore is migrations 0001 to 0005 as one script: eventcore_events
// (uuid event_id, no global position), its stream-version trigger and the
// triggers that raise on UPDATE and DELETE. Run it in one simple-protocol
// Exec.
var EventCore = strings.Join(EventCoreMigrations[:5], "\n")

// Eventuous is Eventuous' PostgreSQL scripts 1 to 8, in order, with its
// __schema__ placeholder replaced by schema, as Schema.CreateSchema does
// (it runs them all in one transaction).
func Eventuous(schema string) []string {
	out := scripts("eventuous")
	for i := range out {
		out[i] = strings.ReplaceAll(out[i], "__schema__", schema)
	}
	return out
}
