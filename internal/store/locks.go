package store

import (
	"context"
	"errors"
	"fmt"
)

// ErrLockBudget means a replica would ask more of PostgreSQL's shared lock
// table than its share: holding that many advisory locks could leave the
// whole cluster "out of shared memory", failing every other client too.
var ErrLockBudget = errors.New("too many projectors for the PostgreSQL server's lock table")

// LockShare is the fraction of the cluster's lock table one projectord
// deployment may fill: the table is shared by every database and client
// of the cluster, so projectord leaves three quarters of it to the rest.
const LockShare = 4

// LockSettings are the server settings that size its shared lock table.
type LockSettings struct {
	MaxLocksPerTransaction  int
	MaxConnections          int
	MaxPreparedTransactions int
}

// Capacity is how many locks the shared lock table holds for the whole
// cluster: max_locks_per_transaction × (max_connections +
// max_prepared_transactions), as the PostgreSQL manual sizes it.
func (s LockSettings) Capacity() int {
	return s.MaxLocksPerTransaction * (s.MaxConnections + s.MaxPreparedTransactions)
}

// Budget is how many projectors one replica may run against this server:
// each led projector holds one advisory lock on the coordination session
// for as long as it leads, so a replica that leads them all holds one per
// projector. It is a LockShare-th of the capacity, less a transaction's
// worth (max_locks_per_transaction) for each of the replica's own
// connections (poolConns, plus the coordination session), which take
// locks while a batch runs.
func (s LockSettings) Budget(poolConns int) int {
	return max(0, s.Capacity()/LockShare-s.MaxLocksPerTransaction*(poolConns+1))
}

// Check returns ErrLockBudget, with the numbers and the setting to raise,
// when projectors exceed Budget(poolConns).
func (s LockSettings) Check(projectors, poolConns int) error {
	budget := s.Budget(poolConns)
	if projectors <= budget {
		return nil
	}
	return fmt.Errorf("%w: %d projectors need %d advisory locks, but this server allows one replica at most %d: "+
		"max_locks_per_transaction (%d) × (max_connections (%d) + max_prepared_transactions (%d)) = %d lock slots for the whole cluster, "+
		"of which projectord takes at most 1/%d, less %d × (database.max_conns %d + 1) for its own transactions. %s",
		ErrLockBudget, projectors, projectors, budget,
		s.MaxLocksPerTransaction, s.MaxConnections, s.MaxPreparedTransactions, s.Capacity(),
		LockShare, s.MaxLocksPerTransaction, poolConns, s.advice(projectors, poolConns))
}

// advice names the smallest max_locks_per_transaction that fits projectors.
func (s LockSettings) advice(projectors, poolConns int) string {
	conns := s.MaxConnections + s.MaxPreparedTransactions
	denom := conns - LockShare*(poolConns+1)
	if denom <= 0 {
		return fmt.Sprintf("Raise max_connections above %d, or lower database.max_conns, or configure fewer projectors", LockShare*(poolConns+1))
	}
	want := ceilDiv(projectors*LockShare, denom)
	for t := s; ; want++ {
		t.MaxLocksPerTransaction = want
		if t.Budget(poolConns) >= projectors {
			break
		}
	}
	return fmt.Sprintf("Raise max_locks_per_transaction to at least %d (it takes a server restart), or configure fewer projectors", want)
}

func ceilDiv(a, b int) int {
	if b <= 0 {
		return a
	}
	return (a + b - 1) / b
}

// ReadLockSettings reads the server's lock table settings.
func ReadLockSettings(ctx context.Context, q querier) (LockSettings, error) {
	rows, err := q.Query(ctx, `SELECT current_setting('max_locks_per_transaction')::int,
		current_setting('max_connections')::int, current_setting('max_prepared_transactions')::int`)
	if err != nil {
		return LockSettings{}, fmt.Errorf("error reading the server's lock settings: %w", err)
	}
	defer rows.Close()
	var s LockSettings
	if rows.Next() {
		err = rows.Scan(&s.MaxLocksPerTransaction, &s.MaxConnections, &s.MaxPreparedTransactions)
	}
	if err == nil {
		err = rows.Err()
	}
	if err != nil {
		return LockSettings{}, fmt.Errorf("error reading the server's lock settings: %w", err)
	}
	return s, nil
}
