/*
 * logmon.h — rotated log files of a task: <base>.0, <base>.1, ... in one directory.
 *
 * Written once, in C, and used twice: by the per-task monitor process
 * (csrc/monitor.c, which reads the task's stdout/stderr pipes) and, through
 * the cffi extension pyexec._shim, by pyexec/logmon.py. The region between
 * BEGIN CDEF and END CDEF is fed to cffi's cdef() by pyexec/_build_shim.py:
 * plain declarations only, no comments on #define lines there.
 *
 * The code uses syscalls and string helpers only (no stdio, no malloc): it
 * runs in the monitor after exec and in a threaded Python process.
 *
 * Files
 *   Opened with openat(dir_fd, "<base>.<N>", O_WRONLY|O_CREAT|O_APPEND|
 *   O_CLOEXEC|O_NOFOLLOW|O_NONBLOCK|O_NOCTTY, 0640); O_NONBLOCK (so a planted
 *   fifo cannot block the open) is cleared again once fstat() shows a
 *   regular file. If the name holds anything that is not a regular file with
 *   exactly one link (a symlink, a fifo, a hard link the task planted to
 *   redirect our writes), that name is unlinked and the file created anew
 *   with O_EXCL; the object it pointed to is never written.
 *   A directory in the way is an error (EISDIR).
 *   Only names exactly "<base>.<N>" are ours: N is decimal, 1-9 digits, no
 *   sign and no leading zero ("0" itself excepted). Other names are never
 *   touched ("<base>.01", "<base>.1.bak", "<base>.x", other bases).
 *
 * Open (px_log_open)
 *   Appends to the highest existing index N (its size continues from the
 *   file's size), creating <base>.0 when there is none, then deletes the
 *   files with index <= N - max_files (a restart with a smaller max_files).
 *
 * Rotation (px_log_write)
 *   slack = min(max_size / 16, 64 KiB). A chunk that fits below max_size is
 *   written whole. Otherwise it is split:
 *     1. at the last newline that still fits within max_size;
 *     2. else at the first newline that ends within max_size + slack (the
 *        line crossing the limit is finished in the current file);
 *     3. else, if the file is empty or the chunk has no newline at all, hard
 *        split: exactly up to max_size;
 *     4. else the file is rotated first and the chunk goes to the next one.
 *   A file that reached max_size while in the middle of a line may still get
 *   the rest of that line if its newline comes within the slack (even in a
 *   later write); a file at or past max_size that ends with a newline is
 *   rotated before the next byte. So no file exceeds max_size + slack, and a
 *   file ends with '\n' unless a line longer than the slack forced a split.
 *   Rotating closes the file, opens <base>.<index+1> and deletes the files
 *   with index <= index - max_files: the newest max_files files remain.
 *   The next file is created when data for it arrives, not before.
 *
 * Write errors
 *   EINTR is retried; short writes are continued. On any other error (ENOSPC,
 *   EIO, EDQUOT, EFBIG, or failing to create the next file) the rest of the
 *   chunk is dropped: 'dropped' grows by the bytes not written, 'last_errno'
 *   is set, and -errno is returned. Nothing is retried or buffered; the next
 *   px_log_write simply tries again. The first write that succeeds after a
 *   drop is preceded by one line
 *       [pyexec-logmon: <N> bytes dropped: <reason>]
 *   (N bytes since the previous marker; reason "no space left on device",
 *   "I/O error", "disk quota exceeded", "file too large", else "error <n>"),
 *   itself preceded by '\n' when the file was in the middle of a line.
 *   'dropped' and 'last_errno' are never reset (cumulative counters).
 *   Callers should ignore SIGXFSZ (Python does) so RLIMIT_FSIZE gives EFBIG.
 *
 * A struct px_log is used by one thread at a time. max_size >= 1024,
 * max_files >= 1, base non-empty, without '/', shorter than 256 bytes.
 */
#ifndef PYEXEC_LOGMON_H
#define PYEXEC_LOGMON_H

#include <stddef.h>
#include <stdint.h>

/* BEGIN CDEF */

#define PX_LOG_MIN_SIZE 1024
#define PX_LOG_MAX_SLACK 65536

struct px_log {
    int dir_fd;               /* directory of the files (not owned, not closed) */
    int fd;                   /* the current file, -1 when closed */
    int index;                /* N of <base>.N currently written */
    uint64_t size;            /* bytes in the current file */
    uint64_t max_size;        /* rotate before passing this (>= 1024) */
    int max_files;            /* keep at most this many files of <base> (>= 1) */
    uint64_t dropped;         /* bytes given up after write errors (ENOSPC, EIO) */
    int last_errno;           /* errno of the last failed write, 0 if none */
    char base[256];           /* e.g. "web.stdout" */
    /* Internal state, set by px_log_open. */
    uint64_t unreported;      /* dropped bytes not yet announced by a marker line */
    int midline;              /* the current file does not end with '\n' */
};

/* Finds the highest existing index N of <base>.N in dir_fd and appends to it
 * (creating <base>.0 when none), purges beyond max_files; 0 or -errno. */
int px_log_open(struct px_log *log, int dir_fd, const char *base, uint64_t max_size, int max_files);

/* Writes everything, rotating as needed; 0, or -errno when data had to be
 * dropped (counted in dropped). */
int px_log_write(struct px_log *log, const char *buf, size_t len);

/* Nothing is buffered in user space and fdatasync is not wanted: a no-op hook
 * kept for the callers; returns 0. */
int px_log_flush(struct px_log *log);

/* Closes the current file; safe to call twice, and after a failed open. A
 * later px_log_write reopens the current index (dir_fd must still be open). */
void px_log_close(struct px_log *log);

/* The slack of max_size: how far a file may pass it to end at a newline. */
uint64_t px_log_slack(uint64_t max_size);

/* END CDEF */

#endif
