/*
 * error.c — the child's error channel, and the names of its steps.
 *
 * A leaf unit: it calls nothing else of the shim, and every unit the child
 * runs (nsenter.c, namespaces.c, mounts.c, task.c, console.c) reports
 * through it, so no two of them need each other to fail.
 *
 * Error convention (one for the whole child): a failing step calls
 * px_fail(PX_STEP_*, errno, the path or name it worked on). That writes one
 * struct px_error to the error pipe and exits 127; nothing else reports. The
 * parent (spawn.c) reads the pipe until EOF: EOF alone means every process of
 * the child exec'd (the pipe is close-on-exec) or, with start_fd, that the
 * task holds before its exec (it closes the pipe then); a whole record says
 * which step failed, and a short one makes the parent kill the child. The record is
 * smaller than PIPE_BUF, so its write is atomic or fails whole. The few exits
 * that are no step's failure (the parent gave up before the go; the init's
 * capget/capset, which cannot fail) leave no record: the parent sees EOF, and
 * the child is dead instead of exec'd.
 *
 * Like the rest of the child it allocates nothing and takes no locks: it runs
 * between clone and exec, maybe in the caller's own memory.
 */
#define _GNU_SOURCE
#define PX_SHIM_INTERNAL
#include "pyexec.h"

#include <string.h>
#include <unistd.h>

/* Thread-local: a child that shares the caller's memory shares the launching
 * thread's TLS too, and other threads may launch at the same time. The parent
 * sets it before the clone (px_set_error_fd), the init again where it moves
 * the pipe out of the monitor's fds (nsenter.c, exec_monitor); initial-exec, so reading it in
 * the child never goes through __tls_get_addr (which may allocate). */
static __thread int child_error_fd __attribute__((tls_model("initial-exec"))) = -1;

void px_set_error_fd(int error_fd)
{
    child_error_fd = error_fd;
}

int px_error_fd(void)
{
    return child_error_fd;
}

size_t px_str_copy(char *dst, size_t cap, const char *src)
{
    size_t n = 0;
    if (src)
        while (src[n] && n + 1 < cap) {
            dst[n] = src[n];
            n++;
        }
    dst[n] = 0;
    return n;
}

void px_fail(int step, int err, const char *detail)
{
    struct px_error rec;
    memset(&rec, 0, sizeof rec);
    rec.step = step;
    rec.err = err;
    px_str_copy(rec.detail, sizeof rec.detail, detail);
    if (child_error_fd >= 0) {
        ssize_t unused = write(child_error_fd, &rec, sizeof rec);
        (void)unused;
    }
    _exit(127);
}

/* For the parent's report (pyexec/shim.py's LaunchError): the step of a record. */
const char *px_step_name(int step)
{
    switch (step) {
    case PX_STEP_SYNC: return "sync";
    case PX_STEP_HOSTNAME: return "sethostname";
    case PX_STEP_LOOPBACK: return "loopback";
    case PX_STEP_PROPAGATION: return "make-rprivate";
    case PX_STEP_MOUNT: return "mount";
    case PX_STEP_BIND: return "bind";
    case PX_STEP_MKDIR: return "mkdir";
    case PX_STEP_SYMLINK: return "symlink";
    case PX_STEP_PIVOT_ROOT: return "pivot_root";
    case PX_STEP_MASK: return "mask";
    case PX_STEP_READONLY: return "readonly";
    case PX_STEP_FORK: return "fork";
    case PX_STEP_STDIO: return "stdio";
    case PX_STEP_RLIMIT: return "setrlimit";
    case PX_STEP_CHDIR: return "chdir";
    case PX_STEP_SETGROUPS: return "setgroups";
    case PX_STEP_SETGID: return "setgid";
    case PX_STEP_SETUID: return "setuid";
    case PX_STEP_CAPS: return "capabilities";
    case PX_STEP_NO_NEW_PRIVS: return "no_new_privs";
    case PX_STEP_EXEC: return "exec";
    case PX_STEP_SETSID: return "setsid";
    case PX_STEP_REMOUNT: return "remount";
    case PX_STEP_OOM_SCORE: return "oom_score_adj";
    case PX_STEP_MONITOR: return "monitor";
    case PX_STEP_SECCOMP: return "seccomp";
    case PX_STEP_SETNS: return "setns";
    case PX_STEP_CONSOLE: return "console";
    case PX_STEP_SYSCTL: return "sysctl";
    case PX_STEP_MKNOD: return "mknod";
    case PX_STEP_CHOWN: return "chown";
    case PX_STEP_DOMAINNAME: return "setdomainname";
    case PX_STEP_PERSONALITY: return "personality";
    case PX_STEP_START: return "start";
    default: return "setup";
    }
}
