package runner

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/projectord/projectord/internal/store"
)

// waitResumed holds a paused leadership until an operator resumes the
// projector: it reads the pause record when nudged (the resume's NOTIFY
// reaches Projector.Control) and, in case a nudge was missed, every
// PauseRecheck, never in a tighter loop. It returns nil once resumed or on
// a graceful stop, and the lease's cause when leadership ends.
func waitResumed(ctx, leaseCtx context.Context, p Projector, b Backend) error {
	op, ok := b.(Operator)
	if !ok {
		// Nothing records a pause for this backend: the claim decides.
		return nil
	}
	log := p.Logger.With(zap.String("projector", p.Name))
	t := time.NewTicker(p.PauseRecheck)
	defer t.Stop()
	for {
		select {
		case <-p.Control:
		case <-t.C:
		case <-ctx.Done():
			return nil
		case <-leaseCtx.Done():
			return context.Cause(leaseCtx)
		}
		paused, err := op.Paused(leaseCtx, p.Name)
		switch {
		case err != nil:
			// The fence refuses commits while the pause holds, so going
			// on would be safe; waiting is merely what was asked.
			log.Warn("error reading whether the projector is still paused", zap.Error(err))
		case !paused:
			return nil
		}
	}
}

// operate carries out, at a batch boundary, what an operator asked since
// the last one (Projector.Control): a pause ends the run with ErrPaused;
// requested dead-letter retries are applied in the leader's fenced
// transaction. A retry whose event fails again leaves its dead letter (with
// the new error) and does not halt the projector: that event was dead-
// lettered already, and the live events go on. A retry the database could
// not carry out leaves the requests for the next nudge or leader.
func (l *loop) operate(ctx context.Context) error {
	if !l.nudged {
		select {
		case <-l.p.Control:
		default:
			return nil
		}
	}
	l.nudged = false
	op, ok := l.b.(Operator)
	if !ok {
		return nil
	}
	paused, err := op.Paused(ctx, l.p.Name)
	if err != nil {
		l.log.Warn("error reading operator requests", zap.Error(err))
		return nil
	}
	if paused {
		return fmt.Errorf("%w: by an operator", ErrPaused)
	}
	outs, err := op.RetryDeadLetters(ctx, l.p.Name, l.epoch)
	switch {
	case errors.Is(err, store.ErrFenced):
		l.p.Observer.Error(l.p.Name, "fenced", err)
		return fmt.Errorf("%w: %v", ErrDeposed, err)
	case errors.Is(err, store.ErrPaused):
		return fmt.Errorf("%w: %v", ErrPaused, err)
	case err != nil:
		if cause := context.Cause(ctx); cause != nil {
			return cause
		}
		l.log.Warn("error retrying dead letters; the requests stay", zap.Error(err))
		return nil
	}
	for _, o := range outs {
		if o.Err == nil {
			l.log.Info("dead letter retried and applied", zap.Stringer("event", o.Cursor))
		} else {
			l.log.Warn("dead letter retried and failed again; it stays", zap.Stringer("event", o.Cursor), zap.Error(o.Err))
		}
	}
	return nil
}
