/*
 * seccomp.c — the child's seccomp step: load the classic BPF program the
 * parent compiled (pyexec/seccomp_bpf.py, through libseccomp) and, for a
 * profile with SCMP_ACT_NOTIFY, hand the listener fd the kernel returns to
 * the parent. Like the rest of the child it allocates nothing, takes no locks
 * and fails only through px_fail(). libseccomp itself is the parent's: it
 * allocates, so the child never calls it.
 *
 * Also one parent-side probe, px_seccomp_flags_supported(), so that a profile
 * asking for a flag this kernel lacks is a ConfigError before any clone.
 */
#define _GNU_SOURCE
#define PX_SHIM_INTERNAL
#include "pyexec.h"

#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SECCOMP_FILTER_FLAG_NEW_LISTENER
#define SECCOMP_FILTER_FLAG_NEW_LISTENER (1UL << 3)
#endif

static void send_listener(int sock, int listener)
{
    if (px_send_fd(sock, listener, "L", 1) < 0) /* csrc/sendfd.c */
        px_fail(PX_STEP_SECCOMP, errno, "sending the seccomp listener");
}

/* Without no_new_privs the kernel wants CAP_SYS_ADMIN for this, which is why
 * px_run_task then calls it before the capabilities drop (as runc does). */
void px_load_seccomp(const struct px_config *cfg)
{
    struct sock_fprog prog = {(unsigned short)cfg->seccomp_len, (struct sock_filter *)cfg->seccomp_filter};
    unsigned long flags = cfg->seccomp_flags;
    if (cfg->seccomp_listener_fd >= 0)
        flags |= SECCOMP_FILTER_FLAG_NEW_LISTENER;
    long fd = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog);
    if (fd < 0)
        px_fail(PX_STEP_SECCOMP, errno, "seccomp");
    /* The parent (pyexec.seccomp_notify.receive_listener) passes it on to the
     * agent. The task must not hold it: the kernel made it close-on-exec, so
     * no close(2) here, a call the profile may notify (and nobody could answer
     * it before the exec, which the launch waits for). */
    if (cfg->seccomp_listener_fd >= 0)
        send_listener(cfg->seccomp_listener_fd, (int)fd);
}

/* seccomp(2) checks its flags before it reads the program: with a NULL
 * program, EFAULT means the kernel takes these flags, EINVAL that it does not. */
int px_seccomp_flags_supported(unsigned int flags)
{
    return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, NULL) < 0 && errno == EFAULT;
}
