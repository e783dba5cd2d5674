// Package sdnotify tells a supervising systemd about the process's state
// through the sd_notify protocol (sd_notify(3)), without linking libsystemd:
// one datagram per call on the unix socket named by $NOTIFY_SOCKET, a file
// path or, with a leading "@", a Linux abstract socket.
//
// Outside systemd (no $NOTIFY_SOCKET: a shell, a container, tests) every
// call is a no-op that reports sent == false, so callers need no special
// case. The systemd watchdog is read from $WATCHDOG_USEC and $WATCHDOG_PID;
// a Watchdog loop pings it while the caller's health check passes, so a
// process whose loops are stuck stops pinging and is restarted.
//
// The lifecycle projectord reports:
//
//	start ──READY=1──> running ──STOPPING=1──> stopping ──exit──>
//	                     │
//	                     └─ every WatchdogSec/2, while live: WATCHDOG=1
package sdnotify
