package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ErrSuperseded means a version of a projector is older than its live
// version: it may not run, and advance() refuses its commits. An
// error matching it from a commit matches ErrFenced too, so a loop that
// knows nothing of versions steps down as when deposed.
var ErrSuperseded = errors.New("projector version superseded")

// ErrBehindLive means a promotion did not happen because the live version's
// checkpoint is ahead of the promoting version's: it is tried again at the
// next batch boundary, when the new version has caught up with it.
var ErrBehindLive = errors.New("the live version is ahead")

// supersededDetail is the DETAIL of projectord.advance's fence (PJ001) for
// a version older than the live one (migration 0008): the same code as any
// fence, so that a binary that predates versions steps down too.
const supersededDetail = "superseded"

// PromoteChannel carries "name version" when a version of name was
// promoted, so the replicas running an older one stop it at once (the
// fence in advance() stops it anyway, at its next commit).
const PromoteChannel = "projectord_promote"

// VersionKey is the checkpoint row, and lock-registry name, of version
// of the projector name: the name itself for version 1 (as before versions
// existed), "name@vN" otherwise, which no configured name can be.
func VersionKey(name string, version int) string {
	if version <= 1 {
		return name
	}
	return name + "@v" + strconv.Itoa(version)
}

// ParseVersionKey is VersionKey's inverse.
func ParseVersionKey(key string) (name string, version int) {
	if i := strings.LastIndex(key, "@v"); i > 0 {
		if v, err := strconv.Atoi(key[i+2:]); err == nil && v >= 2 {
			return key[:i], v
		}
	}
	return key, 1
}

// Version is what a projector's version needs besides its sink: its
// identity and the SQL run when it starts, goes live and replaces another.
type Version struct {
	Name    string
	Version int
	// Setup runs once, by the version's first leader, before its first batch.
	Setup string
	// Promote runs in the transaction that makes this version live.
	Promote string
	// Retire runs once after promotion, in the transaction that records the
	// older versions retired.
	Retire string
}

// Key is the version's checkpoint row.
func (v Version) Key() string { return VersionKey(v.Name, v.Version) }

// VersionRecord is one row of projectord.projector_versions, with the live
// version of its projector.
type VersionRecord struct {
	Name       string
	Version    int
	Checkpoint string
	Live       int
	CreatedAt  time.Time
	SetupAt    *time.Time
	PromotedAt *time.Time
	// SupersededAt is when a newer version was promoted.
	SupersededAt *time.Time
	RetiredAt    *time.Time
}

// IsLive reports whether the record's version is the live one.
func (r VersionRecord) IsLive() bool { return r.Version == r.Live }

// State names the record's state: live, building (newer than the live
// one, catching up), superseded, or retired.
func (r VersionRecord) State() string {
	switch {
	case r.RetiredAt != nil:
		return "retired"
	case r.Version < r.Live:
		return "superseded"
	case r.Version == r.Live:
		return "live"
	}
	return "building"
}

const versionCols = `v.name, v.version, v.checkpoint, coalesce(l.version, 0), v.created_at, v.setup_at, v.promoted_at, v.superseded_at, v.retired_at`

func scanVersion(row pgx.Row) (VersionRecord, error) {
	var r VersionRecord
	err := row.Scan(&r.Name, &r.Version, &r.Checkpoint, &r.Live, &r.CreatedAt, &r.SetupAt, &r.PromotedAt, &r.SupersededAt, &r.RetiredAt)
	return r, err
}

// LiveVersion returns the live version of the projector name, 0 when none
// was ever claimed.
func (t *Target) LiveVersion(ctx context.Context, name string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	var v int
	err := t.pool.QueryRow(ctx, `SELECT version FROM projectord.live_versions WHERE name = $1`, name).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("error reading the live version of %s: %w", name, err)
	}
	return v, nil
}

// LiveVersions returns the live version of every projector in the target
// that has one, by name: one query however many projectors ask.
func (t *Target) LiveVersions(ctx context.Context) (map[string]int, error) {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	rows, err := t.pool.Query(ctx, `SELECT name, version FROM projectord.live_versions`)
	if err != nil {
		return nil, fmt.Errorf("error reading the live versions: %w", err)
	}
	live := map[string]int{}
	var name string
	var v int
	if _, err := pgx.ForEachRow(rows, []any{&name, &v}, func() error { live[name] = v; return nil }); err != nil {
		return nil, fmt.Errorf("error reading the live versions: %w", err)
	}
	return live, nil
}

// EnsureVersion registers v, and makes it live if its projector has no live
// version yet (a first-ever version is live from the start; its promote
// runs once it is first caught up). It returns v's record.
func (t *Target) EnsureVersion(ctx context.Context, v Version) (VersionRecord, error) {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	var r VersionRecord
	err := pgx.BeginFunc(ctx, t.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO projectord.projector_versions (name, version, checkpoint)
			VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`, v.Name, v.Version, v.Key()); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO projectord.live_versions (name, version)
			VALUES ($1, $2) ON CONFLICT DO NOTHING`, v.Name, v.Version); err != nil {
			return err
		}
		var err error
		r, err = scanVersion(tx.QueryRow(ctx, `SELECT `+versionCols+` FROM projectord.projector_versions v
			LEFT JOIN projectord.live_versions l ON l.name = v.name WHERE v.name = $1 AND v.version = $2`, v.Name, v.Version))
		return err
	})
	if err != nil {
		return VersionRecord{}, fmt.Errorf("error registering version %d of %s: %w", v.Version, v.Name, err)
	}
	return r, nil
}

// Versions lists every version of every projector in the target, by name
// and version.
func (t *Target) Versions(ctx context.Context) ([]VersionRecord, error) {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	rows, err := t.pool.Query(ctx, `SELECT `+versionCols+` FROM projectord.projector_versions v
		LEFT JOIN projectord.live_versions l ON l.name = v.name ORDER BY v.name, v.version`)
	if err != nil {
		return nil, fmt.Errorf("error listing projector versions: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (VersionRecord, error) { return scanVersion(r) })
}

// versionLockWait bounds every lock wait inside versionTx: a view readers
// are querying, a table a batch writes. While CREATE OR REPLACE VIEW waits
// for its lock, new readers of the view queue behind it, and batches of the
// older version wait for the live row: neither may wait long, so the caller
// gives up early and tries again later.
const versionLockWait = time.Second

func (t *Target) versionLockWait() time.Duration {
	return min(max(t.timeout/4, 100*time.Millisecond), versionLockWait)
}

// versionTx runs f in a transaction fenced by the epoch of v's leader: the
// checkpoint row is share-locked, so no new leader's claim (which bumps the
// epoch) can commit before f's transaction ends.
func (t *Target) versionTx(ctx context.Context, v Version, epoch int64, f func(tx pgx.Tx) error) error {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	return pgx.BeginFunc(ctx, t.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, fmt.Sprintf("SET LOCAL lock_timeout = %d", t.versionLockWait().Milliseconds())); err != nil {
			return err
		}
		var ok bool
		err := tx.QueryRow(ctx, `SELECT true FROM projectord.checkpoints WHERE projector = $1 AND epoch = $2 FOR SHARE`,
			v.Key(), epoch).Scan(&ok)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrFenced
		}
		if err != nil {
			return err
		}
		return f(tx)
	})
}

// Setup runs v's setup SQL, under the leader's epoch, unless a leader of v
// ran it before; the run and its record commit together, so it runs once
// (a failed setup records nothing and is tried again by the next claim).
// It reports whether it ran the SQL now.
func (t *Target) Setup(ctx context.Context, v Version, epoch int64) (ran bool, err error) {
	err = t.versionTx(ctx, v, epoch, func(tx pgx.Tx) error {
		var done bool
		if err := tx.QueryRow(ctx, `SELECT setup_at IS NOT NULL FROM projectord.projector_versions
			WHERE name = $1 AND version = $2 FOR UPDATE`, v.Name, v.Version).Scan(&done); err != nil {
			return err
		}
		if done {
			return nil
		}
		if v.Setup != "" {
			if _, err := tx.Exec(ctx, v.Setup); err != nil {
				return fmt.Errorf("setup SQL failed: %w", err)
			}
		}
		ran = true
		_, err := tx.Exec(ctx, `UPDATE projectord.projector_versions SET setup_at = now() WHERE name = $1 AND version = $2`, v.Name, v.Version)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("error setting up version %d of %s: %w", v.Version, v.Name, err)
	}
	return ran, nil
}

// promoteLockWait bounds the promote SQL's wait for the locks it needs (a
// view's AccessExclusiveLock). While CREATE OR REPLACE VIEW waits, every
// new reader of the view queues behind it, so an attempt that cannot have
// the view at once gives up within a fraction of a quick read and is tried
// again later (PGBackend backs off), rather than stalling readers for a
// promotion that does not happen.
const promoteLockWait = 75 * time.Millisecond

// Promote makes v live, running its promote SQL in the same transaction,
// fenced by the epoch of v's leader, which calls it when v is caught up (a
// short batch at the head). From its commit on, advance() refuses every
// older version. It reports whether it promoted v now; false with no error
// when v was promoted before. ErrSuperseded: a newer version is live.
// ErrBehindLive: the live version's checkpoint is past v's (it committed
// after v's last read), so readers would go back in time; nothing changed.
func (t *Target) Promote(ctx context.Context, v Version, epoch int64) (promoted bool, err error) {
	err = t.versionTx(ctx, v, epoch, func(tx pgx.Tx) error {
		// Nothing is locked yet that the live version's commits need: a
		// first look tells whether there is anything to do at all.
		var live int
		var done bool
		if err := tx.QueryRow(ctx, `SELECT l.version, v.promoted_at IS NOT NULL
			FROM projectord.live_versions l JOIN projectord.projector_versions v ON v.name = l.name
			WHERE l.name = $1 AND v.version = $2`, v.Name, v.Version).Scan(&live, &done); err != nil {
			return err
		}
		switch {
		case live > v.Version:
			return fmt.Errorf("%w: version %d of %s is live", ErrSuperseded, live, v.Name)
		case done:
			return nil
		}
		// A live version already ahead is seen without a lock, so an attempt
		// bound to fail does not take the view from its readers first; the
		// check under the live row's lock below is the one that holds.
		if live < v.Version {
			if ahead, err := liveAhead(ctx, tx, v, live); err != nil || ahead {
				return behindOr(err, v, live)
			}
		}
		// The promote SQL first, under a short lock_timeout: the view's lock
		// is the one readers contend for, and while waiting for it this
		// transaction holds nothing that the live version's commits (or the
		// group they commit in) need. If the check below finds v behind,
		// the rollback undoes it.
		if v.Promote != "" {
			if _, err := tx.Exec(ctx, fmt.Sprintf("SET LOCAL lock_timeout = %d", promoteLockWait.Milliseconds())); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, v.Promote); err != nil {
				return fmt.Errorf("promote SQL failed: %w", err)
			}
			if _, err := tx.Exec(ctx, fmt.Sprintf("SET LOCAL lock_timeout = %d", t.versionLockWait().Milliseconds())); err != nil {
				return err
			}
		}
		// FOR UPDATE from here to the commit: a batch of an older version
		// committing meanwhile either holds its share of the row first
		// (we wait, and it lands before us) or waits for us and is refused.
		if err := tx.QueryRow(ctx, `SELECT version FROM projectord.live_versions WHERE name = $1 FOR UPDATE`, v.Name).Scan(&live); err != nil {
			return err
		}
		if live > v.Version {
			return fmt.Errorf("%w: version %d of %s is live", ErrSuperseded, live, v.Name)
		}
		if live < v.Version {
			// The live version cannot move while we hold its row: if it is
			// ahead of us, switching now would take readers back in time.
			if ahead, err := liveAhead(ctx, tx, v, live); err != nil || ahead {
				return behindOr(err, v, live)
			}
		}
		if _, err := tx.Exec(ctx, `UPDATE projectord.live_versions SET version = $2, updated_at = now() WHERE name = $1`, v.Name, v.Version); err != nil {
			return err
		}
		// now() is the transaction's start, the same in both columns: the
		// version v replaced is the one whose superseded_at is v's
		// promoted_at, which is how Retire knows whom v replaced.
		if _, err := tx.Exec(ctx, `UPDATE projectord.projector_versions
			SET promoted_at = CASE WHEN version = $2 THEN now() ELSE promoted_at END,
				superseded_at = CASE WHEN version < $2 THEN coalesce(superseded_at, now()) ELSE superseded_at END
			WHERE name = $1 AND version <= $2`, v.Name, v.Version); err != nil {
			return err
		}
		promoted = true
		_, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, PromoteChannel, v.Name+" "+strconv.Itoa(v.Version))
		return err
	})
	if err != nil {
		return false, fmt.Errorf("error promoting version %d of %s: %w", v.Version, v.Name, err)
	}
	return promoted, nil
}

// liveAhead reports whether the checkpoint of version live of v's projector
// is past v's.
func liveAhead(ctx context.Context, tx pgx.Tx, v Version, live int) (bool, error) {
	var ahead bool
	err := tx.QueryRow(ctx, `SELECT (l.last_xid, l.last_position) > (m.last_xid, m.last_position)
		FROM projectord.projector_versions v
		JOIN projectord.checkpoints l ON l.projector = v.checkpoint
		JOIN projectord.checkpoints m ON m.projector = $3
		WHERE v.name = $1 AND v.version = $2`, v.Name, live, v.Key()).Scan(&ahead)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	return ahead, err
}

func behindOr(err error, v Version, live int) error {
	if err != nil {
		return err
	}
	return fmt.Errorf("%w: version %d of %s is ahead of version %d", ErrBehindLive, live, v.Name, v.Version)
}

// Retire runs v's retire SQL once for the version v replaced when it was
// promoted (the one whose superseded_at is v's promoted_at; with versions
// that never went live, several), and records only those retired, in the
// same transaction, under the epoch of v's leader: a crash after the
// commit leaves them recorded, so the SQL never runs twice, and a failed
// retire records nothing and is tried again later. A version that was
// itself replaced since still retires the one it replaced: its retire SQL
// is the one written for it, and no newer version's retire stands in for
// it. It returns the versions it retired; a v never promoted retires
// nothing.
func (t *Target) Retire(ctx context.Context, v Version, epoch int64) (retired []int, err error) {
	err = t.versionTx(ctx, v, epoch, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT o.version FROM projectord.projector_versions o
			JOIN projectord.projector_versions v ON v.name = o.name AND v.version = $2
			WHERE o.name = $1 AND o.version < $2 AND o.retired_at IS NULL
				AND v.promoted_at IS NOT NULL AND o.superseded_at = v.promoted_at
			ORDER BY o.version FOR UPDATE OF o`, v.Name, v.Version)
		if err != nil {
			return err
		}
		old, err := pgx.CollectRows(rows, pgx.RowTo[int])
		if err != nil || len(old) == 0 {
			return err
		}
		if v.Retire != "" {
			if _, err := tx.Exec(ctx, v.Retire); err != nil {
				return fmt.Errorf("retire SQL failed: %w", err)
			}
		}
		if _, err := tx.Exec(ctx, `UPDATE projectord.projector_versions SET retired_at = now()
			WHERE name = $1 AND version = ANY($2)`, v.Name, old); err != nil {
			return err
		}
		retired = old
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("error retiring the version(s) of %s that version %d replaced: %w", v.Name, v.Version, err)
	}
	return retired, nil
}

// supersededError is advance()'s refusal of a superseded version.
func supersededError(pgErr *pgconn.PgError) error {
	return fmt.Errorf("%w: %w: %s", ErrFenced, ErrSuperseded, pgErr.Message)
}

// CheckVersionSQL checks a setup, promote or retire statement with the
// handler compiler's rules: one statement, no transaction control (it runs
// inside projectord's fenced transaction, which a COMMIT would end early),
// and no event parameters, since no event is being applied.
func CheckVersionSQL(src string) error {
	st, err := compileHandler(src)
	if err != nil {
		return err
	}
	if len(st.fields) > 0 {
		return fmt.Errorf("event parameters (@%s) mean nothing here: no event is being applied", st.fields[0].name)
	}
	return nil
}
