package bench

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/projectord/projectord/internal/runner"
	"github.com/projectord/projectord/internal/store"
)

type stubCommit struct {
	*timedBackend
}

func (s *stubCommit) Commit(ctx context.Context, req store.CommitRequest) error {
	if f := s.onCommit.Load(); f != nil {
		(*f)(&req, time.Now())
	}
	return nil
}
func (s *stubCommit) Claim(ctx context.Context, p string) (store.Checkpoint, error) {
	return store.Checkpoint{Projector: p, Epoch: 1}, nil
}

func BenchmarkScratchVariants(b *testing.B) {
	db := newBenchDB(b)
	last, events := db.loadOrders(b, *flagEvents/5, 10)
	ctx := b.Context()
	p := db.startProjectord(b, projectordOptions{})
	sink, _ := store.CompileSQLSink(map[string]string{}, "")
	r := store.NewReader(db.pool, nativeSource, time.Minute)
	tgt := store.NewTarget(db.pool, time.Minute)
	seq := func(batch int, commit bool, name string) (int, error) {
		cp, err := tgt.Claim(ctx, name, "x", 0)
		if err != nil {
			return 0, err
		}
		buf := make([]store.Event, 0, batch)
		var after store.Cursor
		n := 0
		for {
			var err error
			buf, err = r.Read(ctx, after, store.Filter{}, batch, buf)
			if err != nil {
				return n, err
			}
			if len(buf) == 0 {
				return n, nil
			}
			n += len(buf)
			to := buf[len(buf)-1].Cursor
			if commit {
				if err := tgt.Commit(ctx, store.CommitRequest{Projector: name, Epoch: cp.Epoch, From: after, To: to, Events: buf}, sink); err != nil {
					return n, err
				}
			}
			after = to
		}
	}
	pgxCatchUp(ctx, db.pool, 1000)
	batch := 1000
	ratios := map[string][]float64{}
	names := []string{"pgx", "reader", "reader+commit seq", "runner", "runner stub commit"}
	for i := 0; i < 7; i++ {
		res := map[string]measurement{}
		fs := []func(){
			func() {
				res["pgx"], _ = measure(ctx, labelPGX, func(ctx context.Context) (int, error) { return pgxCatchUp(ctx, db.pool, batch) })
			},
			func() {
				res["reader"], _ = measure(ctx, labelPGX, func(ctx context.Context) (int, error) { return seq(batch, false, "") })
			},
			func() {
				res["reader+commit seq"], _ = measure(ctx, labelPGX, func(ctx context.Context) (int, error) { return seq(batch, true, fmt.Sprint("seq", i)) })
			},
			func() { res["runner"] = p.measureCatchUp(b, fmt.Sprint("run", i), batch, sink, last, events) },
			func() {
				// runner with commits stubbed
				orig := p.backend
				stub := &stubCommit{orig}
				reached := make(chan time.Time, 1)
				hook := func(req *store.CommitRequest, at time.Time) {
					if !req.To.Less(last) {
						select {
						case reached <- at:
						default:
						}
					}
				}
				orig.onCommit.Store(&hook)
				orig.AddProjector(fmt.Sprint("stub", i), tgt, sink)
				c0 := sampleCPU()
				start := time.Now()
				cctx, cancel := context.WithCancel(ctx)
				errc := make(chan error, 1)
				go func() {
					errc <- runner.Run(cctx, runner.Projector{Name: fmt.Sprint("stub", i), BatchSize: batch}, stub)
				}()
				at := <-reached
				cancel()
				<-errc
				orig.onCommit.Store(nil)
				res["runner stub commit"] = measurement{took: at.Sub(start), events: events, cpu: sampleCPU().since(c0)}
			}}
		for j := range fs {
			fs[(i+j)%len(fs)]()
		}
		for _, k := range names {
			m := res[k]
			ratios[k] = append(ratios[k], m.rate()/res["pgx"].rate())
			fmt.Printf("%-20s %8.0f ev/s  ratio %.2f  client %.2f server %.2f µs/ev\n", k, m.rate(), m.rate()/res["pgx"].rate(),
				float64(m.cpu.client.Microseconds())/float64(m.events), float64(m.cpu.server.Microseconds())/float64(m.events))
		}
		fmt.Println()
	}
	for _, k := range names {
		fmt.Printf("%-20s median ratio %.3f %v\n", k, median(ratios[k]), ratios[k])
	}
}
