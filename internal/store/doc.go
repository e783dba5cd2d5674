// Package store holds all of projectord's SQL: schema migrations, the
// gap-safe event reader, the epoch-fenced checkpoint store, dead letters,
// the SQL sink and the source-table preparation. pgx errors are translated
// here into the package's sentinel errors so callers never inspect SQLSTATEs.
package store
