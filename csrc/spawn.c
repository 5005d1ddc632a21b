/*
 * spawn.c — the parent side of a launch: clone, placement, release, wait.
 *
 * The child (csrc/nsenter.c) either gets a copy of the caller (fork-style
 * clone3) or, by default, runs in the caller's own memory (CLONE_VM) on a
 * stack mapped for it here, like posix_spawn's vfork but without suspending
 * the caller. Copying a Python process costs a fork of its whole address
 * space (0.5 ms for a 30 MB caller, growing with the heap), the copy-on-write
 * faults after it, and the teardown of that copy when the init execs the
 * monitor; sharing costs an mmap.
 *
 *   caller thread (px_spawn / px_finish)      child (nsenter.c)
 *   ------------------------------------      -----------------
 *   mmap its stack (guard | task | init)
 *   [a pid ns to join: setns into it]
 *   block every signal in this thread
 *   clone3(CLONE_VM|CLONE_NEW*|CLONE_PIDFD) -> px_child_start: close our pipe ends
 *   [setns back to our pid ns]
 *   [parked: return to Python, which writes      [wait_for_parent: read(sync) ... blocks]
 *    id maps or a veth; px_finish goes on]     namespaces, mounts, pivot_root
 *   write pid -> each place_path (cgroup.procs) [hold_task: read(sync) ... blocks]
 *   write(sync, PX_GO) ---------------------> vfork the task (it clears the memory's
 *                                             dumpable flag before its exec), harden,
 *                                             execveat(monitor)
 *   read(error) until EOF <----------------- the error pipe closes at both execs (a task
 *                                             without init that holds for start_fd
 *                                             closes it before its hold: task.c)
 *   munmap the stack, put the caller's dumpable flag back, restore the signal mask
 *
 * A caller whose clone3 is filtered (Docker's default seccomp profile answers
 * ENOSYS) or refused gets a copy made by clone3 or clone instead.
 *
 * While a shared-memory child runs, it shares this thread's TLS, errno
 * included, and its glibc calls write errno. So from the clone until the
 * child is parked in read(sync) or gone (EOF on the error pipe: a process
 * closes its fds only after leaving the memory, at exec or exit), this
 * thread stays here, makes only raw syscalls (px_sys*, which never touch
 * errno), and has every signal blocked (a handler would save and restore
 * errno). Python runs again only while the child is parked or after EOF.
 *
 * Error convention: px_spawn returns -errno of a failed clone (and leaves
 * nothing); later failures land in child->result: 1 with the child's record
 * in child->err, or -errno of a parent call (child->failed_place says which
 * placement file), and the child is dead or exec'd when done is set.
 */
#define _GNU_SOURCE
#define PX_SHIM_INTERNAL
#include "pyexec.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000
#endif
#ifndef CLONE_INTO_CGROUP
#define CLONE_INTO_CGROUP 0x200000000ULL
#endif

#define GUARD_SIZE (4096UL)
#define TASK_STACK_SIZE (64UL * 1024)
#define INIT_STACK_SIZE (128UL * 1024)
#define STACK_REGION (GUARD_SIZE + TASK_STACK_SIZE + GUARD_SIZE + INIT_STACK_SIZE)

/* ------------------------------------------------------------------------ */
/* Raw syscalls (x86-64): results as -errno, errno untouched.                */
/* ------------------------------------------------------------------------ */

#if defined(__x86_64__)
#define PX_CAN_SHARE_MEMORY 1

static long px_sys4(long nr, long a, long b, long c, long d)
{
    long ret;
    register long r10 __asm__("r10") = d;
    __asm__ __volatile__("syscall"
                         : "=a"(ret)
                         : "0"(nr), "D"(a), "S"(b), "d"(c), "r"(r10)
                         : "rcx", "r11", "memory");
    return ret;
}

/*
 * clone3 onto a new stack: the child starts with the stack pointer at
 * args->stack + args->stack_size and none of our frames, so it must not
 * return into C code; it calls fn(arg) and exits with its result.
 */
static long clone3_on_stack(struct clone_args *args, int (*fn)(void *), void *arg)
{
    long ret;
    register long r12 __asm__("r12") = (long)fn;
    register long r13 __asm__("r13") = (long)arg;
    __asm__ __volatile__("syscall\n\t"
                         "testq %%rax, %%rax\n\t"
                         "jnz 1f\n\t"
                         "xorl %%ebp, %%ebp\n\t"
                         "movq %%r13, %%rdi\n\t"
                         "callq *%%r12\n\t"
                         "movl %%eax, %%edi\n\t"
                         "movl %[nr_exit], %%eax\n\t"
                         "syscall\n\t"
                         "ud2\n"
                         "1:\n\t"
                         : "=a"(ret)
                         : "0"((long)SYS_clone3), "D"(args), "S"(sizeof *args), "r"(r12), "r"(r13),
                           [nr_exit] "i"(SYS_exit)
                         : "rcx", "r11", "memory", "cc");
    return ret;
}
#else
#define PX_CAN_SHARE_MEMORY 0

/* Without shared memory nothing runs on our TLS: glibc's wrapper will do. */
static long px_sys4(long nr, long a, long b, long c, long d)
{
    long ret = syscall(nr, a, b, c, d);
    return ret < 0 ? -errno : ret;
}
#endif

#define px_sys3(nr, a, b, c) px_sys4((nr), (long)(a), (long)(b), (long)(c), 0)

static void block_signals(sigset_t *saved)
{
    sigset_t all;
    memset(&all, 0xff, sizeof all);
    /* Raw: glibc's wrapper would leave its own two signals open. */
    px_sys4(SYS_rt_sigprocmask, SIG_SETMASK, (long)&all, (long)saved, 8);
}

static void restore_signals(const sigset_t *saved)
{
    px_sys4(SYS_rt_sigprocmask, SIG_SETMASK, (long)saved, 0, 8);
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        px_sys3(SYS_close, *fd, 0, 0);
    *fd = -1;
}

/* ------------------------------------------------------------------------ */
/* After the clone: placement, release, the wait for the exec.               */
/* ------------------------------------------------------------------------ */

/*
 * Read the error pipe until EOF: that is, until nothing of the child holds it
 * any more, so nothing runs in our memory either. A record means the child
 * failed; anything shorter kills it (a broken child never half-starts).
 */
static void drain(struct px_child *c)
{
    size_t got = 0;
    while (c->error_fd >= 0) {
        char scratch[64];
        char *dst = got < sizeof c->err ? (char *)&c->err + got : scratch;
        size_t want = got < sizeof c->err ? sizeof c->err - got : sizeof scratch;
        long n = px_sys3(SYS_read, c->error_fd, dst, want);
        if (n == -EINTR)
            continue;
        if (n <= 0) {
            if (n < 0 && c->result == 0)
                c->result = (int)n;
            break;
        }
        got += (size_t)n;
    }
    close_fd(&c->error_fd);
    if (got >= sizeof c->err) {
        /* The child's own report beats our failed write: it is the cause. */
        c->err.detail[sizeof c->err.detail - 1] = 0;
        c->result = 1;
        c->failed_place = -1;
    } else if (got > 0 && c->result == 0) {
        c->result = -EIO;
    }
}

static void kill_child(struct px_child *c)
{
    close_fd(&c->sync_fd); /* a parked or held child reads EOF and exits too */
    if (c->pidfd >= 0)
        px_sys4(SYS_pidfd_send_signal, c->pidfd, SIGKILL, 0, 0);
}

/*
 * A shared-memory child makes that memory non-dumpable while the task's code
 * could reach it (csrc/task.c): the caller's own dumpable flag, which is the
 * memory's. The first of overlapping shared launches keeps the caller's value,
 * the last one to end puts it back.
 */
static pthread_mutex_t dumpable_lock = PTHREAD_MUTEX_INITIALIZER;
static int shared_launches, caller_dumpable;

static void shared_enter(void)
{
    pthread_mutex_lock(&dumpable_lock);
    if (shared_launches++ == 0)
        caller_dumpable = prctl(PR_GET_DUMPABLE, 0, 0, 0, 0);
    pthread_mutex_unlock(&dumpable_lock);
}

/* A fork() in another thread while one holds the lock would leave the child
 * process a lock held forever, and a count of launches that are not its own. */
static void shared_reset_in_child(void)
{
    pthread_mutex_init(&dumpable_lock, NULL);
    shared_launches = 0;
}

static void __attribute__((constructor)) shared_register_fork(void)
{
    pthread_atfork(NULL, NULL, shared_reset_in_child);
}

static void shared_leave(void)
{
    pthread_mutex_lock(&dumpable_lock);
    if (--shared_launches == 0 && caller_dumpable >= 0)
        prctl(PR_SET_DUMPABLE, caller_dumpable, 0, 0, 0);
    pthread_mutex_unlock(&dumpable_lock);
}

/* After EOF on the error pipe: nothing of the child runs in our memory. */
static void unmap_stack(struct px_child *c)
{
    if (c->stack) {
        munmap(c->stack, (size_t)c->stack_size);
        c->stack = NULL;
        shared_leave();
    }
}

/* Wait for the exec or the failure; a failed launch leaves no process running. */
static void finish_up(struct px_child *c)
{
    if (c->result < 0)
        kill_child(c); /* our write failed: the child may wait for a go that never comes */
    drain(c);
    if (c->task_pid < 0)
        px_read_task_pid(c); /* csrc/join.c: the pid of an init-less join's fork */
    if (c->result != 0)
        kill_child(c); /* a task that failed leaves its init going on to the monitor */
    unmap_stack(c);
    c->parked = 0;
    c->done = 1;
}

static void place_and_release(const struct px_config *cfg, struct px_child *c)
{
    char digits[24], *p = digits + sizeof digits;
    unsigned long v = (unsigned long)c->pid;
    do
        *--p = (char)('0' + v % 10);
    while ((v /= 10) && p > digits);
    long len = digits + sizeof digits - p;
    for (int i = 0; i < cfg->n_place_paths; i++) {
        long fd = px_sys4(SYS_openat, AT_FDCWD, (long)cfg->place_paths[i], O_WRONLY | O_CLOEXEC, 0);
        long n = fd < 0 ? fd : px_sys3(SYS_write, fd, p, len);
        if (fd >= 0)
            px_sys3(SYS_close, fd, 0, 0);
        if (n != len) {
            c->result = n < 0 ? (int)n : -EIO;
            c->failed_place = i;
            return;
        }
    }
    if (c->sync_fd >= 0) {
        char go = PX_GO;
        long n = px_sys3(SYS_write, c->sync_fd, &go, 1);
        close_fd(&c->sync_fd);
        if (n != 1)
            c->result = n < 0 ? (int)n : -EIO;
    }
}

void px_finish(const struct px_config *cfg, struct px_child *c)
{
    if (c->done)
        return;
    sigset_t saved;
    block_signals(&saved);
    place_and_release(cfg, c);
    finish_up(c);
    restore_signals(&saved);
}

void px_abort(struct px_child *c)
{
    if (c->done)
        return;
    sigset_t saved;
    block_signals(&saved);
    if (c->result == 0)
        c->result = -ECANCELED;
    finish_up(c);
    restore_signals(&saved);
}

/* ------------------------------------------------------------------------ */
/* The clone.                                                                */
/* ------------------------------------------------------------------------ */

static void close_pair(int p[2])
{
    close_fd(&p[0]);
    close_fd(&p[1]);
}

/* A shared-memory child's stack: [guard | task stack | guard | init stack, its px_launch on top]. */
static struct px_launch *map_stack(struct px_child *out)
{
    char *base = mmap(NULL, STACK_REGION, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (base == MAP_FAILED)
        return NULL;
    if (mprotect(base, GUARD_SIZE, PROT_NONE) < 0 ||
        mprotect(base + GUARD_SIZE + TASK_STACK_SIZE, GUARD_SIZE, PROT_NONE) < 0) {
        munmap(base, STACK_REGION);
        return NULL;
    }
    out->stack = base;
    out->stack_size = STACK_REGION;
    shared_enter();
    return (struct px_launch *)(base + STACK_REGION) - 1;
}

/* ------------------------------------------------------------------------ */
/* A pid namespace to join: the launching thread's, for the clone only.      */
/* ------------------------------------------------------------------------ */

/*
 * setns(CLONE_NEWPID) moves only the caller's future children into the
 * namespace, never the caller: the child cannot join one itself (a fork more
 * would, but then the task is not the child we cloned). So this thread joins
 * it right before the clone (its pid_for_children, the thread's own) and goes
 * back right after to the one it had, kept as an fd of
 * /proc/thread-self/ns/pid_for_children; it forks nothing else meanwhile.
 * Going back is always allowed (our own pid's namespace or one below); should
 * it fail all the same, the launch fails (px_spawn). Joining a user or time
 * namespace refuses a process sharing its memory: *unshareable says so.
 */
static int find_pid_join(const struct px_config *cfg, int *unshareable)
{
    int fd = -1;
    for (int i = 0; i < cfg->n_join_namespaces; i++) {
        int type = cfg->join_namespaces[i].type;
        *unshareable |= (type & (CLONE_NEWUSER | CLONE_NEWTIME)) != 0;
        if (type == CLONE_NEWPID && fd < 0 && cfg->join_pidfd < 0) /* nsenter.c refuses both */
            fd = cfg->join_namespaces[i].fd;
    }
    return fd;
}

static int enter_pid_ns(int fd, int *back, struct px_child *out)
{
    *back = open("/proc/thread-self/ns/pid_for_children", O_RDONLY | O_CLOEXEC);
    if (*back >= 0 && setns(fd, CLONE_NEWPID) == 0)
        return 0;
    out->err.step = PX_STEP_SETNS;
    out->err.err = errno;
    px_str_copy(out->err.detail, sizeof out->err.detail, "pid namespace");
    close_fd(back);
    return out->err.err;
}

/* Raw: a shared-memory child may be running on our TLS by now. 0 or -errno. */
static long leave_pid_ns(int *back)
{
    long rc = *back < 0 ? 0 : px_sys3(SYS_setns, *back, CLONE_NEWPID, 0);
    close_fd(back);
    return rc < 0 ? rc : 0;
}

int px_spawn(const struct px_config *cfg, struct px_child *out)
{
    int sync_p[2] = {-1, -1}, err_p[2] = {-1, -1}, status_p[2] = {-1, -1};
    int pidfd = -1, saved_errno = 0;
    struct px_launch copied, *l = &copied;
    memset(out, 0, sizeof *out);
    out->pid = out->pidfd = out->sync_fd = out->error_fd = out->status_fd = -1;
    out->failed_place = -1;

    int needs_sync = cfg->wait_for_parent || cfg->hold_task;
    /* An init-less join of a pid namespace reports its fork's pid there (join.c). */
    int reports_pid = !cfg->use_init && cfg->join_pidfd >= 0 && (cfg->clone_flags & CLONE_NEWPID);
    if (pipe2(err_p, O_CLOEXEC) < 0 || (needs_sync && pipe2(sync_p, O_CLOEXEC) < 0) ||
        ((cfg->use_init || reports_pid) && pipe2(status_p, O_CLOEXEC) < 0)) {
        saved_errno = errno;
        goto fail;
    }
    /* Shared memory only below an init: a child that is itself the task
     * would write its oom_score_adj (the kernel then sets it for every
     * process sharing the memory, the caller too) and change uid without
     * anyone to put the memory's dumpable flag back. Never when joining a
     * task: setns() into a time namespace refuses a process whose memory is
     * shared, and a new time namespace would change the vdso under us. */
    int unshareable = 0, pid_ns = find_pid_join(cfg, &unshareable), pid_ns_back = -1;
    int shared = PX_CAN_SHARE_MEMORY && cfg->share_memory && cfg->use_init && cfg->join_pidfd < 0 &&
                 !(cfg->clone_flags & CLONE_NEWTIME) && !unshareable;
    memset(&copied, 0, sizeof copied);
    copied.cfg = cfg;
    copied.sync_fd = sync_p[0];
    copied.status_fd = status_p[1];
    copied.close_fds[0] = err_p[0];
    copied.close_fds[1] = sync_p[1];
    copied.close_fds[2] = status_p[0];

    struct clone_args args;
    memset(&args, 0, sizeof args);
    uint64_t ns_flags = cfg->join_pidfd >= 0 ? cfg->clone_flags & ~PX_NS_FLAGS : cfg->clone_flags;
    args.flags = ns_flags | CLONE_PIDFD;
    args.pidfd = (uint64_t)(uintptr_t)&pidfd;
    args.exit_signal = SIGCHLD;
    if (cfg->cgroup_fd >= 0) {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = (uint64_t)cfg->cgroup_fd;
    }
    if (pid_ns >= 0 && (saved_errno = enter_pid_ns(pid_ns, &pid_ns_back, out)) != 0)
        goto fail;
    px_set_error_fd(err_p[1]);
    sigset_t saved_mask;
    block_signals(&saved_mask);
    long pid = -ENOSYS;
#if PX_CAN_SHARE_MEMORY
    if (shared && (l = map_stack(out)) != NULL) {
        *l = copied;
        l->shared_memory = 1;
        l->task_stack = (char *)out->stack + GUARD_SIZE + TASK_STACK_SIZE;
        args.flags |= CLONE_VM;
        args.stack = (uint64_t)(uintptr_t)((char *)out->stack + GUARD_SIZE + TASK_STACK_SIZE + GUARD_SIZE);
        /* Top 16-byte aligned below the px_launch record. */
        args.stack_size = (((uint64_t)(uintptr_t)l) & ~15ULL) - args.stack;
        pid = clone3_on_stack(&args, px_child_start, l);
    }
#endif
    if (pid == -ENOSYS || pid == -EPERM) {
        /* Not shared (or clone3 filtered: Docker's default seccomp profile
         * answers ENOSYS to it, and so does a kernel before 5.3): a copy. */
        unmap_stack(out);
        l = &copied;
        args.flags &= ~(uint64_t)CLONE_VM;
        args.stack = args.stack_size = 0;
        pid = px_sys3(SYS_clone3, &args, sizeof args, 0);
        if (pid == -ENOSYS && cfg->cgroup_fd < 0)
            pid = px_sys4(SYS_clone, (long)(ns_flags | CLONE_PIDFD | SIGCHLD), 0, (long)&pidfd, 0);
        if (pid == 0) {
            restore_signals(&saved_mask);
            px_child_start(l);
        }
    }
    long back = leave_pid_ns(&pid_ns_back);
    if (pid < 0) {
        restore_signals(&saved_mask);
        saved_errno = (int)-(back < 0 ? back : pid);
        goto fail;
    }
    close_fd(&err_p[1]);
    close_fd(&sync_p[0]);
    close_fd(&status_p[1]);
    out->pid = (int)pid;
    out->task_pid = cfg->use_init ? 0 : reports_pid ? -1 : (int)pid;
    out->pidfd = pidfd;
    out->sync_fd = sync_p[1];
    out->error_fd = err_p[0];
    out->status_fd = status_p[0];
    if (back < 0) {
        /* This thread is stuck in the joined pid namespace: fail the launch
         * (the child dies) rather than let its later forks land there. */
        out->result = (int)back;
        finish_up(out);
        restore_signals(&saved_mask);
        return 0;
    }
    if (cfg->wait_for_parent) {
        out->parked = 1; /* it touches nothing of ours until px_finish */
        restore_signals(&saved_mask);
        return 0;
    }
    place_and_release(cfg, out);
    finish_up(out);
    restore_signals(&saved_mask);
    return 0;

fail:
    close_pair(sync_p);
    close_pair(err_p);
    close_pair(status_p);
    unmap_stack(out);
    return -saved_errno;
}
