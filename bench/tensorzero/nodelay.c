/*
 * nodelay.so: an LD_PRELOAD shim that turns TCP_NODELAY on for every TCP socket a
 * process accepts or connects.
 *
 * Why: stock TensorZero (2026.4.1) leaves Nagle's algorithm on for its sockets. A response
 * written in two pieces (headers, then body) on a keep-alive connection then waits for the
 * peer's ACK of the first piece before the second goes out, and the peer delays that ACK
 * (Linux: up to 40 ms): about 44 ms per request instead of a fraction of a millisecond.
 * The benchmark measures the gateway's own work, not that stall, so it runs the gateway
 * with this shim (bench/gateway_bench.py --tensorzero; bench/tensorzero/build.sh builds it):
 *
 *   cc -shared -fPIC -O2 -o nodelay.so nodelay.c -ldl
 *   LD_PRELOAD=/path/to/nodelay.so gateway --config-file tensorzero.toml
 *
 * It wraps accept, accept4 and connect (the real ones come from dlsym(RTLD_NEXT, ...)),
 * and after accept/accept4 (on the new socket) or before connect sets TCP_NODELAY when the
 * socket is a stream socket of family AF_INET or AF_INET6. Nothing else changes: the real
 * call's result and errno are returned as they are, and errors of the shim's own calls
 * are ignored. Only calls through the C library's symbols are seen (as Rust's std, mio
 * and Tokio make them); raw syscalls and io_uring are not.
 */

#define _GNU_SOURCE /* RTLD_NEXT */
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

/* glibc declares these functions with a transparent union for the address when
 * _GNU_SOURCE is defined; use its own macros so that the definitions match the
 * declarations either way (the address is passed through, never read). */
#ifndef __SOCKADDR_ARG
#define __SOCKADDR_ARG struct sockaddr *
#endif
#ifndef __CONST_SOCKADDR_ARG
#define __CONST_SOCKADDR_ARG const struct sockaddr *
#endif

typedef int (*accept_fn)(int, __SOCKADDR_ARG, socklen_t *);
typedef int (*accept4_fn)(int, __SOCKADDR_ARG, socklen_t *, int);
typedef int (*connect_fn)(int, __CONST_SOCKADDR_ARG, socklen_t);

/* Looked up on first use; a race between threads stores the same value twice. */
static accept_fn real_accept;
static accept4_fn real_accept4;
static connect_fn real_connect;

static void *next(const char *name)
{
    return dlsym(RTLD_NEXT, name);
}

/* Sets TCP_NODELAY on `fd` if it is a TCP socket; leaves errno as it found it. */
static void set_nodelay(int fd)
{
    int saved = errno;
    int type = 0, one = 1;
    socklen_t type_len = sizeof type;
    struct sockaddr_storage local;
    socklen_t local_len = sizeof local;

    if (fd >= 0
        && getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &type_len) == 0 && type == SOCK_STREAM
        && getsockname(fd, (struct sockaddr *)&local, &local_len) == 0
        && (local.ss_family == AF_INET || local.ss_family == AF_INET6))
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    errno = saved;
}

int accept(int fd, __SOCKADDR_ARG addr, socklen_t *addr_len)
{
    if (!real_accept && !(real_accept = (accept_fn)next("accept"))) {
        errno = ENOSYS;
        return -1;
    }
    int conn = real_accept(fd, addr, addr_len);
    if (conn >= 0)
        set_nodelay(conn);
    return conn;
}

int accept4(int fd, __SOCKADDR_ARG addr, socklen_t *addr_len, int flags)
{
    if (!real_accept4 && !(real_accept4 = (accept4_fn)next("accept4"))) {
        errno = ENOSYS;
        return -1;
    }
    int conn = real_accept4(fd, addr, addr_len, flags);
    if (conn >= 0)
        set_nodelay(conn);
    return conn;
}

/* Before the real connect, so that the option is in place for the first write (an
 * unconnected TCP socket already reports its family to getsockname). */
int connect(int fd, __CONST_SOCKADDR_ARG addr, socklen_t addr_len)
{
    if (!real_connect && !(real_connect = (connect_fn)next("connect"))) {
        errno = ENOSYS;
        return -1;
    }
    set_nodelay(fd);
    return real_connect(fd, addr, addr_len);
}
