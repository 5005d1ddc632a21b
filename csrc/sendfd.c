/*
 * sendfd.c — one fd over a unix socket, as clients and agents expect it: a
 * single sendmsg whose data is `data` (a stream socket carries no message
 * without data) and whose ancillary part is exactly one SCM_RIGHTS int
 * (cmsg_len == CMSG_LEN(sizeof(int)): conmon and go-runc check it). Used by
 * the child for the console's pty master (console.c) and a seccomp notify
 * listener (seccomp.c). It allocates nothing and reports nothing itself: the
 * caller px_fail()s with its own step.
 */
#define _GNU_SOURCE
#define PX_SHIM_INTERNAL
#include "pyexec.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

ssize_t px_send_fd(int sock, int fd, const void *data, size_t len)
{
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } control;
    struct iovec iov = {(void *)data, len};
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    memset(&control, 0, sizeof control);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.buf;
    msg.msg_controllen = sizeof control.buf;
    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cmsg), &fd, sizeof(int));
    ssize_t n;
    do
        n = sendmsg(sock, &msg, MSG_NOSIGNAL); /* a gone peer is an error, not our death by SIGPIPE */
    while (n < 0 && errno == EINTR);
    return n;
}
