/*
 * monitor.c — pyexec-monitor, the parent of every task for its whole life.
 *
 * The shim's init execs this program right after the task execs (see the
 * diagram in nsenter.c), so the process that outlives the caller is a few
 * hundred KB of C, not a copy of a Python interpreter. It owns:
 *
 *   - the task's exit status: reaped here, written atomically to exit.json in
 *     the task's state directory (for callers that reattach later) and as a
 *     px_exit record to the status pipe (for the caller that launched it);
 *   - signal forwarding: every signal it gets goes to the task;
 *   - the logs: the task's stdout/stderr pipes into rotated files (logmon.c);
 *   - containment: when the task ends, nothing of it may stay. As pid 1 of
 *     the task's pid namespace it kills everything in it (kill(-1)); as a
 *     child subreaper on the host it kills the task's process group and every
 *     process it adopted. Only then are the pipes drained to their end (the
 *     last writers are dead) and the status published, so no output is lost;
 *   - kill_on_caller_exit: the caller holds the write end of a lifeline pipe;
 *     when the caller dies the pipe hangs up and the task is killed.
 *
 *   usage (by the shim only): pyexec-monitor TASK_PID FLAGS LOG_NAME LOG_MAX_SIZE LOG_MAX_FILES
 *   inputs at fixed fds PX_MON_FD_* (pyexec.h); a closed fd means "not used".
 *
 * It starts with every signal blocked (inherited from the init) and takes
 * them from a signalfd. It never exits before the task is reaped.
 */
#define _GNU_SOURCE
#include "logmon.h"
#include "pyexec.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (64 * 1024)
#define PIPE_BUFFER (1024 * 1024) /* the bounded buffer between task and disk */
#define DRAIN_IDLE_MS 2000        /* stop draining when a pipe stays silent this long */

struct stream {
    int fd;                       /* read end of the task's pipe, -1 when done */
    struct px_log log;
    int log_open;
};

static pid_t task_pid;
static int flags;
static struct stream streams[2];
/* Which PX_MON_FD_* we were given: looked at once, before any open() of ours
 * could take a free number and pass for one of them. */
static int given[PX_MON_FD_LIFELINE + 1];

static int fd_open(int fd)
{
    return given[fd];
}

/* Move whatever the pipe holds now into the log; returns 0 at EOF or error. */
static int pump(struct stream *s)
{
    static char buf[CHUNK];
    ssize_t n;
    do
        n = read(s->fd, buf, sizeof buf);
    while (n < 0 && errno == EINTR);
    if (n > 0) {
        if (s->log_open)
            px_log_write(&s->log, buf, (size_t)n);
        return 1;
    }
    if (n < 0 && errno == EAGAIN)
        return 1;
    close(s->fd);
    s->fd = -1;
    return 0;
}

/* Everything of the task dies: the namespace, or the group and the adoptees. */
static void kill_the_rest(void)
{
    if (flags & PX_MON_PID1) {
        kill(-1, SIGKILL); /* as pid 1: every other process of the namespace */
        return;
    }
    if (!(flags & PX_MON_SUBREAPER))
        return;
    kill(-task_pid, SIGKILL); /* the task called setsid: its group is its pid */
    int fd = open("/proc/thread-self/children", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    char buf[4096];
    ssize_t n;
    pid_t pid = 0;
    while ((n = read(fd, buf, sizeof buf)) > 0) {
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] >= '0' && buf[i] <= '9') {
                pid = pid * 10 + (buf[i] - '0');
            } else if (pid > 0) {
                kill(pid, SIGKILL);
                pid = 0;
            }
        }
    }
    if (pid > 0)
        kill(pid, SIGKILL);
    close(fd);
}

/* Kill and reap until no child is left: adoptees of the killed come to us in turn. */
static void reap_everything(void)
{
    for (int round = 0; round < 100000; round++) {
        kill_the_rest();
        if (waitpid(-1, NULL, __WALL) < 0 && errno == ECHILD)
            return;
    }
}

static void drain(void)
{
    for (;;) {
        struct pollfd p[2];
        int n = 0;
        for (int i = 0; i < 2; i++)
            if (streams[i].fd >= 0)
                p[n++] = (struct pollfd){.fd = streams[i].fd, .events = POLLIN};
        if (n == 0)
            return;
        int ready = poll(p, (nfds_t)n, DRAIN_IDLE_MS);
        if (ready < 0 && errno == EINTR)
            continue;
        if (ready <= 0)
            return; /* a writer outside the task holds a pipe: do not wait for it */
        for (int i = 0; i < n; i++)
            if (p[i].revents)
                for (int j = 0; j < 2; j++)
                    if (streams[j].fd == p[i].fd)
                        pump(&streams[j]);
    }
}

static double now_realtime(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* exit.json, written to a temporary name and renamed: readers see all or nothing. */
static void write_exit_record(int status, const struct rusage *ru, double finished_at)
{
    if (!fd_open(PX_MON_FD_STATE))
        return;
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    char sig[16] = "null";
    if (WIFSIGNALED(status))
        snprintf(sig, sizeof sig, "%d", WTERMSIG(status));
    uint64_t dropped = 0;
    for (int i = 0; i < 2; i++)
        if (streams[i].log_open)
            dropped += streams[i].log.dropped;
    char text[512];
    int len = snprintf(text, sizeof text,
                       "{\"status\": %d, \"exit_code\": %d, \"signal\": %s, \"utime_us\": %lld, "
                       "\"stime_us\": %lld, \"finished_at\": %.6f, \"log_bytes_dropped\": %llu}\n",
                       status, code, sig,
                       (long long)ru->ru_utime.tv_sec * 1000000 + ru->ru_utime.tv_usec,
                       (long long)ru->ru_stime.tv_sec * 1000000 + ru->ru_stime.tv_usec,
                       finished_at, (unsigned long long)dropped);
    int fd = openat(PX_MON_FD_STATE, "exit.json.tmp", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return;
    ssize_t unused = write(fd, text, (size_t)len);
    (void)unused;
    close(fd); /* no fsync: the state lives on /run (tmpfs) and a reboot voids the task anyway */
    renameat(PX_MON_FD_STATE, "exit.json.tmp", PX_MON_FD_STATE, "exit.json");
}

static void publish(int status, const struct rusage *ru)
{
    double finished_at = now_realtime();
    write_exit_record(status, ru, finished_at);
    struct px_exit rec;
    memset(&rec, 0, sizeof rec);
    rec.status = status;
    rec.utime_us = (int64_t)ru->ru_utime.tv_sec * 1000000 + ru->ru_utime.tv_usec;
    rec.stime_us = (int64_t)ru->ru_stime.tv_sec * 1000000 + ru->ru_stime.tv_usec;
    if (fd_open(PX_MON_FD_STATUS)) {
        ssize_t unused = write(PX_MON_FD_STATUS, &rec, sizeof rec); /* EPIPE: nobody listens */
        (void)unused;
    }
}

static void open_logs(const char *name, uint64_t max_size, int max_files)
{
    static const char *const suffix[2] = {".stdout", ".stderr"};
    int have_dir = fd_open(PX_MON_FD_LOGDIR);
    for (int i = 0; i < 2; i++) {
        struct stream *s = &streams[i];
        s->fd = fd_open(PX_MON_FD_STDOUT + i) ? PX_MON_FD_STDOUT + i : -1;
        if (s->fd < 0)
            continue;
        fcntl(s->fd, F_SETPIPE_SZ, PIPE_BUFFER); /* best effort: capped by pipe-max-size */
        fcntl(s->fd, F_SETFL, fcntl(s->fd, F_GETFL) | O_NONBLOCK);
        char base[256];
        snprintf(base, sizeof base, "%s%s", name, suffix[i]);
        if (have_dir && px_log_open(&s->log, PX_MON_FD_LOGDIR, base, max_size, max_files) == 0)
            s->log_open = 1;
    }
}

int main(int argc, char **argv)
{
    if (argc != 6)
        return 125;
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0); /* exec made us dumpable again */
    for (int fd = PX_MON_FD_STATUS; fd <= PX_MON_FD_LIFELINE; fd++)
        given[fd] = fcntl(fd, F_GETFD) >= 0;
    task_pid = (pid_t)strtol(argv[1], NULL, 10);
    flags = (int)strtol(argv[2], NULL, 10);
    open_logs(argv[3], strtoull(argv[4], NULL, 10), (int)strtol(argv[5], NULL, 10));

    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL); /* inherited already; be sure */
    int sfd = signalfd(-1, &all, SFD_CLOEXEC);
    int lifeline = fd_open(PX_MON_FD_LIFELINE) ? PX_MON_FD_LIFELINE : -1;
    int status = 0, reaped = 0;
    struct rusage ru;
    memset(&ru, 0, sizeof ru);

    while (!reaped) {
        struct pollfd p[4];
        int n = 0;
        p[n++] = (struct pollfd){.fd = sfd, .events = POLLIN};
        for (int i = 0; i < 2; i++)
            if (streams[i].fd >= 0)
                p[n++] = (struct pollfd){.fd = streams[i].fd, .events = POLLIN};
        if (lifeline >= 0)
            p[n++] = (struct pollfd){.fd = lifeline, .events = POLLIN};
        if (poll(p, (nfds_t)n, -1) < 0)
            continue; /* EINTR */
        for (int i = 1; i < n; i++) {
            if (!p[i].revents)
                continue;
            if (p[i].fd == lifeline) {
                /* The caller is gone (its end closed): the task goes too. */
                kill_the_rest();
                kill(task_pid, SIGKILL);
                close(lifeline);
                lifeline = -1;
                continue;
            }
            for (int j = 0; j < 2; j++)
                if (streams[j].fd == p[i].fd)
                    pump(&streams[j]);
        }
        if (!p[0].revents)
            continue;
        struct signalfd_siginfo info;
        if (read(sfd, &info, sizeof info) != sizeof info)
            continue;
        if (info.ssi_signo != SIGCHLD) {
            kill(task_pid, (int)info.ssi_signo);
            continue;
        }
        pid_t pid;
        int st;
        struct rusage r;
        while ((pid = wait4(-1, &st, WNOHANG | __WALL, &r)) > 0) {
            if (pid == task_pid) {
                status = st;
                ru = r;
                reaped = 1;
            }
        }
    }
    reap_everything();
    drain();
    for (int i = 0; i < 2; i++)
        if (streams[i].log_open)
            px_log_close(&streams[i].log);
    publish(status, &ru);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
