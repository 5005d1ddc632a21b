/*
 * logmon.c — rotated log files <base>.0, <base>.1, ... (see logmon.h for the rules).
 *
 * Syscalls and string helpers only: no stdio, no malloc, no locale. The
 * directory is listed with getdents64 into a stack buffer.
 */
#define _GNU_SOURCE
#include "logmon.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define NAME_LEN (256 + 16)          /* base, '.', up to 10 digits, NUL */
#define MAX_DIGITS 9                 /* indexes fit an int with room to grow */
#define OPEN_ATTEMPTS 4              /* replacing planted names before giving up */

struct px_dirent64 {
    uint64_t d_ino;
    int64_t d_off;
    unsigned short d_reclen;
    unsigned char d_type;
    char d_name[];
};

uint64_t px_log_slack(uint64_t max_size)
{
    uint64_t slack = max_size / 16;
    return slack > PX_LOG_MAX_SLACK ? PX_LOG_MAX_SLACK : slack;
}

/* Decimal digits of value at out (no NUL); returns their count. */
static size_t put_decimal(char *out, uint64_t value)
{
    char tmp[24];
    size_t n = 0, i;
    do {
        tmp[n++] = (char)('0' + value % 10);
        value /= 10;
    } while (value);
    for (i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    return n;
}

static void file_name(const struct px_log *log, int index, char out[NAME_LEN])
{
    size_t blen = strlen(log->base);
    memcpy(out, log->base, blen);
    out[blen] = '.';
    out[blen + 1 + put_decimal(out + blen + 1, (uint64_t)index)] = '\0';
}

/* The index of name when it is exactly "<base>.<N>" (canonical decimal), else -1. */
static int parse_index(const char *name, const char *base, size_t blen)
{
    const char *digits;
    size_t n;
    int value = 0;

    if (strncmp(name, base, blen) != 0 || name[blen] != '.')
        return -1;
    digits = name + blen + 1;
    n = strlen(digits);
    if (n == 0 || n > MAX_DIGITS || (n > 1 && digits[0] == '0'))
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (digits[i] < '0' || digits[i] > '9')
            return -1;
        value = value * 10 + (digits[i] - '0');
    }
    return value;
}

/* Lists the directory: *max_index gets the highest index of <base> (-1: none);
 * with purge_upto >= 0, files of <base> with index <= purge_upto are deleted
 * (failures ignored: a file we cannot delete is no reason to stop logging). */
static int scan(const struct px_log *log, int purge_upto, int *max_index)
{
    char buf[4096] __attribute__((aligned(8)));
    size_t blen = strlen(log->base);
    int dfd, err = 0;

    *max_index = -1;
    dfd = openat(log->dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return -errno;
    for (;;) {
        long n = syscall(SYS_getdents64, dfd, buf, sizeof(buf));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            err = -errno;
            break;
        }
        if (n == 0)
            break;
        for (long pos = 0; pos < n;) {
            struct px_dirent64 *d = (struct px_dirent64 *)(buf + pos);
            int index = parse_index(d->d_name, log->base, blen);
            pos += d->d_reclen;
            if (index < 0)
                continue;
            if (purge_upto >= 0 && index <= purge_upto) {
                unlinkat(log->dir_fd, d->d_name, 0);
                continue;
            }
            if (index > *max_index)
                *max_index = index;
        }
    }
    close(dfd);
    return err;
}

static void purge(const struct px_log *log)
{
    int ignored;
    if (log->index - log->max_files >= 0)
        scan(log, log->index - log->max_files, &ignored);
}

/* Whether the file (size bytes, opened by us as fd) ends in the middle of a
 * line. Our fd is write-only, so the last byte is read through a second open,
 * accepted only when it is the same inode. Unknown counts as "not midline". */
static int ends_midline(const struct px_log *log, const char *name, const struct stat *st)
{
    struct stat rst;
    char last;
    int rfd, midline = 0;

    if (st->st_size <= 0)
        return 0;
    rfd = openat(log->dir_fd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
    if (rfd < 0)
        return 0;
    if (fstat(rfd, &rst) == 0 && rst.st_dev == st->st_dev && rst.st_ino == st->st_ino &&
        pread(rfd, &last, 1, st->st_size - 1) == 1)
        midline = last != '\n';
    close(rfd);
    return midline;
}

/* Opens <base>.<index> for appending. Anything at that name other than a
 * regular file with one link (symlink: ELOOP through O_NOFOLLOW; fifo: ENXIO
 * or a non-regular fstat; hard link: st_nlink > 1) is unlinked and the file
 * created anew, exclusively. */
static int open_index(struct px_log *log)
{
    char name[NAME_LEN];
    int excl = 0;

    file_name(log, log->index, name);
    for (int attempt = 0; attempt < OPEN_ATTEMPTS; attempt++) {
        struct stat st;
        int flags, fd;

        fd = openat(log->dir_fd, name,
                    O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | excl,
                    0640);
        if (fd < 0) {
            int err = errno;
            if (err == EINTR)
                continue;
            if (err != ELOOP && err != ENXIO && err != EEXIST)
                return -err;
            if (unlinkat(log->dir_fd, name, 0) < 0 && errno != ENOENT)
                return -errno;
            excl = O_EXCL;
            continue;
        }
        if (fstat(fd, &st) < 0) {
            int err = errno;
            close(fd);
            return -err;
        }
        if (!S_ISREG(st.st_mode) || st.st_nlink != 1) {
            close(fd);
            if (unlinkat(log->dir_fd, name, 0) < 0 && errno != ENOENT)
                return -errno;
            excl = O_EXCL;
            continue;
        }
        flags = fcntl(fd, F_GETFL);
        if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0) {
            int err = errno;
            close(fd);
            return -err;
        }
        log->fd = fd;
        log->size = (uint64_t)st.st_size;
        log->midline = ends_midline(log, name, &st);
        return 0;
    }
    return -ELOOP;
}

static int rotate(struct px_log *log)
{
    if (log->fd >= 0)
        close(log->fd);
    log->fd = -1;
    log->index++;
    log->size = 0;
    log->midline = 0;
    int err = open_index(log);
    if (err == 0)
        purge(log);
    return err;
}

/* write(2) until done; EINTR retried, short writes continued. *done counts
 * the bytes written, also on failure. */
static int write_all(struct px_log *log, const char *buf, size_t len, size_t *done)
{
    size_t off = 0;
    int err = 0;

    while (off < len) {
        ssize_t n = write(log->fd, buf + off, len - off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            err = -errno;
            break;
        }
        if (n == 0) {
            err = -EIO;
            break;
        }
        off += (size_t)n;
    }
    if (off > 0) {
        log->size += off;
        log->midline = buf[off - 1] != '\n';
    }
    *done += off;
    return err;
}

/* The rotation rules of logmon.h. *done counts the bytes written. */
static int emit(struct px_log *log, const char *buf, size_t len, size_t *done)
{
    uint64_t slack = px_log_slack(log->max_size);
    const char *nl;

    *done = 0;
    while (len > 0) {
        size_t before = *done, n;
        int err, split = 0;

        if (log->fd < 0) {                              /* after a failed rotation, or closed */
            if ((err = open_index(log)) < 0)
                return err;
            purge(log);
        }
        if (log->size >= log->max_size) {
            /* Full: finish a line begun below the limit if its end is near. */
            uint64_t left = log->max_size + slack - log->size;
            if (log->midline && log->size < log->max_size + slack &&
                (nl = memchr(buf, '\n', len < left ? len : (size_t)left)) != NULL) {
                n = (size_t)(nl - buf) + 1;
            } else {
                if ((err = rotate(log)) < 0)
                    return err;
                continue;
            }
        } else {
            uint64_t room = log->max_size - log->size;
            uint64_t reach = room + slack;
            if (len <= room)
                n = len;
            else if ((nl = memrchr(buf, '\n', (size_t)room)) != NULL) {
                n = (size_t)(nl - buf) + 1;             /* 1. last newline that fits */
                split = 1;
            }
            else if ((nl = memchr(buf + room, '\n', (len < reach ? len : (size_t)reach) - (size_t)room)) != NULL)
                n = (size_t)(nl - buf) + 1;             /* 2. first newline within the slack */
            else if (log->size == 0 || memchr(buf + room, '\n', len - (size_t)room) == NULL)
                n = (size_t)room;                       /* 3. hard split */
            else {
                if ((err = rotate(log)) < 0)            /* 4. the chunk starts a new file */
                    return err;
                continue;
            }
        }
        err = write_all(log, buf, n, done);
        buf += *done - before;
        len -= *done - before;
        if (err < 0)
            return err;
        /* After a split at the last newline that fits, the rest goes to the next file. */
        if (split && len > 0 && (err = rotate(log)) < 0)
            return err;
    }
    return 0;
}

static const char *reason(int err, char scratch[32])
{
    switch (err) {
    case ENOSPC: return "no space left on device";
    case EIO: return "I/O error";
    case EDQUOT: return "disk quota exceeded";
    case EFBIG: return "file too large";
    default:
        memcpy(scratch, "error ", 6);
        scratch[6 + put_decimal(scratch + 6, (uint64_t)(err < 0 ? -err : err))] = '\0';
        return scratch;
    }
}

/* "[pyexec-logmon: N bytes dropped: reason]\n", after a '\n' when midline. */
static size_t marker(const struct px_log *log, char out[128])
{
    static const char head[] = "[pyexec-logmon: ";
    static const char mid[] = " bytes dropped: ";
    char scratch[32];
    const char *why = reason(log->last_errno, scratch);
    size_t n = 0, wlen = strlen(why);

    if (log->midline)
        out[n++] = '\n';
    memcpy(out + n, head, sizeof(head) - 1);
    n += sizeof(head) - 1;
    n += put_decimal(out + n, log->unreported);
    memcpy(out + n, mid, sizeof(mid) - 1);
    n += sizeof(mid) - 1;
    memcpy(out + n, why, wlen);
    n += wlen;
    out[n++] = ']';
    out[n++] = '\n';
    return n;
}

static void drop(struct px_log *log, size_t lost, int err)
{
    log->dropped += lost;
    log->unreported += lost;
    log->last_errno = -err;
}

int px_log_open(struct px_log *log, int dir_fd, const char *base, uint64_t max_size, int max_files)
{
    size_t blen;
    int max_index, err;

    memset(log, 0, sizeof(*log));
    log->dir_fd = dir_fd;
    log->fd = -1;
    log->max_size = max_size;
    log->max_files = max_files;
    if (base == NULL || max_size < PX_LOG_MIN_SIZE || max_files < 1)
        return -EINVAL;
    blen = strlen(base);
    if (blen == 0 || blen >= sizeof(log->base) || strchr(base, '/') != NULL ||
        strcmp(base, ".") == 0 || strcmp(base, "..") == 0)
        return -EINVAL;
    memcpy(log->base, base, blen + 1);
    if ((err = scan(log, -1, &max_index)) < 0)
        return err;
    log->index = max_index < 0 ? 0 : max_index;
    if ((err = open_index(log)) < 0)
        return err;
    purge(log);
    return 0;
}

int px_log_write(struct px_log *log, const char *buf, size_t len)
{
    size_t done;
    int err;

    if (len == 0)
        return 0;
    if (log->unreported > 0) {
        char line[128];
        size_t mlen = marker(log, line);
        if ((err = emit(log, line, mlen, &done)) < 0) {
            drop(log, len, err);
            return err;
        }
        log->unreported = 0;
    }
    if ((err = emit(log, buf, len, &done)) < 0) {
        drop(log, len - done, err);
        return err;
    }
    return 0;
}

int px_log_flush(struct px_log *log)
{
    return 0;
}

void px_log_close(struct px_log *log)
{
    if (log->fd >= 0)
        close(log->fd);
    log->fd = -1;
}
