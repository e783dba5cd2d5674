//go:build !linux

package coord

import (
	"syscall"
	"time"
)

// setUserTimeout is a no-op where TCP_USER_TIMEOUT does not exist; keepalives still apply.
func setUserTimeout(syscall.RawConn, time.Duration) error { return nil }
