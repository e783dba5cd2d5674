package main

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/projectord/projectord/internal/config"
	"github.com/projectord/projectord/internal/store"
)

// projectorOp is an operator command on one configured projector (reset,
// resume): its configuration, and the databases it acts in.
type projectorOp struct {
	cfg *config.Config
	p   *config.Projector
	// target holds its read model and checkpoint; coord is where the
	// replicas' coordination sessions listen for notifications.
	target, coord string
}

// loadProjector loads the configuration and finds the projector named; an
// unknown name is a usage error.
func loadProjector(cmd *cobra.Command, g *globalFlags, name string) (*projectorOp, error) {
	cfg, err := loadConfig(cmd, g)
	if err != nil {
		return nil, err
	}
	p, ok := cfg.Projector(name)
	if !ok {
		return nil, &usageError{msg: fmt.Sprintf("no projector named %q in the configuration", name)}
	}
	// The configured version's checkpoint, as the daemon names it
	// (daemon.Keyed): an operator command acts on that version.
	kp := *p
	kp.Name = store.VersionKey(p.Name, p.EffectiveVersion())
	op := &projectorOp{cfg: cfg, p: &kp, target: p.Sink.TargetURL(), coord: cfg.Coordination.URL}
	if op.target == "" {
		op.target = cfg.Database.URL
	}
	if op.coord == "" {
		op.coord = cfg.Database.URL
	}
	return op, nil
}

// withTarget runs f on the projector's target database, once it is known
// that no other role planted schema projectord there (store.CheckTrust).
func (op *projectorOp) withTarget(ctx context.Context, f func(*store.Target) error) error {
	return withPool(ctx, op.cfg, op.target, func(pool *pgxpool.Pool) error {
		if err := store.CheckTrust(ctx, pool); err != nil {
			return err
		}
		return f(store.NewTarget(pool, op.cfg.Database.QueryTimeout))
	})
}

// notify tells the running replicas about the projector on channel, where
// their coordination sessions listen.
func (op *projectorOp) notify(ctx context.Context, channel string) error {
	return withPool(ctx, op.cfg, op.coord, func(pool *pgxpool.Pool) error {
		return store.Notify(ctx, pool, channel, op.p.Name)
	})
}
