package pgcluster

import (
	"fmt"
	"net"
)

// freePort asks the kernel for an unused port on 127.0.0.1. It stays free
// only until someone else takes it, so the caller must cope with losing it.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("error finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
