package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// orDefault is the ordering a reader of o uses: anything but position is xid8.
func (o Ordering) orDefault() Ordering {
	if o == OrderPosition {
		return OrderPosition
	}
	return OrderXID8
}

// Ordering returns the ordering r reads in.
func (r *Reader) Ordering() Ordering { return r.src.Ordering.orDefault() }

// Convert makes a just-claimed checkpoint resumable by r. A checkpoint at the
// start, or written under r's ordering, is returned unchanged. Otherwise
// (docs/architecture.md: a cursor is converted or refused, never
// reinterpreted):
//
//   - position → xid8: position P means "every event at or below P is done,
//     whatever its xid", which no single (xid, position) pair says, since
//     events at or below P can have larger xids than events above it. The
//     checkpoint becomes the start of the xid8 log with position floor P.
//   - xid8 → position: the cursor and its floor cover a set of events; that
//     set becomes position P only if it is exactly the events up to P on the
//     source. Otherwise Convert refuses with ErrOrderingChanged, changing
//     nothing.
//
// The move is conditioned on the claimed epoch and cursor, so a claim by
// another replica in between wins and this one gets ErrFenced. r queries the
// source through its own pool: the checkpoint may live in another database.
func (t *Target) Convert(ctx context.Context, cp Checkpoint, r *Reader) (Checkpoint, error) {
	want := r.Ordering()
	if cp.AtStart() || cp.Ordering == want {
		return cp, nil
	}
	var to Cursor
	var floor int64
	switch want {
	case OrderXID8:
		floor = max(cp.Cursor.Position, cp.PositionFloor)
	case OrderPosition:
		p, err := r.exactPosition(ctx, cp)
		if err != nil {
			return cp, err
		}
		to = Cursor{Position: p}
	}
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	var c Checkpoint
	err := scanCheckpoint(t.pool.QueryRow(ctx, `UPDATE projectord.checkpoints
		SET ordering = $6, last_xid = $7, last_position = $8, position_floor = $9, updated_at = now()
		WHERE projector = $1 AND epoch = $2 AND ordering = $3 AND last_xid = $4 AND last_position = $5 AND position_floor = $10
		RETURNING `+checkpointCols,
		cp.Projector, cp.Epoch, string(cp.Ordering), cp.Cursor.XID, cp.Cursor.Position,
		string(want), to.XID, to.Position, floor, cp.PositionFloor), &c)
	if errors.Is(err, pgx.ErrNoRows) {
		return cp, fmt.Errorf("%w: projector %s was claimed again while its checkpoint was converted from %s to %s ordering",
			ErrFenced, cp.Projector, cp.Ordering, want)
	}
	if err != nil {
		return cp, fmt.Errorf("error converting checkpoint of %s from %s to %s ordering: %w", cp.Projector, cp.Ordering, want, err)
	}
	return c, nil
}

// exactPosition returns the position P such that the events cp covers
// (after an xid8 read: those at or below its cursor in (xid, position)
// order, and those at or below its position floor) are exactly the
// source's events at or below P; ErrOrderingChanged when there is none.
//
// It looks for the first event not covered, by position. Every event before
// it is covered, so P is the newest of those; the conversion is exact unless
// some covered event comes after it. Both scans stay near the cursor for a
// projector that is caught up. Events of transactions still running are
// invisible to this check, exactly as to a position read: that is the risk
// source.ordering: position accepts.
func (r *Reader) exactPosition(ctx context.Context, cp Checkpoint) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	t, xid, pos := r.src.readFrom(), quoteCol(r.src.Columns.TransactionID), quoteCol(r.src.Columns.Position)
	q := fmt.Sprintf(`SELECT n.first,
			CASE WHEN n.first IS NULL THEN (SELECT max(%[2]s) FROM %[1]s)
				ELSE (SELECT max(%[2]s) FROM %[1]s WHERE %[2]s < n.first) END,
			(SELECT min(%[2]s) FROM %[1]s WHERE %[2]s > n.first AND (%[3]s, %[2]s) <= ($1::xid8, $2::bigint))
		FROM (SELECT min(%[2]s) AS first FROM %[1]s
			WHERE (%[3]s, %[2]s) > ($1::xid8, $2::bigint) AND %[2]s > $3::bigint) n`, t, pos, xid)
	var first, last, coveredAfter *int64
	err := r.pool.QueryRow(ctx, q, cp.Cursor.XID, cp.Cursor.Position, cp.PositionFloor).Scan(&first, &last, &coveredAfter)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == "42703" || pgErr.Code == "42883") { // undefined column, or not xid8
		return 0, fmt.Errorf("%w: projector %s has an xid8 checkpoint (cursor %s), and source.ordering is position, but %s has no xid8 column %q to convert it with: %s; reset the projector (projectord reset %s --yes) or restore the column and keep source.ordering: xid8",
			ErrOrderingChanged, cp.Projector, cp.Cursor, r.src.QualifiedName(), r.src.Columns.TransactionID, pgErr.Message, cp.Projector)
	}
	if err != nil {
		return 0, fmt.Errorf("error checking the checkpoint of %s against the source: %w", cp.Projector, err)
	}
	if coveredAfter != nil {
		return 0, fmt.Errorf("%w: projector %s has an xid8 checkpoint (cursor %s, position floor %d), and source.ordering is now position, but the events it has applied are not the positions up to some P: position %d is not applied yet while position %d is (they committed out of position order), so any position cursor would replay or skip events; reset the projector (projectord reset %s --yes) or keep source.ordering: xid8",
			ErrOrderingChanged, cp.Projector, cp.Cursor, cp.PositionFloor, *first, *coveredAfter, cp.Projector)
	}
	p := cp.PositionFloor
	if last != nil {
		p = max(p, *last)
	}
	return p, nil
}
