package httpsink

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/store"
)

// A failure after a batch may have been acknowledged is retried whole:
// never classified as a batch too slow for its deadline (which the loop
// halves, sending the acknowledged events under other ids). Fencing still
// ends the leadership.
func TestFailuresOfADeliveryAreNeverSplit(t *testing.T) {
	late := fmt.Errorf("error committing: %w", context.DeadlineExceeded)
	require.Equal(t, store.ClassNoAnswer, store.Classify(late), "what the loop would halve")
	for _, doing := range []string{"", "moving the checkpoint"} {
		err := unsplittable("p", doing, late)
		require.Equal(t, store.ClassDatabase, store.Classify(err))
		require.False(t, store.Classify(err).CountsAgainstEvent())
		require.ErrorContains(t, err, "deadline exceeded")
	}
	fenced := fmt.Errorf("%w: moved", store.ErrFenced)
	require.ErrorIs(t, unsplittable("p", "x", fenced), store.ErrFenced)
}
