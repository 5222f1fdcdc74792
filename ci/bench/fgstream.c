/* fgstream.c - benchmark endpoints for ci/bench: a minimal SMTP sink and a
 * sender that streams one long DATA body through it, so that a proxy in
 * between parses a real SMTP session (its parser follows the body up to
 * CRLF.CRLF, RFC 5321 §4.1.1.4).  Blocking sockets, loopback only.
 *
 *   fgstream sink [PORT]            accept sessions forever; prints the port
 *   fgstream send PORT MIB          one session with a MIB MiB body; prints
 *                                   "MiB/s" of body from DATA to its 250
 *   fgstream idle PORT N            open N connections and hold them until
 *                                   stdin closes; prints "open N" when all are up
 */
#define _GNU_SOURCE /* memmem */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUF (256 * 1024)

static void die(const char *m)
{
    perror(m);
    exit(2);
}

static void put(int fd, const char *s, size_t n)
{
    while (n) {
        ssize_t w = write(fd, s, n);
        if (w <= 0)
            die("write");
        s += w;
        n -= (size_t)w;
    }
}

/* put_s - the sink's write: a peer that left (a readiness probe that
 * connects and closes at once) ends its session, never the sink. */
static int put_s(int fd, const char *s, size_t n)
{
    while (n) {
        ssize_t w = write(fd, s, n);
        if (w <= 0)
            return -1;
        s += w;
        n -= (size_t)w;
    }
    return 0;
}

/* One reply line back: read up to LF (sessions here are lock-step). */
static void line(int fd, char *out, size_t cap)
{
    size_t n = 0;
    for (;;) {
        char ch;
        if (read(fd, &ch, 1) != 1)
            die("read reply");
        if (n + 1 < cap)
            out[n++] = ch;
        if (ch == '\n')
            break;
    }
    out[n] = '\0';
}

static void *session(void *arg)
{
    int fd = (int)(long)arg;
    static const char greet[] = "220 sink ESMTP\r\n";
    if (put_s(fd, greet, sizeof greet - 1)) {
        close(fd);
        return NULL;
    }
    char *buf = malloc(BUF);
    char tail[5] = {0};
    int in_data = 0;
    size_t ll = 0;
    char l[1024];
    for (;;) {
        ssize_t r = read(fd, buf, BUF);
        if (r <= 0)
            break;
        for (ssize_t i = 0; i < r; i++) {
            char ch = buf[i];
            if (in_data) {
                /* CRLF.CRLF ends the body: look across the previous read's
                 * last 4 octets, then through this read with memmem. */
                char edge[8];
                size_t k = (size_t)(r - i) < 4 ? (size_t)(r - i) : 4;
                memcpy(edge, tail + 1, 4);
                memcpy(edge + 4, buf + i, k);
                char *hit = memmem(edge, 4 + k, "\r\n.\r\n", 5);
                ssize_t endpos = -1;
                if (hit)
                    endpos = i + (ssize_t)(hit - edge) + 5 - 4;
                else if ((hit = memmem(buf + i, (size_t)(r - i), "\r\n.\r\n", 5)))
                    endpos = (ssize_t)(hit - buf) + 5;
                if (endpos < 0) {
                    /* keep the last 4 octets (edge holds them when the read is short) */
                    size_t tot = 4 + (size_t)(r - i);
                    if ((size_t)(r - i) >= 4)
                        memcpy(tail + 1, buf + r - 4, 4);
                    else
                        memcpy(tail + 1, edge + tot - 4, 4);
                    break;
                }
                in_data = 0;
                if (put_s(fd, "250 ok\r\n", 8))
                    goto out;
                i = endpos - 1;
                continue;
            }
            if (ll + 1 < sizeof l)
                l[ll++] = ch;
            if (ch != '\n')
                continue;
            l[ll] = '\0';
            ll = 0;
            if (!strncasecmp(l, "DATA", 4)) {
                in_data = 1;
                memcpy(tail, "\0\0\0\r\n", 5);
                if (put_s(fd, "354 go\r\n", 8))
                    goto out;
            } else if (!strncasecmp(l, "QUIT", 4)) {
                if (put_s(fd, "221 bye\r\n", 9))
                    goto out;
                goto out;
            } else {
                if (put_s(fd, "250 ok\r\n", 8))
                    goto out;
            }
        }
    }
out:
    free(buf);
    close(fd);
    return NULL;
}

static int listen_on(int port)
{
    int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 4096))
        die("listen");
    socklen_t al = sizeof a;
    getsockname(s, (struct sockaddr *)&a, &al);
    printf("%d\n", ntohs(a.sin_port));
    fflush(stdout);
    return s;
}

static int dial(int port)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(s, (struct sockaddr *)&a, sizeof a))
        die("connect");
    return s;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "sink")) {
        signal(SIGPIPE, SIG_IGN);
        int s = listen_on(argc > 2 ? atoi(argv[2]) : 0);
        for (;;) {
            int fd = accept(s, NULL, NULL);
            if (fd < 0)
                continue;
            pthread_t t;
            pthread_create(&t, NULL, session, (void *)(long)fd);
            pthread_detach(t);
        }
    }
    if (argc == 4 && !strcmp(argv[1], "send")) {
        int fd = dial(atoi(argv[2]));
        size_t total = (size_t)atol(argv[3]) << 20;
        char l[512];
        line(fd, l, sizeof l);
        static const char cmds[] = "EHLO bench\r\nMAIL FROM:<a@bench.test>\r\n"
                                   "RCPT TO:<b@bench.test>\r\nDATA\r\n";
        put(fd, cmds, sizeof cmds - 1);
        for (int i = 0; i < 4; i++)
            line(fd, l, sizeof l);
        if (strncmp(l, "354", 3))
            die("no 354");
        /* Body: 78-octet text lines (RFC 5322 §2.1.1), in 256 KiB writes. */
        char *buf = malloc(BUF);
        for (size_t i = 0; i < BUF; i++)
            buf[i] = (i % 80 == 78) ? '\r' : (i % 80 == 79) ? '\n' : (char)('a' + i % 26);
        size_t w = BUF - BUF % 80; /* whole lines per write */
        double t0 = now_s();
        for (size_t sent = 0; sent < total; sent += w)
            put(fd, buf, w);
        put(fd, ".\r\n", 3);
        line(fd, l, sizeof l);
        double dt = now_s() - t0;
        put(fd, "QUIT\r\n", 6);
        line(fd, l, sizeof l);
        printf("%.1f\n", (double)total / 1048576.0 / dt);
        return 0;
    }
    if (argc == 4 && !strcmp(argv[1], "idle")) {
        int n = atoi(argv[3]);
        struct rlimit rl = {(rlim_t)n + 64, (rlim_t)n + 64};
        setrlimit(RLIMIT_NOFILE, &rl);
        int *fds = calloc((size_t)n, sizeof *fds);
        for (int i = 0; i < n; i++)
            fds[i] = dial(atoi(argv[2]));
        printf("open %d\n", n);
        fflush(stdout);
        char b;
        while (read(0, &b, 1) > 0)
            ;
        for (int i = 0; i < n; i++)
            close(fds[i]);
        free(fds);
        return 0;
    }
    fprintf(stderr, "usage: fgstream sink [PORT] | send PORT MIB | idle PORT N\n");
    return 2;
}
