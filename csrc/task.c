/*
 * task.c — the child's last stage: the task's own process, from its clone to
 * its exec. It runs in the memory of its init (CLONE_VM|CLONE_VFORK, see
 * nsenter.c), or is the cloned child itself (use_init = 0), so, like the rest
 * of the child, it allocates nothing and takes no locks; a failing step
 * reports through px_fail() (csrc/error.c). It calls only that, the seccomp
 * load (csrc/seccomp.c) and, for a console socket, px_setup_console
 * (csrc/console.c) in place of its stdio.
 *
 * Order matters: the bounding set needs CAP_SETPCAP, so it goes before the
 * user switch; capabilities after it (keepcaps); no_new_privs, then the signal
 * dispositions and the fds; with start_fd the hold (hold_for_start) after all
 * of them; the seccomp filter last, since it may forbid what the steps before
 * need, read() of the hold included (or first, without no_new_privs: see
 * px_run_task); personality before either place of the filter.
 */
#define _GNU_SOURCE
#define PX_SHIM_INTERNAL
#include "pyexec.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Stage: the task's own process — credentials, limits, exec.                */
/* ------------------------------------------------------------------------ */

static void setup_stdio(const struct px_config *cfg)
{
    int tmp[3];
    /* Lift all three above 2 first so one never overwrites another's source. */
    for (int i = 0; i < 3; i++) {
        tmp[i] = -1;
        /* Above the preserved fds: a copy in their range would keep its number open. */
        if (cfg->stdio[i] >= 0 && (tmp[i] = fcntl(cfg->stdio[i], F_DUPFD_CLOEXEC, 3 + cfg->preserve_fds)) < 0)
            px_fail(PX_STEP_STDIO, errno, "dup");
    }
    for (int i = 0; i < 3; i++)
        if (tmp[i] >= 0 && dup2(tmp[i], i) < 0)
            px_fail(PX_STEP_STDIO, errno, "dup2");
}

static void write_oom_score(int value)
{
    char buf[16];
    int n = 0, neg = value < 0;
    unsigned v = neg ? (unsigned)(-value) : (unsigned)value;
    char digits[12];
    int d = 0;
    do {
        digits[d++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    if (neg)
        buf[n++] = '-';
    while (d)
        buf[n++] = digits[--d];
    int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, buf, n) != n)
        px_fail(PX_STEP_OOM_SCORE, errno, "/proc/self/oom_score_adj");
    close(fd);
}

static void set_capabilities(const struct px_config *cfg)
{
    struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    data[0].effective = (uint32_t)cfg->cap_effective;
    data[1].effective = (uint32_t)(cfg->cap_effective >> 32);
    data[0].permitted = (uint32_t)cfg->cap_permitted;
    data[1].permitted = (uint32_t)(cfg->cap_permitted >> 32);
    data[0].inheritable = (uint32_t)cfg->cap_inheritable;
    data[1].inheritable = (uint32_t)(cfg->cap_inheritable >> 32);
    if (syscall(SYS_capset, &hdr, data) < 0)
        px_fail(PX_STEP_CAPS, errno, "capset");
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
        px_fail(PX_STEP_CAPS, errno, "ambient");
    for (int cap = 0; cap <= cfg->last_cap && cap < 64; cap++)
        if ((cfg->cap_ambient >> cap) & 1)
            if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0) < 0)
                px_fail(PX_STEP_CAPS, errno, "ambient raise");
}

static void drop_bounding_set(const struct px_config *cfg)
{
    for (int cap = 0; cap <= cfg->last_cap && cap < 64; cap++)
        if (!((cfg->cap_bounding >> cap) & 1))
            if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL)
                px_fail(PX_STEP_CAPS, errno, "bounding set");
}

/* Raw syscalls: glibc's set*id wrappers signal every thread the parent had, which do not exist here. */
static void switch_user(const struct px_config *cfg)
{
    if (cfg->set_caps && cfg->uid != 0 && prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0)
        px_fail(PX_STEP_CAPS, errno, "keepcaps");
    if (syscall(SYS_setgroups, (size_t)cfg->n_groups, cfg->groups) < 0)
        px_fail(PX_STEP_SETGROUPS, errno, "setgroups");
    if (syscall(SYS_setresgid, cfg->gid, cfg->gid, cfg->gid) < 0)
        px_fail(PX_STEP_SETGID, errno, "setresgid");
    if (syscall(SYS_setresuid, cfg->uid, cfg->uid, cfg->uid) < 0)
        px_fail(PX_STEP_SETUID, errno, "setresuid");
}

/*
 * Every disposition back to SIG_DFL and an empty mask: an ignored signal
 * survives execve (CPython ignores SIGPIPE and SIGXFSZ at start-up), and so
 * does the mask (ours is full since nsenter.c). By raw syscalls: glibc's
 * wrappers refuse its own two signals (32 and 33), which a copy of the caller
 * could have had ignored all the same. SIG_DFL is 0, so the kernel's struct
 * sigaction is all zeros, whatever its layout on this architecture.
 */
static void reset_signals(void)
{
    unsigned long dfl[8];
    uint64_t none = 0;
    memset(dfl, 0, sizeof dfl);
    for (int sig = 1; sig <= 64; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            syscall(SYS_rt_sigaction, sig, dfl, NULL, sizeof none);
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &none, NULL, sizeof none);
}

/*
 * One candidate of the program: 0 if an execve of it would start, else the
 * errno it would fail with, as far as the file tells (a bad format is only
 * found by the exec itself): a regular file we may execute (X_OK with our
 * effective ids and capabilities, which also refuses a noexec mount).
 */
static int check_program(const char *path)
{
    struct stat st;
    if (stat(path, &st) < 0)
        return errno;
    if (!S_ISREG(st.st_mode))
        return EACCES;
    /* The old faccessat(2), not glibc's faccessat (faccessat2, Linux 5.8):
     * without no_new_privs the container's seccomp filter is already loaded
     * here, and a profile written before faccessat2 refuses it with EPERM,
     * which glibc does not fall back from. The user switch made the real ids
     * the effective ones, so the old call's real-id check is the same. A
     * filter that refuses even that leaves the mode bits to go by. */
    if (syscall(SYS_faccessat, AT_FDCWD, path, X_OK) == 0)
        return 0;
    if (errno != EPERM && errno != ENOSYS)
        return errno;
    return (st.st_mode & 0111) ? 0 : EACCES;
}

/*
 * The path the exec runs: execvpe's rules without its allocations. A name
 * with a '/' is taken as it is; else each directory of search_path in turn
 * (an empty one is "."), in buf, skipping ENOENT, ENOTDIR and ENAMETOOLONG,
 * EACCES remembered and winning over ENOENT, any other error ending the
 * search. With exec = 1 each candidate is exec'd (this returns only when none
 * started), else checked (check_program): the first good one is returned.
 * NULL: none, with the errno in *err and the name it fails on in *what.
 */
static const char *search(const struct px_config *cfg, char *buf, size_t cap, int exec, int *err,
                          const char **what)
{
    const char *prog = cfg->program;
    *what = prog;
    if (strchr(prog, '/')) {
        if (exec)
            execve(prog, cfg->argv, cfg->envp);
        *err = exec ? errno : check_program(prog);
        return *err ? NULL : prog;
    }
    size_t plen = strlen(prog);
    int saved = ENOENT;
    const char *p = cfg->search_path ? cfg->search_path : "/usr/bin:/bin";
    while (1) {
        const char *end = strchr(p, ':');
        size_t dlen = end ? (size_t)(end - p) : strlen(p);
        if (dlen + plen + 2 <= cap) {
            size_t n = 0;
            if (dlen == 0)
                buf[n++] = '.';
            memcpy(buf + n, p, dlen);
            n += dlen;
            buf[n++] = '/';
            memcpy(buf + n, prog, plen + 1);
            if (exec)
                execve(buf, cfg->argv, cfg->envp);
            int e = exec ? errno : check_program(buf);
            if (e == 0)
                return buf;
            if (e == EACCES)
                saved = EACCES;
            else if (e != ENOENT && e != ENOTDIR && e != ENAMETOOLONG) {
                *err = e;
                *what = buf;
                return NULL;
            }
        }
        if (!end)
            break;
        p = end + 1;
    }
    *err = saved;
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Stage: the hold before the exec (start_fd).                               */
/* ------------------------------------------------------------------------ */

/*
 * The caller's launch ends here. The program is resolved first, so that a
 * missing one fails the launch like any exec (OCI: create fails when args[0]
 * is not found); then the error pipe closes, which px_spawn reads as
 * launched. Every fd the exec would close goes now too, start_fd kept: the
 * hold may be long, and copies of the caller's pipes must not keep them open
 * meanwhile. Then one byte on start_fd releases the task; EOF or an error
 * ends it. From the close of the error pipe on nobody hears a failure, and
 * stdout/stderr are the container's: any failure exits 127, silently
 * (px_fail writes nothing without an error fd). Returns the path to exec.
 */
static const char *hold_for_start(const struct px_config *cfg, char *buf, size_t cap)
{
    int err = 0;
    const char *what;
    const char *path = search(cfg, buf, cap, 0, &err, &what);
    if (!path)
        px_fail(PX_STEP_EXEC, err, what);
    close(px_error_fd());
    px_set_error_fd(-1);
    /* The preserved fds stay; start_fd is above them (keep_fds checked it). */
    unsigned fd = (unsigned)cfg->start_fd, first = 3U + (unsigned)cfg->preserve_fds;
    if (fd > first)
        syscall(SYS_close_range, first, fd - 1, 0);
    syscall(SYS_close_range, fd >= first ? fd + 1 : first, ~0U, 0);
    char byte;
    ssize_t n;
    do
        n = read((int)fd, &byte, 1);
    while (n < 0 && errno == EINTR);
    if (n != 1)
        _exit(127);
    /* start_fd stays open, close-on-exec: the exec itself closes it, and the
     * starter, polling its write end, sees the last reader go (POLLERR) only
     * once the program runs; so poststart hooks never run before it. */
    return path;
}

/*
 * Anything a library opened without O_CLOEXEC must not reach the task; the
 * preserved fds (3..3+preserve_fds-1, OCI --preserve-fds) must, even if the
 * caller has them close-on-exec. A shim fd still needed (the error pipe,
 * start_fd) inside that range would reach the task or be lost: refused.
 */
static void keep_fds(const struct px_config *cfg)
{
    int first = 3 + cfg->preserve_fds;
    if (cfg->preserve_fds > 0) {
        int err = px_error_fd();
        if ((err >= 3 && err < first) || (cfg->start_fd >= 3 && cfg->start_fd < first))
            px_fail(PX_STEP_STDIO, EBADF, "a shim fd among the preserved fds");
    }
    syscall(SYS_close_range, (unsigned)first, ~0U, CLOSE_RANGE_CLOEXEC);
    for (int fd = 3; fd < first; fd++)
        if (fcntl(fd, F_SETFD, 0) < 0 && errno != EBADF)
            px_fail(PX_STEP_STDIO, errno, "preserved fd");
}

void px_run_task(const struct px_config *cfg)
{
    if (setsid() < 0)
        px_fail(PX_STEP_SETSID, errno, "setsid");
    if (cfg->console_socket_fd >= 0) {
        px_setup_console(cfg); /* csrc/console.c: a pty of our root's devpts, our controlling terminal */
    } else {
        setup_stdio(cfg);
        /* A pty slave on 0 becomes the controlling terminal of the new session. */
        if (cfg->set_ctty && ioctl(0, TIOCSCTTY, 0) < 0)
            px_fail(PX_STEP_STDIO, errno, "TIOCSCTTY");
    }
    if (cfg->set_oom_score)
        write_oom_score(cfg->oom_score_adj);
    for (int i = 0; i < cfg->n_rlimits; i++) {
        struct rlimit rl = {cfg->rlimits[i].soft, cfg->rlimits[i].hard};
        if (setrlimit(cfg->rlimits[i].resource, &rl) < 0)
            px_fail(PX_STEP_RLIMIT, errno, cfg->rlimits[i].name);
    }
    /* Before any filter, which may allow only some personalities (Docker's). */
    if (cfg->set_personality && syscall(SYS_personality, (unsigned long)(unsigned)cfg->personality) < 0)
        px_fail(PX_STEP_PERSONALITY, errno, "personality");
    /* Without no_new_privs the kernel takes a filter only from a holder of
     * CAP_SYS_ADMIN, which the next steps drop: then load it here (as runc
     * does), and the profile must allow those steps (the default one does). */
    int early_seccomp = !cfg->no_new_privs && cfg->seccomp_filter && cfg->seccomp_len > 0;
    if (early_seccomp)
        px_load_seccomp(cfg);
    if (cfg->set_caps)
        drop_bounding_set(cfg); /* needs CAP_SETPCAP, so before the user switch */
    if (cfg->set_user)
        switch_user(cfg);
    if (cfg->cwd && chdir(cfg->cwd) < 0)
        px_fail(PX_STEP_CHDIR, errno, cfg->cwd);
    if (cfg->set_umask)
        umask((mode_t)cfg->umask);
    if (cfg->set_caps)
        set_capabilities(cfg);
    if (cfg->no_new_privs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        px_fail(PX_STEP_NO_NEW_PRIVS, errno, "prctl");
    reset_signals();
    keep_fds(cfg);
    /* The memory we borrow stays the init's until it execs the monitor, and
     * maybe the caller's (spawn.c): from our exec on, the task's code runs,
     * and it must not read or write that memory (ptrace, /proc/1/mem). Our
     * exec computes the task's own flag afresh. Before the filter, which
     * may forbid prctl. */
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    char path[4096];
    const char *held = cfg->start_fd >= 0 ? hold_for_start(cfg, path, sizeof path) : NULL;
    if (!early_seccomp && cfg->seccomp_filter && cfg->seccomp_len > 0)
        px_load_seccomp(cfg);
    if (held) {
        execve(held, cfg->argv, cfg->envp);
        _exit(127); /* resolved before the hold; reported to nobody */
    }
    int err = 0;
    const char *what;
    search(cfg, path, sizeof path, 1, &err, &what);
    px_fail(PX_STEP_EXEC, err, what);
}
