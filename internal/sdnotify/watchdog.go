package sdnotify

import (
	"sync"
	"time"
)

// WatchdogLoop pings the systemd watchdog in the background. Stop it with
// Stop.
type WatchdogLoop struct {
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// StartWatchdog sends WATCHDOG=1 now and then every interval, each time
// only if healthy() reports true: a process that is up but whose work loops
// are stuck stops pinging, and systemd restarts it after WatchdogSec.
// onError, if not nil, receives every failed send. It returns at once.
func (n Notifier) StartWatchdog(interval time.Duration, healthy func() bool, onError func(error)) *WatchdogLoop {
	l := &WatchdogLoop{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			if healthy() {
				if _, err := n.Watchdog(); err != nil && onError != nil {
					onError(err)
				}
			}
			select {
			case <-t.C:
			case <-l.stop:
				return
			}
		}
	}()
	return l
}

// Stop ends the loop and returns once it has ended; no ping is sent after
// it returns. Safe to call twice.
func (l *WatchdogLoop) Stop() {
	l.once.Do(func() { close(l.stop) })
	<-l.done
}
