package httpsink

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/store"
)

// Review: Commit encodes every batch into the one buffer s.body and posts
// it with bytes.NewReader. net/http's Transport may still be writing a
// request's body after Do has returned its response (the RoundTripper
// contract: "callers wanting to reuse the body for subsequent requests must
// arrange to wait for the Close call"), which happens whenever a receiver
// answers before reading the whole body (a 413, a 401, a 422 decided from
// the headers). The next batch is then encoded into the buffer that the
// transport is still reading: a data race, and the tail of the earlier
// request on the wire is the next batch's bytes. Run with -race.
func TestReviewBodyBufferIsReusedWhileTheTransportStillReadsIt(t *testing.T) {
	url := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusRequestEntityTooLarge) // answered without reading the body
	}))
	s := newSink(t, url, nil)
	big := []store.Event{{Cursor: store.Cursor{XID: 1, Position: 1}, Type: "T", StreamID: "s",
		Data: []byte(`"` + strings.Repeat("x", 8<<20) + `"`)}}
	for i := 0; i < 5; i++ {
		// What Commit does for each batch (and the loop's halves): encode
		// into s.body, then deliver it.
		s.body = AppendBatch(s.body[:0], "p", 0, big)
		o, err := s.deliver(context.Background(), "msg_x", s.body, noRecheck)
		require.NoError(t, err)
		require.Equal(t, http.StatusRequestEntityTooLarge, o.status)
	}
}
