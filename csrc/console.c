/*
 * console.c — the task's terminal when the plan has a console socket
 * (cfg->console_socket_fd: OCI's --console-socket, connected by the caller
 * before the clone, since the path is out of reach after pivot_root).
 *
 * It runs in the task (csrc/task.c) after setsid, in place of its stdio,
 * so after pivot_root and the whole mount plan: the pty comes from the
 * devpts of the task's own root.
 *
 *   task                                            the socket's other end
 *   ----                                            ----------------------
 *   open /dev/ptmx (O_NOCTTY), unlock (TIOCSPTLCK 0)
 *   slave = TIOCGPTPEER, its number N = TIOCGPTN
 *   [rows/cols: TIOCSWINSZ]
 *   [own mount ns: bind /dev/pts/N on /dev/console]
 *   sendmsg("/dev/ptmx", SCM_RIGHTS {master}) ---> recvmsg: the master
 *   close master and socket
 *   slave -> 0, 1, 2; TIOCSCTTY
 *
 * One sendmsg with exactly one fd, its name as the data, as runc sends it:
 * clients (conmon, containerd's shim, runtime-tools' tests) read one message.
 * The slave is opened through the master (TIOCGPTPEER), not by its path, so
 * it is the master's own peer whatever /dev/pts is; the path is only used as
 * the source of the /dev/console bind. That bind is made only in a mount
 * namespace the task made (never the host's, nor a joined task's); a missing
 * /dev/console is created as an empty file where /dev is writable, else left
 * out.
 *
 * Like the rest of the child it allocates nothing and takes no locks; a
 * failure is px_fail(PX_STEP_CONSOLE, errno, what it worked on).
 */
#define _GNU_SOURCE
#define PX_SHIM_INTERNAL
#include "pyexec.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#ifndef TIOCGPTPEER
#define TIOCGPTPEER _IO('T', 0x41)
#endif

static const char ptmx[] = "/dev/ptmx";
static const char console[] = "/dev/console";

/* "/dev/pts/" + n into buf (at least 24 bytes). */
static void pts_path(char *buf, unsigned int n)
{
    char digits[12];
    int d = 0;
    do {
        digits[d++] = (char)('0' + n % 10);
        n /= 10;
    } while (n);
    size_t len = px_str_copy(buf, 24, "/dev/pts/");
    while (d)
        buf[len++] = digits[--d];
    buf[len] = '\0';
}

static void bind_console(unsigned int n)
{
    char path[24];
    struct stat st;
    if (stat(console, &st) < 0) {
        if (errno != ENOENT)
            px_fail(PX_STEP_CONSOLE, errno, console);
        int fd = open(console, O_WRONLY | O_CREAT | O_EXCL | O_NOCTTY | O_CLOEXEC, 0600);
        if (fd < 0)
            return; /* a read-only /dev without one: no /dev/console */
        close(fd);
    }
    pts_path(path, n);
    if (mount(path, console, NULL, MS_BIND, NULL) < 0)
        px_fail(PX_STEP_CONSOLE, errno, console);
}

static void send_master(int sock, int master)
{
    ssize_t n = px_send_fd(sock, master, ptmx, sizeof ptmx - 1); /* csrc/sendfd.c; runc sends this name too */
    if (n != (ssize_t)(sizeof ptmx - 1))
        px_fail(PX_STEP_CONSOLE, n < 0 ? errno : EIO, "sendmsg to the console socket");
}

void px_setup_console(const struct px_config *cfg)
{
    int master = open(ptmx, O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (master < 0)
        px_fail(PX_STEP_CONSOLE, errno, ptmx);
    int unlock = 0;
    unsigned int n = 0;
    if (ioctl(master, TIOCSPTLCK, &unlock) < 0)
        px_fail(PX_STEP_CONSOLE, errno, "TIOCSPTLCK");
    if (ioctl(master, TIOCGPTN, &n) < 0)
        px_fail(PX_STEP_CONSOLE, errno, "TIOCGPTN");
    int slave = ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (slave < 0)
        px_fail(PX_STEP_CONSOLE, errno, "TIOCGPTPEER");
    if (cfg->console_rows || cfg->console_cols) {
        struct winsize ws;
        memset(&ws, 0, sizeof ws);
        ws.ws_row = (unsigned short)cfg->console_rows;
        ws.ws_col = (unsigned short)cfg->console_cols;
        if (ioctl(master, TIOCSWINSZ, &ws) < 0)
            px_fail(PX_STEP_CONSOLE, errno, "TIOCSWINSZ");
    }
    if ((cfg->clone_flags & CLONE_NEWNS) && cfg->join_pidfd < 0)
        bind_console(n);
    send_master(cfg->console_socket_fd, master);
    close(master);
    close(cfg->console_socket_fd);
    /* Above 2 first: a slave that got fd 0..2 would keep its close-on-exec flag through dup2 onto itself. */
    int high = fcntl(slave, F_DUPFD_CLOEXEC, 3);
    if (high < 0)
        px_fail(PX_STEP_CONSOLE, errno, "dup");
    close(slave);
    for (int i = 0; i < 3; i++)
        if (dup2(high, i) < 0)
            px_fail(PX_STEP_CONSOLE, errno, "dup2");
    close(high);
    if (ioctl(0, TIOCSCTTY, 0) < 0)
        px_fail(PX_STEP_CONSOLE, errno, "TIOCSCTTY");
}
