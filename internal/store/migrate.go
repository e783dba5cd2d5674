package store

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// migrationLockKey serialises concurrent `migrate` runs. It is a
// transaction-level advisory lock in its own namespace, so it can never be
// confused with a projector's session lock.
const migrationLockKey = int64(0x70726f6a_00000000) // "proj" << 32

type migration struct {
	version int
	name    string
	sql     string
}

func loadMigrations() ([]migration, error) {
	entries, err := fs.ReadDir(migrationFS, "migrations")
	if err != nil {
		return nil, err
	}
	var out []migration
	for _, e := range entries {
		num, _, ok := strings.Cut(e.Name(), "_")
		if !ok {
			return nil, fmt.Errorf("migration %q: name must be NNNN_name.sql", e.Name())
		}
		v, err := strconv.Atoi(num)
		if err != nil {
			return nil, fmt.Errorf("migration %q: %w", e.Name(), err)
		}
		body, err := migrationFS.ReadFile("migrations/" + e.Name())
		if err != nil {
			return nil, err
		}
		out = append(out, migration{version: v, name: e.Name(), sql: string(body)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	return out, nil
}

// SchemaVersion is the newest migration this binary knows.
func SchemaVersion() int {
	ms, err := loadMigrations()
	if err != nil || len(ms) == 0 {
		return 0
	}
	return ms[len(ms)-1].version
}

// MigrateResult says what Migrate did.
type MigrateResult struct {
	From, To int
	Applied  []string
}

// Migrate brings schema projectord up to this binary's version. It is
// idempotent and safe to run from several processes at once: everything runs
// in one transaction behind an advisory transaction lock. A database whose
// schema is newer than the binary yields ErrSchemaTooNew; a schema owned by
// a role projectord does not run as yields ErrUntrustedSchema.
func Migrate(ctx context.Context, pool *pgxpool.Pool, binaryVersion string) (MigrateResult, error) {
	ms, err := loadMigrations()
	if err != nil {
		return MigrateResult{}, fmt.Errorf("error loading migrations: %w", err)
	}
	var res MigrateResult
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrationLockKey); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS projectord`); err != nil {
			return err
		}
		// After the CREATE, so a schema someone else created meanwhile is
		// checked too; before anything reads or runs what it holds.
		if err := CheckTrust(ctx, tx); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS projectord.schema_migrations (
			version    integer PRIMARY KEY,
			name       text NOT NULL,
			applied_by text NOT NULL,
			applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM projectord.schema_migrations`).Scan(&res.From); err != nil {
			return err
		}
		res.To = res.From
		latest := 0
		if len(ms) > 0 {
			latest = ms[len(ms)-1].version
		}
		if res.From > latest {
			return fmt.Errorf("%w: database is at version %d, this binary knows up to %d; upgrade projectord", ErrSchemaTooNew, res.From, latest)
		}
		for _, m := range ms {
			if m.version <= res.From {
				continue
			}
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return fmt.Errorf("migration %s: %w", m.name, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO projectord.schema_migrations (version, name, applied_by) VALUES ($1, $2, $3)`,
				m.version, m.name, binaryVersion); err != nil {
				return err
			}
			res.Applied = append(res.Applied, m.name)
			res.To = m.version
		}
		return nil
	})
	if err != nil {
		return MigrateResult{}, fmt.Errorf("error migrating schema projectord: %w", err)
	}
	return res, nil
}

// HasCheckpoints reports whether the database has projectord's checkpoints
// table at all: a database nobody migrated has no projector that read
// anything yet.
func HasCheckpoints(ctx context.Context, pool *pgxpool.Pool) (bool, error) {
	var exists bool
	err := pool.QueryRow(ctx, `SELECT to_regclass('projectord.checkpoints') IS NOT NULL`).Scan(&exists)
	return exists, err
}

// CheckSchema verifies, without changing anything, that the database's
// schema is exactly what this binary expects (for `run --no-migrate`), and
// that it is trusted (CheckTrust).
func CheckSchema(ctx context.Context, pool *pgxpool.Pool) error {
	if err := CheckTrust(ctx, pool); err != nil {
		return err
	}
	var v int
	err := pool.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM projectord.schema_migrations`).Scan(&v)
	if err != nil {
		return fmt.Errorf("error reading schema version (run `projectord migrate`): %w", err)
	}
	want := SchemaVersion()
	switch {
	case v > want:
		return fmt.Errorf("%w: database is at version %d, this binary knows up to %d; upgrade projectord", ErrSchemaTooNew, v, want)
	case v < want:
		return fmt.Errorf("database schema is at version %d, this binary needs %d: run `projectord migrate`", v, want)
	}
	return nil
}
