//go:build !unix

package bench

import "time"

func clientCPU() (time.Duration, bool) { return 0, false }
