package httpsink

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/projectord/projectord/internal/testsupport"
)

// serve starts h on loopback at a port from testsupport.Port and returns
// its URL.
func serve(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.Listener.Close()
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", testsupport.Port(t)))
	if err != nil {
		t.Fatal(err)
	}
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.URL
}
