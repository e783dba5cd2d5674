package freeport

import (
	"net"
	"strconv"
	"testing"
)

// The kernel hands a just-closed ephemeral port to the next caller; Pick
// must not: 300 picks in a row, each port closed before the next pick, are
// all distinct, below the ephemeral range, and bindable.
func TestPickNeverRepeatsAndStaysBelowEphemeral(t *testing.T) {
	seen := map[int]bool{}
	top := ephemeralLow()
	for range 300 {
		p, err := Pick()
		if err != nil {
			t.Fatal(err)
		}
		if seen[p] {
			t.Fatalf("port %d picked twice", p)
		}
		seen[p] = true
		if p < lowest || p >= top {
			t.Fatalf("port %d outside [%d, %d)", p, lowest, top)
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			t.Fatalf("picked port %d cannot be bound: %v", p, err)
		}
		_ = l.Close()
	}
}
