/*
 * mounts.c — the child's mount stage: it runs the plan's mount operations.
 *
 * pyexec/rootfs.py decides the whole plan in Python (struct px_mount_op
 * records with absolute paths: the host mirror or a rootfs bind, the kernel
 * file systems, the user's mounts, pivot_root, then the masked and read-only
 * paths); this file only executes it, in array order, in the child's new
 * mount namespace (after nsenter.c made / private), before the task starts.
 * It decides nothing the plan does not say, except what the kernel forces:
 * a remount repeats the flags a mount already has, since the kernel refuses
 * to clear locked ones.
 *
 * Tolerated on purpose: EEXIST for mkdir, symlink and mknod (a rootfs may
 * have them already), a missing path for mask and read-only (the default
 * lists name /proc and /sys paths not every kernel has), a missing source for
 * an optional bind (PX_BIND_OPTIONAL).
 *
 * The OCI runtime's plan (pyexec-oci) also uses device nodes (PX_OP_MKNOD,
 * then PX_OP_CHOWN to the container's ids), binds with flags of their own
 * (nosuid, noexec, atime modes: op_bind remounts them) and propagation
 * changes (PX_OP_MOUNT with a NULL source and MS_SHARED, MS_SLAVE,
 * MS_PRIVATE or MS_UNBINDABLE).
 *
 * Like the rest of the child it allocates nothing and takes no locks; a
 * failing operation reports through px_fail() (csrc/error.c) with its step
 * (PX_STEP_MOUNT, _BIND, _MKDIR, _SYMLINK, _PIVOT_ROOT, _MASK, _READONLY,
 * _REMOUNT, _MKNOD or _CHOWN) and the path it worked on.
 */
#define _GNU_SOURCE
#define PX_SHIM_INTERNAL
#include "pyexec.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h> /* ST_* flag names for statfs.f_flags */
#include <sys/syscall.h>
#include <unistd.h>

/* The per-mount flags a remount must repeat (the kernel refuses to clear locked ones). */
static unsigned long kept_mount_flags(const char *path)
{
    struct statfs st;
    unsigned long flags = 0;
    if (statfs(path, &st) < 0)
        return 0;
    if (st.f_flags & ST_NOSUID)
        flags |= MS_NOSUID;
    if (st.f_flags & ST_NODEV)
        flags |= MS_NODEV;
    if (st.f_flags & ST_NOEXEC)
        flags |= MS_NOEXEC;
    if (st.f_flags & ST_NOATIME)
        flags |= MS_NOATIME;
    if (st.f_flags & ST_NODIRATIME)
        flags |= MS_NODIRATIME;
    if (st.f_flags & ST_RELATIME)
        flags |= MS_RELATIME;
    return flags;
}

static int remount_readonly(const char *target, unsigned long extra)
{
    return mount(NULL, target, NULL,
                 MS_REMOUNT | MS_BIND | MS_RDONLY | extra | kept_mount_flags(target), NULL);
}

/* The flags a bind mount can have of its own (a bind remount sets them). */
#define ATIME_FLAGS (MS_NOATIME | MS_NODIRATIME | MS_RELATIME | MS_STRICTATIME)
#define PER_MOUNT_FLAGS (MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC | ATIME_FLAGS)

/* Create target as the same kind of object as source (directory or file). */
static int make_like(const struct stat *src, const char *target)
{
    if (S_ISDIR(src->st_mode)) {
        if (mkdir(target, 0755) < 0 && errno != EEXIST)
            return -1;
        return 0;
    }
    int fd = open(target, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOCTTY, 0644);
    if (fd < 0) {
        struct stat existing;
        return stat(target, &existing) == 0 ? 0 : -1;
    }
    close(fd);
    return 0;
}

static void op_bind(const struct px_mount_op *op)
{
    struct stat st;
    if (stat(op->source, &st) < 0) {
        if (op->bind_flags & PX_BIND_OPTIONAL)
            return;
        px_fail(PX_STEP_BIND, errno, op->source);
    }
    if (make_like(&st, op->target) < 0)
        px_fail(PX_STEP_BIND, errno, op->target);
    unsigned long flags = MS_BIND | ((op->bind_flags & PX_BIND_RECURSIVE) ? MS_REC : 0);
    if (mount(op->source, op->target, NULL, flags, NULL) < 0)
        px_fail(PX_STEP_BIND, errno, op->target);
    /* A bind takes the source's flags; its own (op->flags: OCI's nosuid,
     * noexec, noatime... of a bind mount) take a remount. The flags the bind
     * has are repeated (a locked one cannot be cleared), its atime ones only
     * when op->flags names none: a requested atime mode replaces them. */
    unsigned long own = op->flags & PER_MOUNT_FLAGS;
    if (op->bind_flags & PX_BIND_RDONLY)
        own |= MS_RDONLY;
    if (!own)
        return;
    unsigned long kept = kept_mount_flags(op->target);
    if (op->flags & ATIME_FLAGS)
        kept &= ~(unsigned long)ATIME_FLAGS;
    if (mount(NULL, op->target, NULL, MS_REMOUNT | MS_BIND | op->flags | own | kept, NULL) < 0)
        px_fail(PX_STEP_REMOUNT, errno, op->target);
}

/* A device node or FIFO: the mode (type | permissions) in flags, exactly (the
 * umask is lifted meanwhile: OCI gives a device its mode), the device number
 * (new_encode_dev, the kernel's own encoding for mknod) in bind_flags. */
static void op_mknod(const struct px_mount_op *op)
{
    mode_t mask = umask(0);
    long rc = syscall(SYS_mknodat, AT_FDCWD, op->target, (mode_t)op->flags, (unsigned int)op->bind_flags);
    int err = errno;
    umask(mask);
    if (rc < 0 && err != EEXIST)
        px_fail(PX_STEP_MKNOD, err, op->target);
}

static void op_chown(const struct px_mount_op *op)
{
    uint64_t ids = (uint64_t)op->flags;
    if (lchown(op->target, (uid_t)(ids >> 32), (gid_t)(ids & 0xffffffffu)) < 0)
        px_fail(PX_STEP_CHOWN, errno, op->target);
}

static void op_pivot(const char *new_root)
{
    /* pivot_root(".", "."): the old root stacks under the new one and is detached at once. */
    if (chdir(new_root) < 0)
        px_fail(PX_STEP_PIVOT_ROOT, errno, new_root);
    if (syscall(SYS_pivot_root, ".", ".") < 0)
        px_fail(PX_STEP_PIVOT_ROOT, errno, new_root);
    if (umount2(".", MNT_DETACH) < 0)
        px_fail(PX_STEP_PIVOT_ROOT, errno, "old root");
    if (chdir("/") < 0)
        px_fail(PX_STEP_PIVOT_ROOT, errno, "/");
}

static void op_mask(const char *target)
{
    struct stat st;
    if (stat(target, &st) < 0) {
        if (errno == ENOENT || errno == ENOTDIR)
            return;
        px_fail(PX_STEP_MASK, errno, target);
    }
    int rc;
    if (S_ISDIR(st.st_mode))
        rc = mount("tmpfs", target, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=0,mode=0555");
    else
        rc = mount("/dev/null", target, NULL, MS_BIND, NULL);
    if (rc < 0)
        px_fail(PX_STEP_MASK, errno, target);
}

static void op_readonly(const char *target)
{
    if (mount(target, target, NULL, MS_BIND | MS_REC, NULL) < 0) {
        if (errno == ENOENT || errno == ENOTDIR)
            return;
        px_fail(PX_STEP_READONLY, errno, target);
    }
    if (remount_readonly(target, 0) < 0)
        px_fail(PX_STEP_READONLY, errno, target);
}

void px_run_mount_ops(const struct px_config *cfg)
{
    for (int i = 0; i < cfg->n_mounts; i++) {
        const struct px_mount_op *op = &cfg->mounts[i];
        switch (op->kind) {
        case PX_OP_MOUNT: /* a NULL source and fstype: a propagation change (MS_SHARED... | MS_REC) */
            if (mount(op->source, op->target, op->fstype, op->flags, op->data) < 0)
                px_fail(PX_STEP_MOUNT, errno, op->target);
            break;
        case PX_OP_BIND:
            op_bind(op);
            break;
        case PX_OP_MKDIR:
            if (mkdir(op->target, 0755) < 0 && errno != EEXIST)
                px_fail(PX_STEP_MKDIR, errno, op->target);
            break;
        case PX_OP_SYMLINK:
            if (symlink(op->source, op->target) < 0 && errno != EEXIST)
                px_fail(PX_STEP_SYMLINK, errno, op->target);
            break;
        case PX_OP_PIVOT:
            op_pivot(op->target);
            break;
        case PX_OP_MASK:
            op_mask(op->target);
            break;
        case PX_OP_READONLY:
            op_readonly(op->target);
            break;
        case PX_OP_MKNOD:
            op_mknod(op);
            break;
        case PX_OP_CHOWN:
            op_chown(op);
            break;
        case PX_OP_REMOUNT:
            if (mount(NULL, op->target, NULL, MS_REMOUNT | MS_BIND | op->flags | kept_mount_flags(op->target),
                      NULL) < 0)
                px_fail(PX_STEP_REMOUNT, errno, op->target);
            break;
        default:
            px_fail(PX_STEP_MOUNT, EINVAL, "unknown mount operation");
        }
    }
}
