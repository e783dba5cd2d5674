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
	// The re-check must end with a stop too: a paused leader has nothing
	// in flight, so a stop need not wait for a target that hangs.
	readCtx, stop := context.WithCancel(leaseCtx)
	defer stop()
	defer context.AfterFunc(ctx, stop)()
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
		paused, err := op.Paused(readCtx, p.Name)
		switch {
		case ctx.Err() != nil:
			return nil
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
// the last one: when nudged (Projector.Control) or once PauseRecheck has
// passed since the last check, in case a NOTIFY was missed (check).
func (l *loop) operate(ctx context.Context) error {
	if !l.nudged && time.Since(l.checked) < l.p.PauseRecheck {
		select {
		case <-l.p.Control:
		default:
			return nil
		}
	}
	fresh := l.nudged || time.Since(l.checked) < l.p.PauseRecheck
	l.nudged = false
	return l.check(ctx, fresh)
}

// check reads the operator's requests: a pause ends the run with
// ErrPaused; requested dead-letter retries are applied in the leader's
// fenced transactions. A retry whose event fails again leaves its dead
// letter (with the new error) and does not halt the projector: that event
// was dead-lettered already, and the live events go on. A retry the
// database could not carry out leaves the requests for the next check or
// leader.
//
// fresh reads now (after a nudge); otherwise the answer may be up to half a
// PauseRecheck old, shared with the other leaders on the same target, so
// the periodic checks cost one query per target however many projectors
// it has (Requester).
func (l *loop) check(ctx context.Context, fresh bool) error {
	l.checked = time.Now()
	op, ok := l.b.(Operator)
	if !ok {
		return nil
	}
	var paused, retries bool
	var err error
	if r, ok := l.b.(Requester); ok {
		maxAge := l.p.PauseRecheck / 2
		if fresh {
			maxAge = 0
		}
		paused, retries, err = r.Requests(ctx, l.p.Name, maxAge)
	} else {
		paused, err = op.Paused(ctx, l.p.Name)
		retries = true
	}
	if err != nil {
		if cause := context.Cause(ctx); cause != nil {
			return cause
		}
		l.log.Warn("error reading operator requests", zap.Error(err))
		return nil
	}
	if paused {
		return fmt.Errorf("%w: by an operator", ErrPaused)
	}
	if !retries {
		return nil
	}
	outs, err := op.RetryDeadLetters(ctx, l.p.Name, l.epoch)
	for _, o := range outs {
		if o.Err == nil {
			l.log.Info("dead letter retried and applied", zap.Stringer("event", o.Cursor))
		} else {
			l.log.Warn("dead letter retried and failed again; it stays", zap.Stringer("event", o.Cursor), zap.Error(o.Err))
		}
	}
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
		l.log.Warn("error retrying dead letters; the requests left stay", zap.Error(err))
	}
	return nil
}
