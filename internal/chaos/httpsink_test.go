package chaos

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/httpsink/sinktest"
	"github.com/projectord/projectord/internal/store"
)

// The HTTP sink's acceptance (issue #17): two replicas deliver one
// projector's events to a receiver that verifies every signature, answers
// 500 to a fifth of the requests, once 429 with Retry-After: 1, once stalls
// past the timeout, once drops the connection mid-response, and 422 for one
// poison event. Mid-run the leader is killed (kill -9) right after a 2xx,
// its database connections cut first so its checkpoint cannot move: the
// trap of a batch acknowledged and not checkpointed. Every event is
// delivered, in cursor order within each delivery; the poison event is
// dead-lettered; an event acknowledged twice was acknowledged under one
// webhook-id; no request had a bad signature.
func TestChaosHTTPSinkFailover(t *testing.T) {
	t.Parallel()
	const poison = 777
	var (
		n                       atomic.Int32
		retryAfter, stall, drop atomic.Bool
		killAt                  atomic.Int32
		killed                  = make(chan string, 1)
		killedID                atomic.Value
		e                       *env
		envReady                = make(chan struct{})
		rnd                     = rand.New(rand.NewPCG(17, 17))
		rndMu                   sync.Mutex
	)
	killAt.Store(1 << 30)
	recv := sinktest.Start(t, func(r sinktest.Request) *sinktest.Answer {
		k := n.Add(1)
		if slices.Contains(r.Positions, poison) {
			return &sinktest.Answer{Status: 422, Body: fmt.Sprintf(`{"failed_position": %d}`, poison)}
		}
		switch {
		case k >= 5 && retryAfter.CompareAndSwap(false, true):
			return &sinktest.Answer{Status: 429, Header: map[string][]string{"Retry-After": {"1"}}}
		case k >= 10 && stall.CompareAndSwap(false, true):
			return &sinktest.Answer{Stall: true}
		case k >= 15 && drop.CompareAndSwap(false, true):
			return &sinktest.Answer{Drop: true}
		case k >= killAt.Load():
			<-envReady
			old := e.leader("hooks")
			rep := e.replicas[old]
			if rep == nil || rep.exited() {
				break
			}
			killAt.Store(1 << 30)
			// Its advance cannot reach the database now; the 2xx still
			// reaches it, and then it dies.
			rep.proxy.SetCut(true)
			killedID.Store(r.ID)
			return &sinktest.Answer{Status: 200, After: func() {
				_ = rep.cmd.Process.Signal(syscall.SIGKILL)
				killed <- old
			}}
		}
		rndMu.Lock()
		fail := rnd.IntN(5) == 0
		rndMu.Unlock()
		if fail {
			return &sinktest.Answer{Status: 500}
		}
		return nil
	})
	secret := filepath.Join(t.TempDir(), "secret")
	require.NoError(t, os.WriteFile(secret, []byte(sinktest.Secret+"\n"), 0o600))
	spec := projectorSpec{name: "hooks",
		sink:    fmt.Sprintf("{http: {url: %s, secret_file: %s, timeout: 1s}}", jsonText(t, recv.URL), jsonText(t, secret)),
		onError: "{max_attempts: 2, initial: 10ms, max: 100ms, then: dead_letter}"}
	e = newEnvWith(t, envOptions{specs: []projectorSpec{spec}, replicas: 2})
	close(envReady)

	e.settle()
	// Kill at the next request after the faults so far.
	killAt.Store(n.Load() + 1)
	var old string
	select {
	case old = <-killed:
	case <-time.After(60 * time.Second):
		t.Fatal("the leader was never killed")
	}
	<-e.replicas[old].done
	t.Logf("killed %s right after the 2xx of %s", old, killedID.Load())
	waitFor(t, 30*time.Second, func() bool { l := e.leader("hooks"); return l != "" && l != old })
	e.settle()

	// The end: every event acknowledged (but the poison one), checkpointed.
	close(e.writerStop)
	<-e.writerDone
	var last store.Cursor
	require.NoError(t, e.pool.QueryRow(e.ctx, `SELECT transaction_id, global_position FROM events ORDER BY 1 DESC, 2 DESC LIMIT 1`).Scan(&last.XID, &last.Position))
	waitFor(t, 60*time.Second, func() bool {
		var c store.Cursor
		err := e.pool.QueryRow(e.ctx, `SELECT last_xid, last_position FROM projectord.checkpoints WHERE projector = 'hooks'`).Scan(&c.XID, &c.Position)
		return err == nil && c == last
	})
	order := map[int64]int{}
	rows, err := e.pool.Query(e.ctx, `SELECT global_position FROM events ORDER BY transaction_id, global_position`)
	require.NoError(t, err)
	for rows.Next() {
		var p int64
		require.NoError(t, rows.Scan(&p))
		order[p] = len(order)
	}
	require.NoError(t, rows.Err())

	require.Empty(t, recv.Check(order), "signatures, order within deliveries, duplicates only under one webhook-id")
	acked := recv.Acked()
	for p := range order {
		if p != poison {
			require.True(t, acked[p], "event %d never acknowledged", p)
		}
	}
	require.False(t, acked[poison])
	var attempts int
	require.NoError(t, e.pool.QueryRow(e.ctx, `SELECT attempts FROM projectord.dead_letters WHERE projector = 'hooks' AND position = $1`, poison).Scan(&attempts))
	require.Equal(t, 2, attempts)

	// The batch acknowledged by the killed leader came again, whole, under
	// its id, from the new leader.
	var times int
	var stats struct{ ok, s5xx, s429, stalled, other int }
	for _, q := range recv.Requests() {
		if q.ID == killedID.Load() && q.Acked() {
			times++
		}
		switch {
		case q.Status/100 == 2:
			stats.ok++
		case q.Status == 500:
			stats.s5xx++
		case q.Status == 429:
			stats.s429++
		case q.Status == 0:
			stats.stalled++
		default:
			stats.other++
		}
	}
	require.Equal(t, 2, times, "the killed leader's last batch is delivered again under the same webhook-id")
	e.mu.Lock()
	violations := e.violations
	e.mu.Unlock()
	require.Empty(t, violations)
	t.Logf("%d events in %d requests: %d 2xx, %d 500, %d 429, %d stalled or dropped, %d other (422); %d events acknowledged",
		len(order), len(recv.Requests()), stats.ok, stats.s5xx, stats.s429, stats.stalled, stats.other, len(acked))
}
