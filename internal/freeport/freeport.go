// Package freeport picks TCP ports on 127.0.0.1 for processes that will
// bind them later: test replicas, ephemeral PostgreSQL clusters.
//
// Asking the kernel for port 0 and closing the listener is not enough for
// that. The kernel hands a just-closed ephemeral port to the next caller
// that asks, so two replicas of one test got the same port (the second
// failed to bind and the first answered for both); and a port in the
// ephemeral range can be taken as the local end of any outgoing connection
// while a restarted process is on its way to bind it again. Pick therefore
// chooses below the ephemeral range, never returns one port twice in a
// process, and checks the port is free when it picks it.
package freeport

import (
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

// lowest is the bottom of the range Pick chooses from: above the
// well-known and most registered service ports.
const lowest = 15000

var (
	mu    sync.Mutex
	taken = map[int]bool{}
)

// Pick returns a port on 127.0.0.1 that was free when picked and that no
// earlier call in this process returned.
func Pick() (int, error) {
	mu.Lock()
	defer mu.Unlock()
	top := ephemeralLow()
	for range 200 {
		p := lowest + rand.IntN(top-lowest)
		if taken[p] {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue
		}
		_ = l.Close()
		taken[p] = true
		return p, nil
	}
	return 0, errors.New("error finding a free port: 200 candidates were all in use")
}

// ephemeralLow is the first port of the kernel's ephemeral range (where
// outgoing connections take their local ports), 32768 when unknown.
func ephemeralLow() int {
	const fallback = 32768
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return fallback
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return fallback
	}
	n, err := strconv.Atoi(f[0])
	if err != nil || n <= lowest+1000 {
		return fallback
	}
	return n
}
