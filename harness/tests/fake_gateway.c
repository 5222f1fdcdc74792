/* fake_gateway.c - a stand-in gateway for check_gateway.
 *
 *   fake_gateway --port N [--never-listen] [--ignore-term] [--fork-child|--daemon-child]
 *                [--child-pid-file PATH] [--exit-after-ms N] [--daemonize] [--busy-ms N]
 *
 * Listens on 127.0.0.1:N and greets every connection with "220 fake" then
 * closes it.  --ignore-term ignores SIGTERM (a gateway that does not stop
 * when asked); --fork-child first leaves a child in the same process group
 * that ignores SIGTERM too and writes its pid to --child-pid-file (before
 * listening, so the file exists once the port answers); --exit-after-ms
 * exits with status 3 after N ms; --never-listen never opens the port;
 * --daemonize forks, the child leaves the group (setsid), writes its pid
 * to --child-pid-file and serves, and the parent exits 0 once the child
 * listens; --busy-ms greets "421 starting" for the first N ms of listening.
 */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void write_pid_file(const char *path, pid_t pid)
{
    /* Written under a temporary name and renamed, so a reader never sees
     * a half-written pid. */
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f || fprintf(f, "%d\n", (int)pid) < 0 || fclose(f) != 0 || rename(tmp, path) != 0) {
        perror("fake_gateway: pid file");
        exit(1);
    }
}

int main(int argc, char **argv)
{
    int port = 0, never_listen = 0, ignore_term = 0, fork_child = 0;
    long exit_after = -1, busy_ms = 0;
    int daemonize = 0;
    const char *pidfile = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--port") == 0 && i + 1 < argc)
            port = atoi(argv[++i]);
        else if (strcmp(argv[i], "--never-listen") == 0)
            never_listen = 1;
        else if (strcmp(argv[i], "--ignore-term") == 0)
            ignore_term = 1;
        else if (strcmp(argv[i], "--fork-child") == 0)
            fork_child = 1;
        else if (strcmp(argv[i], "--daemon-child") == 0)
            fork_child = 2;
        else if (strcmp(argv[i], "--child-pid-file") == 0 && i + 1 < argc)
            pidfile = argv[++i];
        else if (strcmp(argv[i], "--exit-after-ms") == 0 && i + 1 < argc)
            exit_after = atol(argv[++i]);
        else if (strcmp(argv[i], "--busy-ms") == 0 && i + 1 < argc)
            busy_ms = atol(argv[++i]);
        else if (strcmp(argv[i], "--daemonize") == 0)
            daemonize = 1;
        else {
            fprintf(stderr, "fake_gateway: bad argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (port <= 0 || port > 65535) {
        fprintf(stderr, "fake_gateway: --port N required\n");
        return 2;
    }
    fprintf(stderr, "fake_gateway: pid %d pgid %d port %d\n", (int)getpid(), (int)getpgrp(), port);

    if (fork_child) {
        /* The child reports through a pipe once it has left the group, so
         * the pid file (and the port) appear only after that. */
        int sync[2];
        if (pipe(sync) != 0) {
            perror("fake_gateway: pipe");
            return 1;
        }
        pid_t c = fork();
        if (c < 0) {
            perror("fake_gateway: fork");
            return 1;
        }
        if (c == 0) {
            /* --daemon-child leaves the process group as daemons do
             * (setsid), and obeys SIGTERM; --fork-child stays and ignores it. */
            if (fork_child == 2)
                setsid();
            else
                signal(SIGTERM, SIG_IGN);
            close(sync[0]);
            if (write(sync[1], "x", 1) != 1)
                _exit(1);
            close(sync[1]);
            for (;;)
                pause();
        }
        close(sync[1]);
        char b;
        if (read(sync[0], &b, 1) != 1) {
            fprintf(stderr, "fake_gateway: child did not start\n");
            return 1;
        }
        close(sync[0]);
        if (pidfile)
            write_pid_file(pidfile, c);
    }
    if (ignore_term)
        signal(SIGTERM, SIG_IGN);
    int dsync[2] = {-1, -1};
    if (daemonize) {
        if (pipe(dsync) != 0) {
            perror("fake_gateway: pipe");
            return 1;
        }
        pid_t c = fork();
        if (c < 0) {
            perror("fake_gateway: fork");
            return 1;
        }
        if (c > 0) {
            /* The parent goes once the daemon listens, as daemons do. */
            char b;
            close(dsync[1]);
            return read(dsync[0], &b, 1) == 1 ? 0 : 1;
        }
        close(dsync[0]);
        setsid();
        if (pidfile)
            write_pid_file(pidfile, getpid());
    }

    long long deadline = exit_after >= 0 ? now_ms() + exit_after : -1;
    int lfd = -1;
    if (!never_listen) {
        lfd = socket(AF_INET, SOCK_STREAM, 0);
        int one = 1;
        setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        struct sockaddr_in sa = {.sin_family = AF_INET,
                                 .sin_port = htons((unsigned short)port),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(lfd, 16) != 0) {
            perror("fake_gateway: listen");
            return 1;
        }
    }
    long long busy_until = now_ms() + busy_ms;
    if (dsync[1] >= 0) {
        if (write(dsync[1], "x", 1) != 1)
            return 1;
        close(dsync[1]);
    }
    for (;;) {
        int timeout = -1;
        if (deadline >= 0) {
            long long left = deadline - now_ms();
            if (left <= 0)
                return 3;
            timeout = (int)left;
        }
        struct pollfd pfd = {.fd = lfd, .events = POLLIN};
        int n = poll(&pfd, lfd >= 0 ? 1 : 0, timeout);
        if (n < 0 && errno != EINTR) {
            perror("fake_gateway: poll");
            return 1;
        }
        if (n > 0 && (pfd.revents & POLLIN)) {
            int c = accept(lfd, NULL, NULL);
            if (c >= 0) {
                static const char greet[] = "220 fake\r\n", busy[] = "421 starting\r\n";
                int b = now_ms() < busy_until;
                if (write(c, b ? busy : greet, b ? sizeof(busy) - 1 : sizeof(greet) - 1) < 0)
                    perror("fake_gateway: write");
                close(c);
            }
        }
    }
}
