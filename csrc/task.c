/*
 * task.c — the child's last stage: the task's own process, from its clone to
 * its exec. It runs in the memory of its init (CLONE_VM|CLONE_VFORK, see
 * nsenter.c), so, like the rest of the child, it allocates nothing and takes
 * no locks; a failing step reports through px_fail() (csrc/error.c); the
 * seccomp filter is csrc/seccomp.c's.
 *
 * Order matters: the bounding set needs CAP_SETPCAP, so it goes before the
 * user switch; capabilities after it (keepcaps); no_new_privs, then the signal
 * dispositions and the fds; the seccomp filter last, since it may forbid what
 * the steps before need (or first, without no_new_privs: see px_run_task).
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
        if (cfg->stdio[i] >= 0 && (tmp[i] = fcntl(cfg->stdio[i], F_DUPFD_CLOEXEC, 3)) < 0)
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

static void reset_signals(void)
{
    struct sigaction dfl;
    sigset_t none;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    /* Ignored signals survive exec (Python ignores SIGPIPE): put every one back. */
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            sigaction(sig, &dfl, NULL);
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
}

static void exec_search(const struct px_config *cfg)
{
    const char *prog = cfg->program;
    if (strchr(prog, '/')) {
        execve(prog, cfg->argv, cfg->envp);
        px_fail(PX_STEP_EXEC, errno, prog);
    }
    /* execvpe's rules, without its allocations: EACCES wins over ENOENT. */
    char buf[4096];
    size_t plen = strlen(prog);
    int saved = ENOENT;
    const char *p = cfg->search_path ? cfg->search_path : "/usr/bin:/bin";
    while (1) {
        const char *end = strchr(p, ':');
        size_t dlen = end ? (size_t)(end - p) : strlen(p);
        if (dlen + plen + 2 <= sizeof buf) {
            size_t n = 0;
            if (dlen == 0)
                buf[n++] = '.';
            memcpy(buf + n, p, dlen);
            n += dlen;
            buf[n++] = '/';
            memcpy(buf + n, prog, plen + 1);
            execve(buf, cfg->argv, cfg->envp);
            if (errno == EACCES)
                saved = EACCES;
            else if (errno != ENOENT && errno != ENOTDIR && errno != ENAMETOOLONG)
                px_fail(PX_STEP_EXEC, errno, buf);
        }
        if (!end)
            break;
        p = end + 1;
    }
    px_fail(PX_STEP_EXEC, saved, prog);
}

void px_run_task(const struct px_config *cfg)
{
    if (setsid() < 0)
        px_fail(PX_STEP_SETSID, errno, "setsid");
    setup_stdio(cfg);
    /* A pty slave on 0 becomes the controlling terminal of the new session. */
    if (cfg->set_ctty && ioctl(0, TIOCSCTTY, 0) < 0)
        px_fail(PX_STEP_STDIO, errno, "TIOCSCTTY");
    if (cfg->set_oom_score)
        write_oom_score(cfg->oom_score_adj);
    for (int i = 0; i < cfg->n_rlimits; i++) {
        struct rlimit rl = {cfg->rlimits[i].soft, cfg->rlimits[i].hard};
        if (setrlimit(cfg->rlimits[i].resource, &rl) < 0)
            px_fail(PX_STEP_RLIMIT, errno, cfg->rlimits[i].name);
    }
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
    if (cfg->set_caps)
        set_capabilities(cfg);
    if (cfg->no_new_privs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        px_fail(PX_STEP_NO_NEW_PRIVS, errno, "prctl");
    reset_signals();
    /* Anything a library opened without O_CLOEXEC must not reach the task. */
    syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC);
    /* The memory we borrow stays the init's until it execs the monitor, and
     * maybe the caller's (spawn.c): from our exec on, the task's code runs,
     * and it must not read or write that memory (ptrace, /proc/1/mem). Our
     * exec computes the task's own flag afresh. Before the filter, which
     * may forbid prctl. */
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    if (!early_seccomp && cfg->seccomp_filter && cfg->seccomp_len > 0)
        px_load_seccomp(cfg);
    exec_search(cfg);
    _exit(127); /* not reached */
}
