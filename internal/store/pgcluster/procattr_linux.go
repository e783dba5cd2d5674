package pgcluster

import "syscall"

// serverProcAttr runs the postmaster as cred, in its own process group so
// that a Ctrl-C on the terminal reaches only us and we decide how to shut
// it down, and with a parent death signal: if we die without stopping it,
// the kernel sends it SIGQUIT, PostgreSQL's immediate shutdown.
func serverProcAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{
		Credential: cred,
		Setpgid:    true,
		Pdeathsig:  syscall.SIGQUIT,
	}
}
