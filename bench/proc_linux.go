package bench

import "syscall"

// childAttr makes a child process die with the harness, so that an
// interrupted benchmark leaves nothing running, and puts it in its own
// process group, so that a Ctrl-C reaches the harness only and the harness
// stops the children in order.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
}
