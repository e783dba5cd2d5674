//go:build !linux

package pgcluster

import "syscall"

// serverProcAttr runs the postmaster as cred, in its own process group so
// that a Ctrl-C on the terminal reaches only us. Without Linux's parent death
// signal a postmaster whose owner was killed keeps running until stopped by
// hand; its directory is then left alone by the stale sweep.
func serverProcAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{
		Credential: cred,
		Setpgid:    true,
	}
}
