/*
 * namespaces.c — the child's first stage after the go: the namespaces it
 * joins by fd (cfg->join_namespaces, OCI's linux.namespaces[].path), and
 * later, once hostname and loopback are done, the sysctls it writes in its
 * own namespaces (cfg->sysctls).
 *
 * Order of the joins (nsenter.c calls them in this order):
 *
 *   1. the user namespace, alone: every other setns() is then judged by the
 *      capabilities we have in it (nsenter.c then becomes its root);
 *   2. the others (net, uts, ipc, cgroup, time) in the plan's order;
 *   3. the mount namespace last: it changes our root and cwd to its own, and
 *      after it the namespace files the other fds name may be out of reach
 *      (an fd stays valid, but keeping the order makes no exception).
 *
 * A pid namespace is not entered here: setns(CLONE_NEWPID) changes only
 * where the caller's *children* are born, so px_spawn (csrc/spawn.c) joins
 * it in the launching thread for the clone and goes back right after.
 *
 * The sysctls are written through the /proc the child sees before the mount
 * plan runs, the host's: a /proc/sys/net file acts on the network namespace
 * of the process that opens it, kernel.shm* and the other ipc ones on its
 * ipc namespace, kernel.hostname/domainname on its uts namespace. So no
 * mount of the task's is needed for them, and none is made writable. (A
 * joined mount namespace brings its own /proc: the sysctls go through that.)
 *
 * Like the rest of the child it allocates nothing and takes no locks; a
 * failure is px_fail(PX_STEP_SETNS, errno, the namespace's name) or
 * px_fail(PX_STEP_SYSCTL, errno, the key).
 */
#define _GNU_SOURCE
#define PX_SHIM_INTERNAL
#include "pyexec.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Stage: join namespaces by fd.                                             */
/* ------------------------------------------------------------------------ */

static const char *ns_name(int type)
{
    switch (type) {
    case CLONE_NEWUSER: return "user namespace";
    case CLONE_NEWNS: return "mount namespace";
    case CLONE_NEWNET: return "network namespace";
    case CLONE_NEWUTS: return "uts namespace";
    case CLONE_NEWIPC: return "ipc namespace";
    case CLONE_NEWCGROUP: return "cgroup namespace";
    case CLONE_NEWTIME: return "time namespace";
    case CLONE_NEWPID: return "pid namespace";
    default: return "namespace of an unknown type";
    }
}

static void join(const struct px_ns_join *ns)
{
    if (setns(ns->fd, ns->type) < 0)
        px_fail(PX_STEP_SETNS, errno, ns_name(ns->type));
}

int px_join_user_namespace(const struct px_config *cfg)
{
    int joined = 0;
    for (int i = 0; i < cfg->n_join_namespaces; i++)
        if (cfg->join_namespaces[i].type == CLONE_NEWUSER) {
            join(&cfg->join_namespaces[i]);
            joined = 1;
        }
    return joined;
}

void px_join_namespaces(const struct px_config *cfg)
{
    const struct px_ns_join *mnt = NULL;
    for (int i = 0; i < cfg->n_join_namespaces; i++) {
        const struct px_ns_join *ns = &cfg->join_namespaces[i];
        if (ns->type == CLONE_NEWUSER || ns->type == CLONE_NEWPID)
            continue; /* joined already; the parent's */
        if (ns->type == CLONE_NEWNS)
            mnt = ns;
        else if (ns->type & ~(CLONE_NEWNET | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWCGROUP | CLONE_NEWTIME) ||
                 ns->type == 0)
            px_fail(PX_STEP_SETNS, EINVAL, ns_name(ns->type)); /* one type per entry */
        else
            join(ns);
    }
    if (mnt)
        join(mnt);
}

/* ------------------------------------------------------------------------ */
/* Stage: sysctls, in the child's own namespaces.                            */
/* ------------------------------------------------------------------------ */

/*
 * "/proc/sys/" + key into buf: dots become slashes, unless the key has a
 * slash already (sysctl(8)'s other spelling, for names with dots such as
 * net/ipv4/conf/eth0.100/forwarding). A key that is empty, has an empty,
 * "." or ".." component or does not fit fails: it could name a file
 * outside /proc/sys.
 */
static void sysctl_path(char *buf, size_t cap, const char *key)
{
    static const char prefix[] = "/proc/sys/";
    size_t n = sizeof prefix - 1, klen = strlen(key);
    int slashes = strchr(key, '/') != NULL;
    if (klen == 0 || n + klen + 1 > cap)
        px_fail(PX_STEP_SYSCTL, klen ? ENAMETOOLONG : EINVAL, key);
    memcpy(buf, prefix, n);
    size_t component = n;
    for (size_t i = 0; i <= klen; i++) {
        char c = key[i];
        if (c == '/' || (c == '.' && !slashes) || c == '\0') {
            size_t len = n - component;
            const char *start = buf + component;
            if (len == 0 || (len == 1 && start[0] == '.') || (len == 2 && start[0] == '.' && start[1] == '.'))
                px_fail(PX_STEP_SYSCTL, EINVAL, key);
            c = c ? '/' : '\0';
            component = n + 1;
        }
        buf[n++] = c;
    }
}

void px_write_sysctls(const struct px_config *cfg)
{
    for (int i = 0; i < cfg->n_sysctls; i++) {
        const struct px_sysctl *s = &cfg->sysctls[i];
        char path[512];
        sysctl_path(path, sizeof path, s->key);
        size_t len = strlen(s->value);
        int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
            px_fail(PX_STEP_SYSCTL, errno, s->key);
        ssize_t n = write(fd, s->value, len);
        if (n < 0 || (size_t)n != len)
            px_fail(PX_STEP_SYSCTL, n < 0 ? errno : EIO, s->key);
        close(fd);
    }
}
