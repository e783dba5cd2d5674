package sdnotify

import (
	"fmt"
	"math"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// Messages defined by sd_notify(3).
const (
	MsgReady    = "READY=1"
	MsgStopping = "STOPPING=1"
	MsgWatchdog = "WATCHDOG=1"
)

// sendTimeout bounds one datagram: a supervisor that does not drain its
// socket must not stall shutdown or the watchdog loop.
const sendTimeout = time.Second

// Notifier sends sd_notify messages. The zero value is a no-op notifier;
// FromEnv returns the one systemd configured for this process.
type Notifier struct {
	// Socket is $NOTIFY_SOCKET: a unixgram socket path, or "@name" for an
	// abstract socket. Empty means no supervisor listens: Notify does nothing.
	Socket string
	// WatchdogUSec and WatchdogPID are $WATCHDOG_USEC and $WATCHDOG_PID as
	// systemd sets them; see WatchdogInterval.
	WatchdogUSec string
	WatchdogPID  string
}

// FromEnv returns the notifier described by the process environment.
func FromEnv() Notifier {
	return Notifier{
		Socket:       os.Getenv("NOTIFY_SOCKET"),
		WatchdogUSec: os.Getenv("WATCHDOG_USEC"),
		WatchdogPID:  os.Getenv("WATCHDOG_PID"),
	}
}

// Notify sends state, one or more newline-separated VAR=value assignments,
// as a single datagram. sent is false, with a nil error, when no socket is
// configured.
func (n Notifier) Notify(state string) (sent bool, err error) {
	if n.Socket == "" {
		return false, nil
	}
	// The protocol has two address forms; newer systemd also knows vsock,
	// which a process on the host never gets.
	if !strings.HasPrefix(n.Socket, "/") && !strings.HasPrefix(n.Socket, "@") {
		return false, fmt.Errorf("error notifying systemd: unsupported NOTIFY_SOCKET %q", n.Socket)
	}
	// Go maps a leading "@" to the abstract namespace on Linux.
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: n.Socket, Net: "unixgram"})
	if err != nil {
		return false, fmt.Errorf("error notifying systemd: %w", err)
	}
	defer conn.Close()
	if err := conn.SetWriteDeadline(time.Now().Add(sendTimeout)); err != nil {
		return false, fmt.Errorf("error notifying systemd: %w", err)
	}
	if _, err := conn.Write([]byte(state)); err != nil {
		return false, fmt.Errorf("error notifying systemd: %w", err)
	}
	return true, nil
}

// Ready says start-up is finished (READY=1).
func (n Notifier) Ready() (bool, error) { return n.Notify(MsgReady) }

// Stopping says a graceful stop has begun (STOPPING=1).
func (n Notifier) Stopping() (bool, error) { return n.Notify(MsgStopping) }

// Watchdog pings the watchdog (WATCHDOG=1).
func (n Notifier) Watchdog() (bool, error) { return n.Notify(MsgWatchdog) }

// Status sets the one-line status `systemctl status` shows. Newlines in msg
// would start a new assignment, so they become spaces.
func (n Notifier) Status(msg string) (bool, error) {
	return n.Notify("STATUS=" + StatusLine(msg))
}

// StatusLine returns msg as a STATUS= value: one line.
func StatusLine(msg string) string {
	return strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(msg)
}

// WatchdogInterval returns the watchdog timeout systemd expects pings
// within, and whether the watchdog is enabled for this process: WATCHDOG_USEC
// is a positive number and WATCHDOG_PID, when set, is this process's pid
// (a child that inherited the variables must not ping on its parent's
// behalf). Ping at half the interval, as sd_watchdog_enabled(3) advises.
func (n Notifier) WatchdogInterval() (time.Duration, bool) {
	if n.WatchdogUSec == "" {
		return 0, false
	}
	usec, err := strconv.ParseUint(n.WatchdogUSec, 10, 63)
	// Beyond what a Duration holds, the watchdog is off in all but name.
	if err != nil || usec == 0 || usec > math.MaxInt64/uint64(time.Microsecond) {
		return 0, false
	}
	if n.WatchdogPID != "" {
		pid, err := strconv.Atoi(n.WatchdogPID)
		if err != nil || pid != os.Getpid() {
			return 0, false
		}
	}
	return time.Duration(usec) * time.Microsecond, true
}

// Notify sends state to the socket in $NOTIFY_SOCKET; see Notifier.Notify.
func Notify(state string) (sent bool, err error) { return FromEnv().Notify(state) }

// Ready sends READY=1 to $NOTIFY_SOCKET.
func Ready() (bool, error) { return FromEnv().Ready() }

// Stopping sends STOPPING=1 to $NOTIFY_SOCKET.
func Stopping() (bool, error) { return FromEnv().Stopping() }

// Watchdog sends WATCHDOG=1 to $NOTIFY_SOCKET.
func Watchdog() (bool, error) { return FromEnv().Watchdog() }

// Status sends STATUS=msg to $NOTIFY_SOCKET.
func Status(msg string) (bool, error) { return FromEnv().Status(msg) }

// WatchdogInterval reads the watchdog from the process environment; see
// Notifier.WatchdogInterval.
func WatchdogInterval() (time.Duration, bool) { return FromEnv().WatchdogInterval() }
