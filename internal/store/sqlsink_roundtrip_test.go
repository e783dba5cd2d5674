package store_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/store"
)

// Every handler parameter reaches the read model as the event holds it,
// whichever way the batch commits (alone, or in a group): bigint, xid8
// (past 32 bits), text, jsonb (NULL metadata included), timestamptz (a
// non-UTC zone, nanoseconds below PostgreSQL's microsecond) and a NULL
// event_id. This pins how each Go value is handed to pgx.
func TestSQLSinkParamsRoundTrip(t *testing.T) {
	t.Parallel()
	zone := time.FixedZone("UTC+05:30", 5*3600+30*60)
	events := []store.Event{
		{Cursor: store.Cursor{XID: 1<<40 + 5, Position: 1<<33 + 10}, StreamID: `stream-ü 'q' "d"`, StreamVersion: 7, Type: "A",
			Data:      []byte(`{"n": 1.50, "s": "ü\n", "nested": {"k": [true, null, "x"]}}`),
			Metadata:  []byte(`{"tenant_id": "t1"}`),
			CreatedAt: time.Date(2026, 3, 29, 1, 30, 0, 123456789, zone), EventID: "evt-1"},
		{Cursor: store.Cursor{XID: 1<<40 + 5, Position: 1<<33 + 11}, StreamID: "s2", StreamVersion: 1, Type: "A",
			Data:      []byte(`[]`),
			CreatedAt: time.Date(1999, 12, 31, 23, 59, 59, 999, zone)},
	}
	for _, grouped := range []bool{false, true} {
		t.Run(fmt.Sprintf("grouped=%v", grouped), func(t *testing.T) {
			t.Parallel()
			tb := setup(t)
			_, err := tb.pool.Exec(tb.ctx, `CREATE TABLE copy (projector text, position bigint, xid xid8, stream_id text,
				stream_version bigint, event_type text, data jsonb, metadata jsonb, created_at timestamptz, event_id text)`)
			require.NoError(t, err)
			target := store.NewTarget(tb.pool, 30*time.Second)
			var log commitLog
			target.ObserveCommits(log.observe)
			var queued func(testing.TB, int)
			release := func() {}
			if grouped {
				queued, release = store.HoldGroups(target)
			}
			// Two projectors, so that the grouped run commits a group of
			// two (a batch alone is committed as without grouping).
			projectors := []string{"p1", "p2"}
			errs := make([]error, len(projectors))
			var wg sync.WaitGroup
			for i, p := range projectors {
				sink, err := store.CompileSQLSink(map[string]string{"A": fmt.Sprintf(`INSERT INTO copy VALUES ('%s', @position,
					@transaction_id, @stream_id, @stream_version, @event_type, @data, @metadata, @created_at, @event_id)`, p)}, "")
				require.NoError(t, err)
				cp, err := target.Claim(tb.ctx, p, "node-a", 0, store.OrderXID8)
				require.NoError(t, err)
				req := store.CommitRequest{Projector: p, Epoch: cp.Epoch, To: events[len(events)-1].Cursor, Events: events}
				wg.Go(func() { errs[i] = target.Commit(context.WithoutCancel(tb.ctx), req, sink) })
				if grouped {
					queued(t, i+1)
				} else {
					wg.Wait()
				}
			}
			release()
			wg.Wait()
			for i := range errs {
				require.NoError(t, errs[i], projectors[i])
			}
			for _, p := range projectors {
				for _, e := range events {
					var (
						xid               uint64
						streamID, typ     string
						version           int64
						dataSame          bool
						metadata, eventID *string
						metadataSame      bool
						createdAt         time.Time
					)
					require.NoError(t, tb.pool.QueryRow(tb.ctx, `SELECT xid, stream_id, stream_version, event_type,
						data = $3::jsonb, metadata::text, metadata IS NOT DISTINCT FROM $4::jsonb, created_at, event_id
						FROM copy WHERE projector = $1 AND position = $2`, p, e.Position, string(e.Data), jsonOrNil(e.Metadata)).
						Scan(&xid, &streamID, &version, &typ, &dataSame, &metadata, &metadataSame, &createdAt, &eventID), "%s %d", p, e.Position)
					require.Equal(t, e.XID, xid)
					require.Equal(t, e.StreamID, streamID)
					require.Equal(t, e.StreamVersion, version)
					require.Equal(t, e.Type, typ)
					require.True(t, dataSame, "data")
					require.Equal(t, e.Metadata == nil, metadata == nil, "metadata NULL")
					require.True(t, metadataSame, "metadata")
					// PostgreSQL keeps microseconds; the instant is kept, the zone is not.
					require.True(t, e.CreatedAt.Truncate(time.Microsecond).Equal(createdAt), "created_at %s, want %s", createdAt, e.CreatedAt)
					if e.EventID == "" {
						require.Nil(t, eventID, "event_id")
					} else {
						require.NotNil(t, eventID, "event_id")
						require.Equal(t, e.EventID, *eventID)
					}
				}
			}
			groups, singles := log.seen()
			if grouped {
				require.Equal(t, []int{2}, groups, "one group of both batches")
			} else {
				require.Equal(t, 2, singles, "each batch alone")
			}
			var rows int
			require.NoError(t, tb.pool.QueryRow(tb.ctx, `SELECT count(*) FROM copy`).Scan(&rows))
			require.Equal(t, len(projectors)*len(events), rows)
		})
	}
}

func jsonOrNil(b []byte) *string {
	if b == nil {
		return nil
	}
	s := string(b)
	return &s
}
