/*
 * join.c — the init-less join (join_pidfd >= 0, use_init = 0): pyexec-oci's
 * exec into a running container, runc's way. The child joins every namespace
 * of the container's process in one setns() on its pidfd; then, unless a pid
 * namespace was joined, it is itself the exec'd process. A joined pid
 * namespace takes only our future children, so the child forks once more
 * with CLONE_PARENT: the fork is the caller's child, not ours, and once the
 * caller (pyexec-oci) exits it goes to the caller's subreaper like any
 * orphan, with nothing of pyexec above it. The child tells the parent the
 * fork's host pid (clone's result here, in the parent's pid namespace: the
 * child's own) through the status pipe and exits; the parent reaps it.
 *
 * Child side: like the rest of the child, no allocation, failures only
 * through px_fail. The fork inherits the error pipe (close-on-exec), so its
 * failures reach the parent as any task's, and the pipe's EOF still means
 * launched. px_read_task_pid is the parent's side, after that EOF.
 */
#define _GNU_SOURCE
#define PX_SHIM_INTERNAL
#include "pyexec.h"

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

void px_join_direct(const struct px_launch *l)
{
    const struct px_config *cfg = l->cfg;
    uint64_t ns = cfg->clone_flags & PX_NS_FLAGS;
    if (ns && setns(cfg->join_pidfd, (int)ns) < 0)
        px_fail(PX_STEP_SETNS, errno, "setns");
    px_become_userns_root(cfg, 0);
    if (!(ns & CLONE_NEWPID))
        px_run_task(cfg);
    /* A plain fork by raw syscall (glibc's fork runs atfork handlers); with
     * CLONE_PARENT the kernel takes our own exit signal (SIGCHLD) for it. */
    pid_t task = (pid_t)syscall(SYS_clone, (unsigned long)(CLONE_PARENT | SIGCHLD), 0UL, NULL, NULL, 0UL);
    if (task < 0)
        px_fail(PX_STEP_FORK, errno, "fork into the container's pid namespace");
    if (task == 0) {
        close(l->status_fd); /* only we report the pid: the task must not hold the pipe */
        px_run_task(cfg);
    }
    int32_t pid = task;
    ssize_t n;
    do
        n = write(l->status_fd, &pid, sizeof pid);
    while (n < 0 && errno == EINTR);
    if (n != (ssize_t)sizeof pid) {
        int err = n < 0 ? errno : EIO;
        kill(task, SIGKILL); /* a task nobody knows of must not run */
        px_fail(PX_STEP_FORK, err, "reporting the pid");
    }
    _exit(0);
}

void px_read_task_pid(struct px_child *c)
{
    int32_t pid = -1;
    ssize_t n = -1;
    /* Also after a failure: a task that failed is still the caller's child to reap. */
    if (c->status_fd >= 0) {
        do
            n = read(c->status_fd, &pid, sizeof pid);
        while (n < 0 && errno == EINTR);
        if (n == (ssize_t)sizeof pid && pid > 0)
            c->task_pid = pid;
        else if (c->result == 0)
            c->result = -EIO; /* the task exec'd but nobody knows its pid: finish_up kills the child */
    }
    if (c->status_fd >= 0)
        close(c->status_fd);
    c->status_fd = -1;
}
