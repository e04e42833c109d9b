// Package tied starts the daemons tests run (sshd, LXD) so that they die
// with the test process, even one killed by a timeout or SIGKILL.
package tied

import (
	"os/exec"
	"runtime"
	"syscall"
)

// Start starts cmd in a process group of its own (so killing the group
// kills what it started and stayed in it) with SIGKILL as its parent-death
// signal, and returns a channel that receives cmd.Wait's result once.
//
// The kernel sends the parent-death signal when the thread that forked the
// child ends, not when the process does (prctl(2), PR_SET_PDEATHSIG). Go
// moves goroutines between threads, and ends a thread whose goroutine
// exits while locked to it, so a daemon started from any goroutine could
// be killed while the test still runs, or outlive the thread it trusted.
// Start therefore forks from a goroutine locked to its thread that stays
// there, blocked in Wait, for as long as the daemon lives: the thread ends
// only when the daemon has exited or the whole process dies.
func Start(cmd *exec.Cmd) (<-chan error, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	started := make(chan error, 1)
	exited := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// Unlocked only after Wait: the daemon is gone by then.
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		exited <- cmd.Wait()
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return exited, nil
}
