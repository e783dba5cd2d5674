package metrics

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
)

// Both commit modes are series at 0 from the start; a grouped transaction
// counts once whatever its size, and its size goes to the histogram; a
// single one never does.
func TestCommitTransactionsByMode(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := New(reg, []string{"p"}, BuildInfo{})
	require.Equal(t, 2, countSeries(t, reg, "projectord_commit_transactions_total"))
	require.Zero(t, testutil.ToFloat64(m.commits.WithLabelValues("grouped")))
	require.Zero(t, testutil.ToFloat64(m.commits.WithLabelValues("single")))

	m.Committed(true, 7)
	m.Committed(true, 200)
	m.Committed(false, 1)
	require.Equal(t, 2.0, testutil.ToFloat64(m.commits.WithLabelValues("grouped")))
	require.Equal(t, 1.0, testutil.ToFloat64(m.commits.WithLabelValues("single")))

	families, err := reg.Gather()
	require.NoError(t, err)
	var found bool
	for _, f := range families {
		if f.GetName() != "projectord_commit_group_batches" {
			continue
		}
		found = true
		h := f.GetMetric()[0].GetHistogram()
		require.EqualValues(t, 2, h.GetSampleCount())
		require.Equal(t, 207.0, h.GetSampleSum())
		cum := map[float64]uint64{}
		for _, b := range h.GetBucket() {
			cum[b.GetUpperBound()] = b.GetCumulativeCount()
		}
		require.EqualValues(t, 0, cum[4])
		require.EqualValues(t, 1, cum[8])
		require.EqualValues(t, 1, cum[128])
		require.EqualValues(t, 2, cum[256])
	}
	require.True(t, found, "projectord_commit_group_batches is exported")
}
