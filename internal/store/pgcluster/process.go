package pgcluster

import (
	"errors"
	"os"
	"os/exec"
	"runtime"
	"syscall"
)

// process is one run of the postmaster.
type process struct {
	cmd *exec.Cmd
	// done is closed once the postmaster has exited and been reaped.
	done chan struct{}
	// err is cmd.Wait's result; read it only after done is closed.
	err error
}

// spawn starts cmd, whose SysProcAttr may carry a parent death signal.
//
// Linux delivers that signal when the *thread* that forked the child exits,
// not the process, and the Go runtime does end threads (whenever a goroutine
// exits while locked to one). Forking from an arbitrary thread could thus
// kill postgres at a random moment. So the child is forked from a goroutine
// locked to its thread, which then blocks in cmd.Wait for as long as the
// child lives. It never unlocks: once Wait returns the goroutine exits and
// takes the thread with it, which can no longer hurt anyone.
func spawn(cmd *exec.Cmd) (*process, error) {
	p := &process{cmd: cmd, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		p.err = cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return p, nil
}

func (p *process) pid() int { return p.cmd.Process.Pid }

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// signal sends sig, ignoring that the process may have exited already.
func (p *process) signal(sig syscall.Signal) error {
	if err := p.cmd.Process.Signal(sig); err != nil && !isDone(err) {
		return err
	}
	return nil
}

// kill ends the process and waits until it is reaped. SIGKILL cannot be
// caught, so the wait is bounded in practice.
func (p *process) kill() {
	_ = p.signal(syscall.SIGKILL)
	<-p.done
}

func isDone(err error) bool {
	return errors.Is(err, os.ErrProcessDone)
}
