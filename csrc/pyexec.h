/*
 * pyexec.h — the one header shared by the C shim and Python: the parent side
 * (csrc/spawn.c), the child side (csrc/nsenter.c, csrc/mounts.c, csrc/task.c,
 * csrc/error.c), the monitor (csrc/monitor.c) and pyexec/shim.py.
 *
 * Everything between the BEGIN CDEF and END CDEF markers is also fed to cffi's
 * cdef() by pyexec/_build_shim.py, so the config layout, the step numbers and
 * the op kinds exist exactly once. Keep that region in the C subset cffi parses:
 * plain structs, integer #defines, prototypes; no includes, no expressions.
 * pyexec/shim.py fills struct px_config from cffi's view of it, and
 * tests/test_shim_config.py fails when a field here has no filler there.
 */
#ifndef PYEXEC_H
#define PYEXEC_H

#include <stdint.h>

/* BEGIN CDEF */

/* Stages of the shim, reported through the error pipe (px_step_name()). */
#define PX_STEP_SYNC          1   /* waiting for the parent's go */
#define PX_STEP_HOSTNAME      2
#define PX_STEP_LOOPBACK      3
#define PX_STEP_PROPAGATION   4   /* making / private */
#define PX_STEP_MOUNT         5
#define PX_STEP_BIND          6
#define PX_STEP_MKDIR         7
#define PX_STEP_SYMLINK       8
#define PX_STEP_PIVOT_ROOT    9
#define PX_STEP_MASK         10
#define PX_STEP_READONLY     11
#define PX_STEP_FORK         12
#define PX_STEP_STDIO        13
#define PX_STEP_RLIMIT       14
#define PX_STEP_CHDIR        15
#define PX_STEP_SETGROUPS    16
#define PX_STEP_SETGID       17
#define PX_STEP_SETUID       18
#define PX_STEP_CAPS         19
#define PX_STEP_NO_NEW_PRIVS 20
#define PX_STEP_EXEC         21
#define PX_STEP_SETSID       22
#define PX_STEP_REMOUNT      23
#define PX_STEP_OOM_SCORE    24
#define PX_STEP_MONITOR      25   /* exec of the pyexec-monitor executable */
#define PX_STEP_SECCOMP      26   /* loading the seccomp filter, the last step before exec */
#define PX_STEP_SETNS        27   /* joining namespaces: a running task's (exec into it) or join_namespaces */
#define PX_STEP_CONSOLE      28   /* the pty of console_socket_fd: open, unlock, send, /dev/console */
#define PX_STEP_SYSCTL       29   /* writing one of sysctls under /proc/sys */
#define PX_STEP_MKNOD        30
#define PX_STEP_CHOWN        31
#define PX_STEP_DOMAINNAME   32
#define PX_STEP_PERSONALITY  33
#define PX_STEP_START        34   /* the hold of start_fd (a plan it cannot run with) */

/* The monitor (csrc/monitor.c) finds its inputs at these fds (closed = not used). */
#define PX_MON_FD_STATUS     3    /* write end of the status pipe to the launching caller */
#define PX_MON_FD_STATE      4    /* the task's state directory: exit.json goes there */
#define PX_MON_FD_LOGDIR     5    /* the directory of the rotated stdout/stderr files */
#define PX_MON_FD_STDOUT     6    /* read end of the task's stdout pipe */
#define PX_MON_FD_STDERR     7    /* read end of the task's stderr pipe */
#define PX_MON_FD_LIFELINE   8    /* read end of the caller's lifeline (kill_on_caller_exit) */

/* How the monitor makes sure nothing of the task outlives it. */
#define PX_MON_PID1          1    /* pid 1 of the task's pid namespace: kill(-1) */
#define PX_MON_SUBREAPER     2    /* child subreaper on the host: the task's group and every adoptee */

/* Kinds of px_mount_op, run in array order by the child. */
#define PX_OP_MOUNT     1   /* mount(source, target, fstype, flags, data); source and fstype may be NULL
                               (a propagation change: flags MS_SHARED, MS_SLAVE, MS_PRIVATE or
                               MS_UNBINDABLE, with MS_REC for the whole tree) */
#define PX_OP_BIND      2   /* bind source on target (made like source), then, with PX_BIND_RDONLY or any
                               per-mount flag in flags (MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC,
                               MS_NOATIME, MS_NODIRATIME, MS_RELATIME, MS_STRICTATIME), remount it with
                               MS_REMOUNT|MS_BIND|flags (|MS_RDONLY for PX_BIND_RDONLY) and the flags the
                               bind already has (atime ones only when flags names none) */
#define PX_OP_MKDIR     3   /* mkdir(target, 0755), EEXIST is fine */
#define PX_OP_SYMLINK   4   /* symlink(source, target) */
#define PX_OP_PIVOT     5   /* pivot_root into target, old root detached */
#define PX_OP_MASK      6   /* hide target: /dev/null over a file, empty read-only tmpfs over a dir; ENOENT is fine */
#define PX_OP_READONLY  7   /* bind target on itself read-only; ENOENT is fine */
#define PX_OP_REMOUNT   8   /* remount target with flags (MS_REMOUNT added) */
#define PX_OP_MKNOD     9   /* mknod(target, flags = st_mode: file type | permissions, bind_flags = the device
                               number as the kernel's new_encode_dev(major, minor)); the mode as it is (no
                               umask); EEXIST is fine */
#define PX_OP_CHOWN    10   /* lchown(target, uid = flags >> 32, gid = flags & 0xffffffff); needs a
                               64-bit unsigned long */

#define PX_BIND_RDONLY     1
#define PX_BIND_RECURSIVE  2
#define PX_BIND_OPTIONAL   4   /* a missing source is skipped, not an error */

#define PX_GO 71              /* the byte the parent writes to release the child ('G') */

/* One classic BPF instruction: the layout of the kernel's struct sock_filter. */
struct px_bpf_insn {
    uint16_t code;
    uint8_t jt;
    uint8_t jf;
    uint32_t k;
};

struct px_mount_op {
    int kind;
    int bind_flags;           /* PX_BIND_* for PX_OP_BIND */
    unsigned long flags;      /* MS_* flags for PX_OP_MOUNT / PX_OP_REMOUNT */
    const char *source;
    const char *target;
    const char *fstype;
    const char *data;
};

/* One namespace to join (setns): an fd of a namespace file (/proc/PID/ns/TYPE,
 * a bind mount of one) and its CLONE_NEW* type. */
struct px_ns_join {
    int fd;
    int type;
};

/* One sysctl the child writes in its own namespaces. */
struct px_sysctl {
    const char *key;          /* "net.ipv4.ip_forward" (dots become slashes) or "net/ipv4/conf/eth0.1/rp_filter" */
    const char *value;
};

struct px_rlimit {
    int resource;             /* RLIMIT_* */
    uint64_t soft;
    uint64_t hard;
    const char *name;         /* for the error message */
};

struct px_config {
    uint64_t clone_flags;     /* CLONE_NEW* for clone3 */
    int use_init;             /* fork the task below an init that then execs the monitor */
    int subreaper;            /* init without a pid namespace: adopt the task's orphans, kill them at its exit */
    /* The monitor: the init execs it (execveat) once the task runs. */
    int monitor_exe_fd;       /* O_PATH fd of the pyexec-monitor executable */
    int monitor_fds[6];       /* become fds 3..8 of the monitor (PX_MON_FD_*); -1: unused */
    const char *log_name;     /* base of the log files: <log_name>.stdout.N */
    uint64_t log_max_size;
    int log_max_files;
    int wait_for_parent;      /* block until px_finish(), first thing: the caller's Python work (id maps, a veth) */
    int hold_task;            /* block only before starting the task, while px_spawn places the child */
    int cgroup_fd;            /* >= 0: clone3 CLONE_INTO_CGROUP (cgroup v2), else -1 */
    const char *const *place_paths; /* cgroup.procs files the parent writes the child's pid into */
    int n_place_paths;
    int share_memory;         /* clone with CLONE_VM on a stack of its own instead of copying the caller
                                 (where spawn.c supports it; never when joining a task) */
    const char *hostname;     /* NULL: keep */
    int loopback_up;          /* bring lo up (new net namespace) */
    int make_private;         /* mount --make-rprivate / first */

    const struct px_mount_op *mounts;
    int n_mounts;

    const struct px_rlimit *rlimits;
    int n_rlimits;

    int set_user;             /* switch to uid/gid/groups */
    uint32_t uid;
    uint32_t gid;
    const uint32_t *groups;
    int n_groups;

    int set_caps;
    int last_cap;             /* highest capability number the kernel knows */
    uint64_t cap_bounding;
    uint64_t cap_effective;
    uint64_t cap_permitted;
    uint64_t cap_inheritable;
    uint64_t cap_ambient;

    int no_new_privs;
    /* The caller's argv and environ areas (/proc/self/stat fields 48-51): an
     * init that is a copy of the caller blanks them before the task can run,
     * so /proc/1/cmdline and environ show the task nothing of the caller in
     * the moment before the init execs the monitor. 0, 0: skip. (An init
     * that shares the caller's memory cannot: the plan masks /proc/1/cmdline.) */
    uint64_t caller_args[2];
    uint64_t caller_env[2];
    const struct px_bpf_insn *seccomp_filter; /* loaded last, after no_new_privs; NULL: none */
    int seccomp_len;
    uint32_t seccomp_flags;   /* SECCOMP_FILTER_FLAG_* of the seccomp(2) call (LOG, SPEC_ALLOW, TSYNC) */
    int seccomp_listener_fd;  /* >= 0: load with SECCOMP_FILTER_FLAG_NEW_LISTENER and send the listener
                                 over this unix socket (one SCM_RIGHTS message), then close it; -1: none */
    int join_pidfd;           /* >= 0: exec into the running task of this pidfd: setns(join_pidfd,
                                 clone_flags) replaces new namespaces and the mount plan. With use_init
                                 = 0 (pyexec-oci exec) no init: the child (or, when a pid namespace is
                                 joined, its CLONE_PARENT fork: px_child.task_pid) runs the task */
    int set_ctty;             /* make stdin (a tty) the task's controlling terminal (TIOCSCTTY after setsid) */
    /* Namespaces to join instead of (or besides) the clone's new ones, first
     * thing after the go: the user namespace first (then its root is become),
     * then the others in array order, the mount namespace last. A pid
     * namespace is joined by px_spawn itself, for the clone only: see spawn.c.
     * Not with join_pidfd. */
    const struct px_ns_join *join_namespaces;
    int n_join_namespaces;
    const char *domainname;   /* NULL: keep; setdomainname after the hostname (a new or joined uts ns, like it) */
    /* Written to /proc/sys/<key> after the namespaces, before the mount plan
     * (so through the host's /proc, which acts on the writer's namespaces). */
    const struct px_sysctl *sysctls;
    int n_sysctls;
    int oom_score_adj;        /* written to /proc/self/oom_score_adj when set_oom_score */
    int set_oom_score;
    int stdio[3];             /* fds that become the task's 0, 1, 2 (-1: keep) */
    /* >= 0: a connected AF_UNIX stream socket: the task opens /dev/ptmx in its
     * root, sends the master over it (one sendmsg: "/dev/ptmx" and one
     * SCM_RIGHTS fd) and makes the slave its stdio and controlling terminal
     * instead of stdio (csrc/console.c); with a new mount namespace (not a
     * joined task's) the slave is bound on /dev/console too. -1: none. */
    int console_socket_fd;
    int console_rows;         /* the pty's window size (TIOCSWINSZ) unless both are 0 */
    int console_cols;
    int personality;          /* personality(2) before the exec, when set_personality */
    int set_personality;
    int umask;                /* umask(2) before the exec, when set_umask (else the caller's) */
    int set_umask;
    /* >= 0 (use_init = 0 only): hold before the exec. The task does all its
     * set-up, resolves program as the exec would (a failure is a PX_STEP_EXEC
     * record as usual), closes the error pipe (px_spawn returns as launched)
     * and every other fd it does not keep across the exec, then reads one
     * byte from start_fd: a byte goes on to the seccomp filter (when it comes
     * last) and the exec, EOF or an error exits 127, and so does any failure
     * from then on, silently: nobody is left to report to. -1: no hold. */
    int start_fd;
    /* fds 3..3+preserve_fds-1 stay open (not close-on-exec) in the task, every
     * other fd above 2 is closed (OCI --preserve-fds). The caller keeps the
     * fds it opens for the child (start_fd, the pipes px_spawn makes) above
     * that range: the task fails (PX_STEP_STDIO, EBADF) when one is inside. */
    int preserve_fds;
    const char *cwd;          /* NULL: keep */
    const char *program;      /* argv[0] or a path; searched in search_path when it has no '/' */
    const char *search_path;  /* PATH of the task */
    char *const *argv;
    char *const *envp;
};

/* One failure record from the child. */
struct px_error {
    int step;                 /* PX_STEP_* */
    int err;                  /* errno */
    char detail[512];         /* the path or name the step worked on */
};

/* What the parent holds after px_spawn(). */
struct px_child {
    int pid;
    int task_pid;             /* host pid of the process that execs the program: pid with use_init = 0,
                                 the CLONE_PARENT fork of an init-less join of a pid namespace (known
                                 once done: read from the status pipe; -1 before or on failure), 0 with
                                 an init (the init's child, not known here) */
    int pidfd;
    int sync_fd;              /* write end: PX_GO releases the child; -1 when not waiting */
    int error_fd;             /* read end of the close-on-exec error pipe; -1 once drained */
    int status_fd;            /* read end: the init writes the task's wait status; -1 without init */
    int parked;               /* the child waits at its start (wait_for_parent) for px_finish() */
    int done;                 /* the launch is over: the child exec'd or failed, nothing shares our memory */
    int result;               /* when done: 0 exec'd; 1 the child failed (err); -errno a parent call failed */
    int failed_place;         /* with result < 0: the index in place_paths whose open or write failed, else -1 */
    struct px_error err;
    void *stack;              /* the child's own stack while it shares our memory (NULL: a copy) */
    uint64_t stack_size;
};

/* What the init writes to the status pipe when the task ends: the raw wait
 * status and the task's own CPU times (the init's rusage would add its own). */
struct px_exit {
    int32_t status;
    int32_t reserved;
    int64_t utime_us;
    int64_t stime_us;
};

/* Parent side (csrc/spawn.c). px_spawn clones the child; unless it is
 * parked (wait_for_parent) it also places it (place_paths), releases it and
 * waits until it exec'd, failed, or (start_fd) is held before its exec
 * (out->done, out->result). It returns 0, or -errno when the clone itself
 * failed (nothing is left then); when that was the setns() into a pid
 * namespace of join_namespaces before the clone, out->err names it too (step
 * PX_STEP_SETNS), else out->err.step is 0. px_finish does
 * the rest for a parked child; px_abort kills a child that is not done and
 * waits until nothing of it shares our memory. Both are no-ops once done. */
int px_spawn(const struct px_config *cfg, struct px_child *out);
void px_finish(const struct px_config *cfg, struct px_child *child);
void px_abort(struct px_child *child);
/* csrc/error.c: the name of a px_error's step, for the parent's report. */
const char *px_step_name(int step);

/* END CDEF */

#ifdef PX_SHIM_INTERNAL
/*
 * Between the parent side (csrc/spawn.c) and the child side (csrc/nsenter.c
 * and the units it runs); not part of the Python interface. A shared-memory
 * child finds this record at the top of its own stack, a copied child in its
 * copy of the parent's stack.
 */
struct px_launch {
    const struct px_config *cfg;
    int sync_fd;              /* read end of the sync pipe, or -1 */
    int status_fd;            /* write end of the status pipe, or -1 */
    int close_fds[3];         /* the parent's ends of the pipes: the child closes them */
    int shared_memory;        /* 1: this child runs in the caller's memory (CLONE_VM) */
    char *task_stack;         /* top of the task's stack for its CLONE_VM|CLONE_VFORK clone */
};

/* The namespaces a child joining a task (exec into it) enters by setns(). */
#include <linux/sched.h>
#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif
#define PX_NS_FLAGS \
    ((uint64_t)(CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWUSER | \
                CLONE_NEWCGROUP | CLONE_NEWTIME))

#include <sys/prctl.h>
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
#ifndef PR_CAP_AMBIENT
#define PR_CAP_AMBIENT 47
#define PR_CAP_AMBIENT_RAISE 2
#define PR_CAP_AMBIENT_CLEAR_ALL 4
#endif

#include <stddef.h>
#include <sys/types.h> /* ssize_t */

/* Hidden: calls between the shim's own files are direct, so the child never
 * goes through the dynamic linker's lazy binding (PLT) to reach them. */
#define PX_HIDDEN __attribute__((visibility("hidden")))

/*
 * csrc/error.c, a leaf: the child's error channel. The parent sets the error
 * fd in the launching thread before the clone (thread-local, so concurrent
 * launches from several threads each have their own even when their children
 * share memory); the init moves it once (exec_monitor). px_fail is the
 * child's one way to fail: a px_error record on that fd, then _exit(127).
 */
PX_HIDDEN void px_set_error_fd(int error_fd);
PX_HIDDEN int px_error_fd(void);
PX_HIDDEN void __attribute__((noreturn)) px_fail(int step, int err, const char *detail);
/* Copies at most cap - 1 bytes of src (NULL: none) and a NUL; returns the length. */
PX_HIDDEN size_t px_str_copy(char *dst, size_t cap, const char *src);
/* csrc/sendfd.c: one fd in one sendmsg with `data`; the bytes sent, or -1 (errno). */
PX_HIDDEN ssize_t px_send_fd(int sock, int fd, const void *data, size_t len);

/* csrc/namespaces.c: the stage after the go. px_join_user_namespace joins
 * the user namespace of join_namespaces (returns 1 if there is one),
 * px_join_namespaces the others but the pid namespace (the parent's), the
 * mount namespace last; px_write_sysctls writes cfg->sysctls. */
PX_HIDDEN int px_join_user_namespace(const struct px_config *cfg);
PX_HIDDEN void px_join_namespaces(const struct px_config *cfg);
PX_HIDDEN void px_write_sysctls(const struct px_config *cfg);
/* csrc/console.c: the task's pty (console_socket_fd), instead of its stdio. */
PX_HIDDEN void px_setup_console(const struct px_config *cfg);

/* csrc/nsenter.c: the child's entry (clone's fn); never returns.
 * px_become_userns_root: the root of a new (or joined: joined = 1) user namespace. */
PX_HIDDEN int px_child_start(void *launch);
PX_HIDDEN void px_become_userns_root(const struct px_config *cfg, int joined);
/* csrc/join.c: the init-less join (use_init = 0, join_pidfd >= 0); never
 * returns. px_read_task_pid: the parent's read of its fork's pid, once the
 * error pipe is drained (spawn.c's finish_up). */
PX_HIDDEN void __attribute__((noreturn)) px_join_direct(const struct px_launch *l);
PX_HIDDEN void px_read_task_pid(struct px_child *c);
/* csrc/mounts.c: run cfg->mounts in order. */
PX_HIDDEN void px_run_mount_ops(const struct px_config *cfg);
/* csrc/seccomp.c: load cfg->seccomp_filter (and hand over its listener). */
PX_HIDDEN void px_load_seccomp(const struct px_config *cfg);
/* csrc/task.c: the task's own steps and its exec; never returns. */
PX_HIDDEN void __attribute__((noreturn)) px_run_task(const struct px_config *cfg);

#endif /* PX_SHIM_INTERNAL */

#endif
