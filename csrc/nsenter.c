/*
 * nsenter.c — the child side: everything between clone and exec, in C.
 *
 * Python builds a complete plan (struct px_config: clone flags, a list of mount
 * operations with absolute paths, ids, capability masks, argv/envp) and calls
 * px_spawn() (csrc/spawn.c, the parent side). From the clone on, the child
 * runs only this file, csrc/namespaces.c (joins by fd, sysctls),
 * csrc/mounts.c (the mount plan), csrc/task.c (the task's own steps and
 * exec), csrc/console.c (its pty) and csrc/error.c (its error report): no Python,
 * no malloc, no stdio, no glibc wrappers that take locks or broadcast to threads (setxid, fork). By
 * default the child runs in the caller's own memory (CLONE_VM, on a stack
 * spawn.c mapped for it; it writes nothing of the caller's but its launching
 * thread's errno, while that thread waits in spawn.c); else it is a copy of
 * one thread of a threaded process, where any lock another thread held at
 * clone time stays held forever.
 *
 * Parent/child protocol
 * =====================
 *
 *   parent (px_spawn, px_finish)        child: the init (pid 1 of a new     task
 *                                       pid ns, or a child subreaper)      ----
 *   --------------------------          ------------------------------
 *   pipe2(sync), pipe2(error),
 *   pipe2(status)        [all O_CLOEXEC]
 *   [a pid ns to join: setns into it]
 *   clone3(CLONE_NEW*|CLONE_PIDFD) ---> [wait_for_parent: read(sync) blocks;
 *   [setns back to our own pid ns]       the parent's Python work runs now]
 *   [parked: Python writes id maps,     setns the joined namespaces: user
 *    a veth; then px_finish]             (become its root), net, uts, ipc,
 *   write pid -> cgroup.procs files      cgroup, time, then mnt;
 *   write(sync, PX_GO), close ------->  hostname, domainname, lo up,
 *   read(error) until EOF ... blocks    make / private, sysctls, mount ops,
 *                                       pivot_root, masks, read-only paths,
 *                                       [hold_task: read(sync)]
 *                                       block all signals
 *                                       clone(VM|VFORK) ---------------> setsid, stdio (or the console,
 *                                       (runs again once the task execs)   below), oom_score_adj, rlimits,
 *                                       harden, fds to PX_MON_FD_*,        personality, bounding set,
 *                                       execveat(pyexec-monitor) --.       groups, gid, uid, cwd, umask,
 *                                                                  |       caps, ambient, no_new_privs,
 *                                       monitor: pump logs, forward       signals reset, seccomp, execve
 *                                       signals, reap; task gone ->       (error pipe closes on exec)
 *                                       kill the rest, drain logs,
 *                                       exit.json + write(status)
 *   EOF: launched  <----- error pipe closed by both execs ------------------------'
 *   a px_error record: step failed  <-- any failing step writes {step, errno, path}, _exit(127)
 *   a short record: kill the child (a broken child never half-starts)
 *
 * Without a new pid namespace the init is a child subreaper (cfg->subreaper):
 * orphans of the task (double-forked daemons) are reparented to it, and the
 * monitor kills them when the task exits, since no namespace teardown would.
 * A pid 1 cannot re-raise the task's signal death on itself (the kernel drops
 * self-sent signals it has no handler for), so the monitor reports the raw
 * wait status through the status pipe and exit.json.
 *
 * Without an init (use_init = 0) the cloned child itself runs the task's
 * steps and execs (always a copy then: see spawn.c). That is pyexec-oci's
 * container process, pid 1 of its pid namespace, with a console socket and a
 * hold before its exec (start_fd, a FIFO the caller opened O_RDWR), released
 * later by another process:
 *
 *   parent (pyexec-oci create)    child = the task               console socket's     pyexec-oci start
 *   --------------------------    ----------------               peer (the client)    ----------------
 *   clone3 ---------------------> namespaces ... read-only paths,
 *   write(sync, PX_GO) ---------> as above; setsid;
 *                                 [console: open /dev/ptmx,
 *                                  unlock, slave = TIOCGPTPEER,
 *                                  size, bind it on /dev/console,
 *                                  sendmsg("/dev/ptmx", master) -> recvmsg: the master
 *                                  slave -> 0, 1, 2, TIOCSCTTY]
 *                                 oom_score_adj ... signals reset;
 *                                 resolve program in search_path
 *   a record: step exec <-------- (not found, not executable)
 *   EOF: launched <-------------- close(error pipe), close fds
 *   returns, exits                 but 0, 1, 2 and start_fd;
 *                                 read(start_fd) ... blocks <------------------------ open the FIFO, write
 *                                 seccomp, execve                                     one byte, unlink it
 *                                 (EOF or a failure: _exit(127), silently)
 *
 * Join mode (cfg->join_pidfd >= 0, pyexec's exec into a running task): the
 * clone makes no namespaces; the child setns()es into the task's instead of
 * the hostname/loopback/mount stages, then runs the init path above with the
 * exec's command as "the task" (see join_task for the extra fork a joined
 * pid namespace needs). Its monitor gets only the status pipe and a lifeline.
 *
 * Init-less join (join_pidfd >= 0, use_init = 0: pyexec-oci exec, csrc/join.c).
 * The exec'd process must end up a child of the runtime's caller's subreaper
 * (conmon, containerd's shim), with no pyexec process above it:
 *
 *   parent (pyexec-oci exec)      child (host pid ns)           task (the container's pid ns)
 *   ------------------------      -------------------           -----------------------------
 *   clone3 [INTO_CGROUP] -------> [hold_task: read(sync)]
 *   write(sync, PX_GO) ---------> setns(pidfd, all of clone_flags),
 *                                 [user ns: become its root]
 *                                 no pid ns joined: it is the task -> px_run_task as above
 *                                 else clone(CLONE_PARENT) ------> px_run_task: setsid, stdio or
 *                                 write(status, its host pid)       the console, ..., seccomp, execve
 *                                 _exit(0)                          (a sibling of the child: the
 *   EOF on the error pipe <------ both ends closed ----------------  parent's own child)
 *   read(status): task_pid; the caller reaps the child and waits for (or leaves) the task
 *
 * Error convention: every failing step calls px_fail(step, errno, path)
 * (csrc/error.c); nothing else reports. The calls between the units go one
 * way: this file hands over to csrc/namespaces.c (joins, sysctls),
 * px_run_mount_ops and px_run_task (which runs csrc/console.c), which call
 * nothing back here.
 */
#define _GNU_SOURCE
#define PX_SHIM_INTERNAL
#include "pyexec.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Stage: user namespace — become its root.                                  */
/* ------------------------------------------------------------------------ */

/*
 * In a new user namespace (its maps written by the parent before the go),
 * become its root. Until then the child is the caller's host uid, which the
 * namespace does not map: it could not create a file (EOVERFLOW), and the
 * monitor would lose CAP_KILL there across its exec.
 */
void px_become_userns_root(const struct px_config *cfg, int joined)
{
    if (!(cfg->clone_flags & CLONE_NEWUSER) && !joined)
        return;
    if (syscall(SYS_setgroups, 0, NULL) < 0 || syscall(SYS_setresgid, 0, 0, 0) < 0 ||
        syscall(SYS_setresuid, 0, 0, 0) < 0)
        px_fail(PX_STEP_SETUID, errno, "root of the user namespace");
    /* The uid change made us non-dumpable, which gives our /proc files to the
     * host's root: the task could not write its own oom_score_adj. The init
     * turns this off again once the task runs (harden_init). */
    prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
}

/* ------------------------------------------------------------------------ */
/* Stage: network — bring up loopback in a fresh net namespace.              */
/* ------------------------------------------------------------------------ */

static void loopback_up(void)
{
    struct ifreq ifr;
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        px_fail(PX_STEP_LOOPBACK, errno, "lo");
    memset(&ifr, 0, sizeof ifr);
    px_str_copy(ifr.ifr_name, sizeof ifr.ifr_name, "lo");
    if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
        px_fail(PX_STEP_LOOPBACK, errno, "lo");
    ifr.ifr_flags |= IFF_UP;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
        px_fail(PX_STEP_LOOPBACK, errno, "lo");
    close(s);
}

/* (Stage: mounts — csrc/mounts.c, px_run_mount_ops.) */

/* ------------------------------------------------------------------------ */
/* Stage: the init — start the task, hold nothing of the caller's.           */
/* ------------------------------------------------------------------------ */

/*
 * The init runs in the caller's memory (or a copy of it) until it execs the
 * monitor: harden_init makes it hold as little as possible meanwhile. Not
 * dumpable (no ptrace or /proc/1/mem for the task); its capabilities stay
 * until the exec, which leaves the monitor only the bounding set, CAP_KILL:
 * enough to forward signals to a task running as another user.
 */

/* Overwrite [start, end) of our memory with text (NULL: zeros); 0, 0: skip. */
static void blank(uint64_t start, uint64_t end, const char *text)
{
    if (start == 0 || end <= start)
        return;
    char *area = (char *)(uintptr_t)start;
    size_t len = (size_t)(end - start);
    memset(area, 0, len);
    if (text)
        px_str_copy(area, len, text);
}

static void harden_init(const struct px_launch *l)
{
    const struct px_config *cfg = l->cfg;
    /* Nobody may read or write our memory (a copy of the caller's, or the
     * caller's own) until our exec: the task already made it non-dumpable
     * before its exec (csrc/task.c), this covers a task that failed. With
     * shared memory the parent puts the caller's flag back after our exec. */
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    for (int cap = 0; cap <= cfg->last_cap && cap < 64; cap++)
        if (cap != CAP_KILL)
            prctl(PR_CAPBSET_DROP, cap, 0, 0, 0);
    struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof data);
    if (syscall(SYS_capget, &hdr, data) < 0)
        _exit(125);
    /* Until the exec we keep our capabilities: a task holding fewer can
     * neither ptrace nor read this process (and the caller's memory it may
     * share). The exec then leaves the monitor the bounding set, CAP_KILL,
     * and only if we had it: a caller without it (not root, the universal
     * executor) cannot gain it, and its init needs none. A caller that is
     * not root keeps CAP_KILL across the exec as an ambient capability. */
    uint32_t keep = data[0].permitted & (1u << CAP_KILL);
    data[0].inheritable = keep;
    data[1].inheritable = 0;
    if (syscall(SYS_capset, &hdr, data) < 0)
        _exit(125);
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
    if (keep && geteuid() != 0)
        prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_KILL, 0, 0);
    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
}

/* The task's stack while it borrows the init's memory (CLONE_VM|CLONE_VFORK)
 * until its exec, when the init is a copy of the caller. An init that shares
 * the caller's memory gives it a part of its own mapped stack instead: two
 * threads may launch at once. */
static char task_stack[64 * 1024] __attribute__((aligned(16)));

static int task_entry(void *cfg)
{
    px_run_task((const struct px_config *)cfg); /* resets the blocked mask before exec */
}

/* ------------------------------------------------------------------------ */
/* Stage: become the monitor.                                                */
/* ------------------------------------------------------------------------ */

/*
 * The init runs in the caller's memory (or a copy of it); the monitor
 * (csrc/monitor.c) is a small program of its own, so the task's parent costs
 * tens of KB and holds nothing of the caller's. Its inputs go to fixed fds
 * (PX_MON_FD_*), everything else is closed; the executable is reached by fd
 * because after pivot_root its path is gone. The error pipe stays open
 * (close-on-exec) until the exec: a failure is reported like any other step,
 * and its EOF tells the parent that task and monitor both run.
 */
static char *fmt_u64(char *buf, size_t cap, uint64_t value)
{
    char *p = buf + cap - 1;
    *p = '\0';
    do {
        *--p = (char)('0' + value % 10);
        value /= 10;
    } while (value && p > buf);
    return p;
}

static void __attribute__((noreturn)) exec_monitor(const struct px_config *cfg, pid_t task, int status_fd,
                                                   int flags, int with_inputs)
{
    int parked[PX_MON_FD_LIFELINE - PX_MON_FD_STATUS + 1];
    int n = (int)(sizeof parked / sizeof parked[0]);
    for (int i = 0; i < n; i++) {
        int src = !with_inputs ? -1 : i == 0 ? status_fd : cfg->monitor_fds[i];
        parked[i] = src >= 0 ? fcntl(src, F_DUPFD_CLOEXEC, 64) : -1;
        if (src >= 0 && parked[i] < 0)
            px_fail(PX_STEP_MONITOR, errno, "fcntl");
    }
    int exe = fcntl(cfg->monitor_exe_fd, F_DUPFD_CLOEXEC, 64);
    int err = fcntl(px_error_fd(), F_DUPFD_CLOEXEC, 64);
    if (exe < 0 || err < 0)
        px_fail(PX_STEP_MONITOR, errno, "fcntl");
    syscall(SYS_close_range, 3U, 63U, 0);
    px_set_error_fd(dup3(err, PX_MON_FD_LIFELINE + 2, O_CLOEXEC)); /* failures report there from now on */
    for (int i = 0; i < n; i++)
        if (parked[i] >= 0 && dup2(parked[i], PX_MON_FD_STATUS + i) < 0)
            px_fail(PX_STEP_MONITOR, errno, "dup2");
    if (dup3(exe, PX_MON_FD_LIFELINE + 1, O_CLOEXEC) < 0 || px_error_fd() < 0)
        px_fail(PX_STEP_MONITOR, errno, "dup3");
    syscall(SYS_close_range, (unsigned)PX_MON_FD_LIFELINE + 3, ~0U, 0);

    char pid_buf[24], flags_buf[24], size_buf[24], files_buf[24];
    char *argv[] = {
        "pyexec-monitor",
        fmt_u64(pid_buf, sizeof pid_buf, (uint64_t)task),
        fmt_u64(flags_buf, sizeof flags_buf, (uint64_t)flags),
        (char *)(cfg->log_name ? cfg->log_name : "task"),
        fmt_u64(size_buf, sizeof size_buf, cfg->log_max_size),
        fmt_u64(files_buf, sizeof files_buf, (uint64_t)cfg->log_max_files),
        NULL,
    };
    char *envp[] = {NULL};
    syscall(SYS_execveat, PX_MON_FD_LIFELINE + 1, "", argv, envp, AT_EMPTY_PATH);
    px_fail(PX_STEP_MONITOR, errno, "pyexec-monitor");
}

/* ------------------------------------------------------------------------ */
/* Stage: join a running task (exec into it).                                */
/* ------------------------------------------------------------------------ */

/*
 * Instead of namespaces, hostname and mounts. One setns() on the task's pidfd
 * joins all of cfg->clone_flags at once (kernel >= 5.8); with the mount
 * namespace comes the namespace's root, which is the root the task pivoted
 * into, and cwd "/".
 *
 * A joined pid namespace holds only our future children. The command's
 * orphans go to the nearest subreaper *in their own pid namespace*, else to
 * that namespace's pid 1 (the task's monitor), so an init left on the host
 * side could never adopt (nor, reading the task's /proc, even list) what the
 * command daemonised. So with CLONE_NEWPID we fork once more:
 *
 *   caller -> this process (host pid ns) ............ execs pyexec-monitor, flags 0,
 *               |                                     no inputs: waits for the one
 *               |                                     below, forwards signals to it
 *               `-> the exec's init (task's pid ns) -> returns here, goes on as the
 *                                                      init: subreaper, the command,
 *                                                      pyexec-monitor with the status
 *                                                      pipe and the lifeline
 *
 * The caller reaps the outer process; the inner one's monitor reports the
 * command's status through the status pipe and, when the lifeline hangs up,
 * kills the command's group and everything it adopted.
 */
static void join_task(const struct px_launch *l)
{
    const struct px_config *cfg = l->cfg;
    uint64_t ns = cfg->clone_flags & PX_NS_FLAGS;
    if (ns && setns(cfg->join_pidfd, (int)ns) < 0)
        px_fail(PX_STEP_SETNS, errno, "setns");
    px_become_userns_root(cfg, 0); /* a joined user namespace: its root, like the task's init */
    if (!(ns & CLONE_NEWPID))
        return; /* we share the command's pid namespace: we can be its init */
    /* A plain fork by raw syscall (glibc's fork runs atfork handlers). */
    pid_t inner = (pid_t)syscall(SYS_clone, (unsigned long)SIGCHLD, 0UL, NULL, NULL, 0UL);
    if (inner < 0)
        px_fail(PX_STEP_FORK, errno, "fork into the task's pid namespace");
    if (inner == 0)
        return;
    harden_init(l);
    exec_monitor(cfg, inner, -1, 0, 0);
}

/* ------------------------------------------------------------------------ */
/* The child's course: the stages above, in the order of the diagram.        */
/* ------------------------------------------------------------------------ */

static void wait_for_go(int sync_fd)
{
    char go = 0;
    ssize_t n;
    do
        n = read(sync_fd, &go, 1);
    while (n < 0 && errno == EINTR);
    if (n != 1 || go != PX_GO)
        _exit(1); /* the parent gave up or died: start nothing */
    close(sync_fd);
}

static void __attribute__((noreturn)) child_main(const struct px_launch *l)
{
    const struct px_config *cfg = l->cfg;
    int sync_fd = l->sync_fd;
    int joining = cfg->join_pidfd >= 0;
    /* hold_task: the parent's cgroup placement overlaps our namespaces and
     * mounts; only the task must not start before it is done. A joining child
     * has no such work, and it forks once more below: it waits first, so
     * that its fork is born in the cgroups it was placed in. */
    int hold = cfg->hold_task && !cfg->wait_for_parent && !joining;
    if (cfg->wait_for_parent || (joining && cfg->hold_task))
        wait_for_go(sync_fd);
    sigset_t all;
    sigfillset(&all);
    /* The hold ends the launch by closing the error pipe, which an init
     * would hold open until its own exec. */
    if (cfg->start_fd >= 0 && (cfg->use_init || joining))
        px_fail(PX_STEP_START, EINVAL, "start_fd needs use_init = 0");
    if (joining) {
        /* Exec into a running task: its namespaces instead of new ones, its
         * root instead of the mount plan, which it ran long ago. */
        if (cfg->n_join_namespaces)
            px_fail(PX_STEP_SETNS, EINVAL, "join_namespaces with join_pidfd");
        sigprocmask(SIG_SETMASK, &all, NULL);
        if (!cfg->use_init)
            px_join_direct(l); /* csrc/join.c: no init, the task is ours (or our fork's) */
        join_task(l);
    } else {
        /* Namespaces by fd (csrc/namespaces.c) before anything runs here: a
         * joined user namespace first, then its root (as in a new one), the
         * others with the capabilities that gives, the mount namespace last.
         * From a new user namespace a join needs CAP_SYS_ADMIN over the
         * joined namespace's owner, which only a namespace it owns grants. */
        px_become_userns_root(cfg, px_join_user_namespace(cfg));
        px_join_namespaces(cfg);
        if (cfg->hostname && sethostname(cfg->hostname, strlen(cfg->hostname)) < 0)
            px_fail(PX_STEP_HOSTNAME, errno, cfg->hostname);
        if (cfg->domainname && setdomainname(cfg->domainname, strlen(cfg->domainname)) < 0)
            px_fail(PX_STEP_DOMAINNAME, errno, cfg->domainname);
        if (cfg->loopback_up)
            loopback_up();
        if (cfg->make_private && mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
            px_fail(PX_STEP_PROPAGATION, errno, "/");
        /* Through the host's /proc, before the mount plan replaces it; each
         * file acts on the namespace of its opener: ours (namespaces.c). */
        px_write_sysctls(cfg);
        px_run_mount_ops(cfg);

        if (hold)
            wait_for_go(sync_fd);
        if (!cfg->use_init)
            px_run_task(cfg);
    }

    sigprocmask(SIG_SETMASK, &all, NULL);
    if ((cfg->subreaper || joining) && prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0)
        px_fail(PX_STEP_FORK, errno, "prctl(PR_SET_CHILD_SUBREAPER)");
    /* Until the exec of the monitor this process shows the caller's command
     * line and environment; the task must not see them in that moment. A copy
     * of the caller blanks them; shared memory is the caller's own, so there
     * the plan has masked /proc/1/cmdline instead (the environment needs
     * ptrace rights over us, which a task with fewer capabilities lacks). */
    if (!l->shared_memory) {
        blank(cfg->caller_args[0], cfg->caller_args[1], "pyexec-init");
        blank(cfg->caller_env[0], cfg->caller_env[1], NULL);
    }
    /* vfork-style: the task borrows the init's memory until it execs, so it
     * never copies (nor is charged for) the caller's page tables and heap. */
    char *stack = l->task_stack ? l->task_stack : task_stack + sizeof task_stack;
    pid_t task = clone(task_entry, stack, CLONE_VM | CLONE_VFORK | SIGCHLD, (void *)cfg);
    if (task < 0)
        px_fail(PX_STEP_FORK, errno, "clone");

    harden_init(l);
    /* An exec's init is never pid 1 (the task's monitor is): it must not kill(-1). */
    int flags = joining ? PX_MON_SUBREAPER
                        : getpid() == 1 ? PX_MON_PID1 : (cfg->subreaper ? PX_MON_SUBREAPER : 0);
    exec_monitor(cfg, task, l->status_fd, flags, 1);
}

int px_child_start(void *arg)
{
    const struct px_launch *l = arg;
    for (int i = 0; i < 3; i++)
        if (l->close_fds[i] >= 0)
            close(l->close_fds[i]);
    child_main(l);
}
