/*
 * loadgen.c - the chat benchmark's load generator (compiled by bench/run.py with gcc).
 *
 * One process, one thread, epoll, raw non-blocking sockets. It is built so that it is never the
 * bottleneck of a pure-Python server:
 *   - one HTTP upgrade per connection (the RFC 6455 sample key, so the expected
 *     Sec-WebSocket-Accept is a constant and no SHA-1 is computed here);
 *   - every frame it sends is built once at start-up (masked with a fixed non-zero key) and
 *     copied out of a pre-built burst buffer, many frames per send();
 *   - receivers parse only frame headers and skip payloads: a delivery is a final text/binary
 *     frame whose payload length is the benchmark's message size; payload bytes are never read
 *     (long payloads, and everything in --proto raw, are discarded in the kernel: MSG_TRUNC).
 *   - in --proto raw (the framing-free relay) a delivery is `--size` bytes of the byte stream.
 *
 *   - it polls at most every --poll-us microseconds (200) when little is ready, so that
 *     wake-ups are shared by many deliveries; this adds at most that much to a latency.
 *
 * Modes (all loops end by themselves: every phase has a deadline):
 *   echo    every connection pipelines --messages messages, --window in flight each (or
 *           stops sending after --duration seconds and waits for what is in flight);
 *           reports messages/s and p50/p99 latency (queue time included).
 *   fanout  the first --senders connections send --messages each; every user must receive
 *           senders*messages; flow control: a sender may have at most senders*window messages
 *           that it has not itself received yet. Reports deliveries/s and the time until the last
 *           user has the last message.
 *   idle    connect --conns users, read the server's RSS before/after, then time --broadcasts
 *           single broadcasts from user 0 until every open user has it. With --allow-fail,
 *           refused connections are counted by cause instead of aborting (the select() test).
 *
 * Output: one JSON object on stdout. Progress and errors go to stderr.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

enum { ST_FREE, ST_CONNECTING, ST_HANDSHAKE, ST_OPEN, ST_DEAD };
enum { F_CONNECT, F_HTTP, F_EOF_HS, F_RESET_HS, F_TIMEOUT, F_BAD_ACCEPT, F_CLOSED_OPEN, F_NREASONS };
static const char *reason_names[F_NREASONS] = {
    "connect_error", "http_refused", "closed_before_101", "reset_before_101",
    "handshake_timeout", "bad_accept", "closed_after_open"};

enum { PH_CONNECT, PH_SYNC, PH_RUN, PH_DONE };

struct conn {
    int fd;
    uint8_t state;
    uint8_t want_out;
    uint8_t hlen, hneed;
    uint8_t hdr[14];
    uint8_t got_close;
    uint16_t hslen;
    char *hsbuf;
    uint64_t payload_left, cur_len;
    uint64_t msgs;     /* deliveries counted (frames of the benchmark size) */
    uint64_t other;    /* any other frame */
    uint64_t rbytes;   /* raw mode: bytes received */
    uint64_t base;     /* msgs (ws) or rbytes (raw) at the start of the timed phase */
    uint64_t sent;     /* messages queued in the timed phase */
    uint64_t out_left; /* bytes still to write */
    uint32_t out_pos;  /* offset inside the periodic burst buffer */
    double *ts;        /* echo: send times of messages in flight (ring of `window`) */
    uint32_t ts_head, ts_count;
    double t_done;
};

/* options */
static const char *opt_host = "127.0.0.1";
static int opt_port = 0;
static const char *opt_path = "/";
static int opt_raw = 0;
static const char *opt_mode = "echo";
static int opt_conns = 10;
static int opt_senders = 1;
static long opt_messages = 100;
static long opt_size = 32;
static int opt_window = 8;
static int opt_broadcasts = 3;
static int opt_pending = 256;
static int opt_allow_fail = 0;
static double opt_timeout = 60.0;
static double opt_connect_timeout = 60.0;
static int opt_server_pid = 0;
static int opt_poll_us = 200;
static double opt_duration = 0; /* echo: stop sending after this many seconds (0: never) */
static double t_stop_sending = 1e300;

static struct conn *conns;
static int nconns;
static int epfd;
static int phase = PH_CONNECT;
static uint8_t *burst;
static size_t burst_len, flen;
static uint8_t rbuf[1 << 18];
static uint64_t total_sent;
static int n_open, n_pending, n_failed, n_ever_opened, reasons[F_NREASONS];
static int http_codes[600];
static int users_done;
static double t_last_done, t_last_send;
static double *lat;
static size_t nlat, lat_cap;
static uint64_t expected; /* fanout: deliveries each user must get in the timed phase */

static const char ACCEPT_FOR_SAMPLE_KEY[] = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "loadgen: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(2);
}

static double self_cpu(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec * 1e-6;
}

/* CPU time of the server process in seconds, all its threads; -1 when unknown. The sum of
   /proc/PID/task/TID/schedstat (nanoseconds) when it is readable, else utime+stime from
   /proc/PID/stat (clock ticks, 10 ms). Threads that ended are missing from the first: none
   ends during a timed phase. */
static double server_cpu_stat(void) {
    char path[64], buf[2048];
    snprintf(path, sizeof path, "/proc/%d/stat", opt_server_pid);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return -1;
    buf[n] = 0;
    char *p = strrchr(buf, ')'); /* the command name may contain spaces */
    if (!p) return -1;
    p += 2; /* now at field 3 (state) */
    unsigned long ut = 0, st = 0;
    int field = 3;
    while (*p && field < 14) {
        if (*p == ' ') field++;
        p++;
    }
    if (sscanf(p, "%lu %lu", &ut, &st) != 2) return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static double server_cpu(void) {
    if (!opt_server_pid) return -1;
    char path[300];
    snprintf(path, sizeof path, "/proc/%d/task", opt_server_pid);
    DIR *d = opendir(path);
    if (!d) return server_cpu_stat();
    unsigned long long total = 0;
    int found = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "/proc/%d/task/%.20s/schedstat", opt_server_pid, e->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        unsigned long long ns;
        if (fscanf(f, "%llu", &ns) == 1) {
            total += ns;
            found = 1;
        }
        fclose(f);
    }
    closedir(d);
    return found ? (double)total * 1e-9 : server_cpu_stat();
}

/* VmRSS of the server in KiB; -1 when unknown. */
static long server_rss_kb(void) {
    if (!opt_server_pid) return -1;
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", opt_server_pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1) break;
    fclose(f);
    return kb;
}

static void build_frames(void) {
    static const uint8_t key[4] = {0x37, 0xfa, 0x21, 0x3d};
    size_t hdr;
    uint8_t h[14];
    if (opt_raw) {
        hdr = 0;
    } else {
        h[0] = 0x81; /* FIN + text */
        if (opt_size < 126) {
            h[1] = 0x80 | (uint8_t)opt_size;
            hdr = 2;
        } else if (opt_size < 65536) {
            h[1] = 0x80 | 126;
            h[2] = (uint8_t)(opt_size >> 8);
            h[3] = (uint8_t)opt_size;
            hdr = 4;
        } else {
            h[1] = 0x80 | 127;
            for (int i = 0; i < 8; i++) h[2 + i] = (uint8_t)((uint64_t)opt_size >> (56 - 8 * i));
            hdr = 10;
        }
        memcpy(h + hdr, key, 4);
        hdr += 4;
    }
    flen = hdr + (size_t)opt_size;
    size_t reps = flen >= 65536 ? 1 : 65536 / flen;
    burst_len = reps * flen;
    burst = malloc(burst_len);
    if (!burst) die("out of memory");
    for (size_t r = 0; r < reps; r++) {
        uint8_t *f = burst + r * flen;
        memcpy(f, h, hdr);
        for (long i = 0; i < opt_size; i++) {
            uint8_t c = (uint8_t)('a' + (i % 26)); /* ASCII: valid UTF-8 text */
            f[hdr + i] = opt_raw ? c : (uint8_t)(c ^ key[i % 4]);
        }
    }
}

static void ep_set(struct conn *c, uint32_t events, int op) {
    struct epoll_event ev = {.events = events, .data.u32 = (uint32_t)(c - conns)};
    if (epoll_ctl(epfd, op, c->fd, &ev) < 0) die("epoll_ctl: %s", strerror(errno));
}

static void kill_conn(struct conn *c, int reason) {
    if (c->state == ST_DEAD || c->state == ST_FREE) return;
    if (c->state == ST_OPEN) n_open--;
    else n_pending--;
    if (reason >= 0) {
        reasons[reason]++;
        n_failed++;
    }
    c->state = ST_DEAD;
    if (c->fd >= 0) {
        struct linger lg = {1, 0}; /* abortive close: no TIME_WAIT pile-up between runs */
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        close(c->fd);
        c->fd = -1;
    }
    free(c->hsbuf);
    c->hsbuf = NULL;
}

static const char *handshake_request(size_t *len) {
    static char req[512];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                     opt_path, opt_host, opt_port);
    *len = (size_t)n;
    return req;
}

static void start_connect(struct conn *c) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket: %s (raise the open-file limit?)", strerror(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)opt_port)};
    if (inet_pton(AF_INET, opt_host, &sa.sin_addr) != 1) die("bad host %s (IPv4 only)", opt_host);
    c->fd = fd;
    c->state = ST_CONNECTING;
    n_pending++;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS) {
        kill_conn(c, F_CONNECT);
        return;
    }
    ep_set(c, EPOLLOUT, EPOLL_CTL_ADD);
}

static void flush(struct conn *c) {
    while (c->out_left) {
        size_t len = burst_len - c->out_pos;
        if (len > c->out_left) len = c->out_left;
        ssize_t n = send(c->fd, burst + c->out_pos, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                if (!c->want_out) {
                    c->want_out = 1;
                    ep_set(c, EPOLLIN | EPOLLOUT, EPOLL_CTL_MOD);
                }
                return;
            }
            kill_conn(c, F_CLOSED_OPEN);
            return;
        }
        c->out_left -= (uint64_t)n;
        c->out_pos = (uint32_t)((c->out_pos + (size_t)n) % flen);
    }
    if (c->want_out) {
        c->want_out = 0;
        ep_set(c, EPOLLIN, EPOLL_CTL_MOD);
    }
}

static void queue_msgs(struct conn *c, uint64_t n, double t) {
    if (!n || c->state != ST_OPEN) return;
    if (c->ts)
        for (uint64_t i = 0; i < n; i++) {
            c->ts[(c->ts_head + c->ts_count) % (uint32_t)opt_window] = t;
            c->ts_count++;
        }
    c->out_left += n * flen;
    if (phase == PH_RUN) {
        c->sent += n;
        total_sent += n;
        t_last_send = t;
    }
    if (!c->want_out) flush(c);
}

static uint64_t delivered(struct conn *c) {
    if (opt_raw) return (c->rbytes - c->base) / (uint64_t)opt_size;
    return c->msgs - c->base;
}

static void frame_done(struct conn *c) {
    uint8_t op = c->hdr[0] & 0x0f, fin = c->hdr[0] & 0x80;
    if (fin && (op == 1 || op == 2 || op == 0) && c->cur_len == (uint64_t)opt_size) c->msgs++;
    else if (op == 8) c->got_close = 1;
    else c->other++;
}

static void parse_ws(struct conn *c, const uint8_t *p, size_t n) {
    while (n) {
        if (c->payload_left) {
            size_t k = c->payload_left < n ? (size_t)c->payload_left : n;
            p += k;
            n -= k;
            c->payload_left -= k;
            if (!c->payload_left) frame_done(c);
            continue;
        }
        c->hdr[c->hlen++] = *p++;
        n--;
        if (c->hlen == 2) {
            uint8_t l = c->hdr[1] & 0x7f;
            c->hneed = (uint8_t)(2 + (l == 126 ? 2 : l == 127 ? 8 : 0) + ((c->hdr[1] & 0x80) ? 4 : 0));
        }
        if (c->hlen >= 2 && c->hlen == c->hneed) {
            uint64_t l = c->hdr[1] & 0x7f;
            if (l == 126) l = ((uint64_t)c->hdr[2] << 8) | c->hdr[3];
            else if (l == 127) {
                l = 0;
                for (int i = 0; i < 8; i++) l = (l << 8) | c->hdr[2 + i];
            }
            c->cur_len = l;
            c->payload_left = l;
            c->hlen = 0;
            if (!l) frame_done(c);
        }
    }
}

/* Mode logic after `c` received data (or at the start of the timed phase). */
static void pump(struct conn *c, double t);

static void on_open(struct conn *c) {
    c->state = ST_OPEN;
    n_pending--;
    n_open++;
    n_ever_opened++;
}

static void handle_handshake(struct conn *c) {
    if (!c->hsbuf) c->hsbuf = malloc(4096);
    ssize_t n = recv(c->fd, c->hsbuf + c->hslen, 4095 - c->hslen, 0);
    if (n == 0) {
        kill_conn(c, F_EOF_HS);
        return;
    }
    if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) return;
        kill_conn(c, errno == ECONNRESET ? F_RESET_HS : F_EOF_HS);
        return;
    }
    c->hslen = (uint16_t)(c->hslen + n);
    c->hsbuf[c->hslen] = 0;
    char *end = strstr(c->hsbuf, "\r\n\r\n");
    if (!end) {
        if (c->hslen >= 4095) kill_conn(c, F_HTTP);
        return;
    }
    int code = 0;
    if (sscanf(c->hsbuf, "HTTP/1.%*d %d", &code) != 1) code = 0;
    if (code != 101) {
        if (code > 0 && code < 600) http_codes[code]++;
        kill_conn(c, F_HTTP);
        return;
    }
    *end = 0;
    if (!strstr(c->hsbuf, ACCEPT_FOR_SAMPLE_KEY)) {
        kill_conn(c, F_BAD_ACCEPT);
        return;
    }
    size_t rest = (size_t)(c->hslen - ((end + 4) - c->hsbuf));
    uint8_t tmp[4096];
    memcpy(tmp, end + 4, rest);
    free(c->hsbuf);
    c->hsbuf = NULL;
    on_open(c);
    if (rest) parse_ws(c, tmp, rest);
}

static void handle_event(struct conn *c, uint32_t ev) {
    if (c->state == ST_CONNECTING) {
        int err = 0;
        socklen_t l = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
        if (err) {
            kill_conn(c, F_CONNECT);
            return;
        }
        if (opt_raw) {
            on_open(c);
            ep_set(c, EPOLLIN, EPOLL_CTL_MOD);
            return;
        }
        size_t len;
        const char *req = handshake_request(&len);
        if (send(c->fd, req, len, MSG_NOSIGNAL) != (ssize_t)len) {
            kill_conn(c, F_CONNECT);
            return;
        }
        c->state = ST_HANDSHAKE;
        ep_set(c, EPOLLIN, EPOLL_CTL_MOD);
        return;
    }
    if (c->state == ST_HANDSHAKE) {
        handle_handshake(c);
        return;
    }
    if (c->state != ST_OPEN) return;
    if (ev & EPOLLOUT) {
        flush(c);
        if (c->state != ST_OPEN) return;
    }
    if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        ssize_t n;
        if (opt_raw || c->payload_left >= 4096) {
            /* Bytes that are only counted are discarded in the kernel, never copied here
               (MSG_TRUNC on a TCP socket). */
            size_t want = opt_raw ? (size_t)1 << 22
                                  : (c->payload_left < ((uint64_t)1 << 22) ? (size_t)c->payload_left
                                                                           : (size_t)1 << 22);
            n = recv(c->fd, NULL, want, MSG_TRUNC | MSG_DONTWAIT);
            if (n > 0 && !opt_raw) {
                c->payload_left -= (uint64_t)n;
                if (!c->payload_left) frame_done(c);
                pump(c, now());
                return;
            }
        } else {
            n = recv(c->fd, rbuf, sizeof rbuf, 0);
        }
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            kill_conn(c, F_CLOSED_OPEN);
            return;
        }
        if (n > 0) {
            if (opt_raw) c->rbytes += (uint64_t)n;
            else parse_ws(c, rbuf, (size_t)n);
            if (c->got_close) {
                kill_conn(c, F_CLOSED_OPEN);
                return;
            }
            pump(c, now());
        }
    }
}

/* Run the event loop until `done()` or the deadline; returns 1 if done. */
static int loop(int (*done)(void), double deadline) {
    static struct epoll_event evs[1024];
    while (!done()) {
        double t = now();
        if (t >= deadline) return 0;
        int ms = (int)((deadline - t) * 1000) + 1;
        if (ms > 50) ms = 50;
        int n = epoll_wait(epfd, evs, 1024, ms);
        if (n < 0 && errno != EINTR) die("epoll_wait: %s", strerror(errno));
        for (int i = 0; i < n; i++) handle_event(&conns[evs[i].data.u32], evs[i].events);
        if (n < 64 && opt_poll_us > 0) {
            /* A light batch: let deliveries pile up in the socket buffers for a moment, so that
               one wake-up and one recv() take many frames (a wake-up per frame would cost the
               generator more CPU than the server spends sending the frame). */
            struct timespec pause = {0, (long)opt_poll_us * 1000L};
            nanosleep(&pause, NULL);
        }
    }
    return 1;
}

/* ---- connect phase ---- */
static int next_to_connect;
static int connect_target;
static int connect_done(void) {
    while (next_to_connect < connect_target && n_pending < opt_pending)
        start_connect(&conns[next_to_connect++]);
    return next_to_connect >= connect_target && n_pending == 0;
}

static void connect_range(int upto, double deadline) {
    connect_target = upto;
    if (!loop(connect_done, deadline)) {
        for (int i = 0; i < nconns; i++)
            if (conns[i].state == ST_CONNECTING || conns[i].state == ST_HANDSHAKE)
                kill_conn(&conns[i], F_TIMEOUT);
        for (int i = next_to_connect; i < upto; i++) {
            conns[i].state = ST_DEAD;
            reasons[F_TIMEOUT]++;
            n_failed++;
        }
        next_to_connect = upto;
    }
}

/* ---- sync: one broadcast from the first open user that every open user must see ---- */
static struct conn *first_open(void) {
    for (int i = 0; i < nconns; i++)
        if (conns[i].state == ST_OPEN) return &conns[i];
    return NULL;
}
static uint64_t *mark;
static int all_got_one_more(void) {
    for (int i = 0; i < nconns; i++) {
        struct conn *c = &conns[i];
        if (c->state != ST_OPEN) continue;
        uint64_t v = opt_raw ? c->rbytes / (uint64_t)opt_size : c->msgs;
        if (v <= mark[i]) return 0;
    }
    return 1;
}
static int broadcast_once(double timeout) {
    struct conn *s = first_open();
    if (!s) return 0;
    for (int i = 0; i < nconns; i++)
        mark[i] = opt_raw ? conns[i].rbytes / (uint64_t)opt_size : conns[i].msgs;
    queue_msgs(s, 1, now());
    return loop(all_got_one_more, now() + timeout);
}
static int sync_rounds;
static int sync_users(double deadline) {
    while (now() < deadline && first_open()) {
        double left = deadline - now();
        sync_rounds++;
        if (broadcast_once(left < 2.0 ? left : 2.0)) return 1;
    }
    return 0;
}

static void set_base(void) {
    for (int i = 0; i < nconns; i++) {
        conns[i].base = opt_raw ? conns[i].rbytes : conns[i].msgs;
        if (opt_raw) conns[i].base -= conns[i].rbytes % (uint64_t)opt_size;
        conns[i].sent = 0;
        conns[i].t_done = 0;
    }
    total_sent = 0;
    users_done = 0;
}

/* ---- timed phase ---- */
static int is_echo;
static int run_done(void) {
    if (is_echo && now() >= t_stop_sending) /* a user with nothing in flight gets no event */
        for (int i = 0; i < nconns; i++)
            if (conns[i].state == ST_OPEN && !conns[i].t_done) pump(&conns[i], now());
    return users_done >= n_open || n_open == 0;
}

static void pump(struct conn *c, double t) {
    if (phase != PH_RUN) return;
    uint64_t got = delivered(c);
    if (is_echo) {
        if (c->ts) {
            /* every echoed message pops the oldest send time */
            uint64_t acked = c->sent - c->ts_count;
            while (acked < got && c->ts_count) {
                if (nlat < lat_cap) lat[nlat++] = t - c->ts[c->ts_head];
                c->ts_head = (c->ts_head + 1) % (uint32_t)opt_window;
                c->ts_count--;
                acked++;
            }
        }
        int stopped = t >= t_stop_sending;
        if (!c->t_done && (got >= (uint64_t)opt_messages || (stopped && got >= c->sent))) {
            c->t_done = t;
            t_last_done = t;
            users_done++;
            return;
        }
        uint64_t inflight = c->sent - got;
        if (!stopped && c->sent < (uint64_t)opt_messages && inflight < (uint64_t)opt_window) {
            uint64_t n = (uint64_t)opt_window - inflight;
            if (n > (uint64_t)opt_messages - c->sent) n = (uint64_t)opt_messages - c->sent;
            queue_msgs(c, n, t);
        }
    } else {
        if (!c->t_done && got >= expected) {
            c->t_done = t;
            t_last_done = t;
            users_done++;
        }
        int idx = (int)(c - conns);
        if (idx < opt_senders && c->sent < (uint64_t)opt_messages) {
            uint64_t cap = (uint64_t)opt_senders * (uint64_t)opt_window;
            uint64_t inflight = total_sent - got;
            if (inflight < cap) {
                uint64_t n = cap - inflight;
                if (n > (uint64_t)opt_messages - c->sent) n = (uint64_t)opt_messages - c->sent;
                queue_msgs(c, n, t);
            }
        }
    }
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}
static double pct(double *v, size_t n, double q) {
    if (!n) return -1;
    size_t i = (size_t)(q * (double)(n - 1) + 0.5);
    return v[i];
}

static void print_common(double gen0, double gen1, double srv0, double srv1) {
    printf("\"conns\": %d, \"opened\": %d, \"open_at_end\": %d, \"failed\": %d, \"failures\": {",
           nconns, n_ever_opened, n_open, n_failed);
    int first = 1;
    for (int r = 0; r < F_NREASONS; r++)
        if (reasons[r]) {
            printf("%s\"%s\": %d", first ? "" : ", ", reason_names[r], reasons[r]);
            first = 0;
        }
    printf("}, \"http_codes\": {");
    first = 1;
    for (int i = 0; i < 600; i++)
        if (http_codes[i]) {
            printf("%s\"%d\": %d", first ? "" : ", ", i, http_codes[i]);
            first = 0;
        }
    printf("}, \"gen_cpu_s\": %.4f, \"srv_cpu_s\": %.4f", gen1 - gen0,
           (srv0 >= 0 && srv1 >= 0) ? srv1 - srv0 : -1.0);
}

static void usage(void) {
    fprintf(stderr,
            "usage: loadgen --port P [--host 127.0.0.1] [--raw] --mode echo|fanout|idle\n"
            "  [--conns N] [--senders K] [--messages M] [--size BYTES] [--window W]\n"
            "  [--broadcasts B] [--pending C] [--allow-fail] [--timeout S]\n"
            "  [--connect-timeout S] [--server-pid PID] [--poll-us US] [--duration S]\n");
    exit(2);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
#define ARG (i + 1 < argc ? argv[++i] : (usage(), ""))
        if (!strcmp(a, "--host")) opt_host = ARG;
        else if (!strcmp(a, "--port")) opt_port = atoi(ARG);
        else if (!strcmp(a, "--path")) opt_path = ARG;
        else if (!strcmp(a, "--raw")) opt_raw = 1;
        else if (!strcmp(a, "--mode")) opt_mode = ARG;
        else if (!strcmp(a, "--conns")) opt_conns = atoi(ARG);
        else if (!strcmp(a, "--senders")) opt_senders = atoi(ARG);
        else if (!strcmp(a, "--messages")) opt_messages = atol(ARG);
        else if (!strcmp(a, "--size")) opt_size = atol(ARG);
        else if (!strcmp(a, "--window")) opt_window = atoi(ARG);
        else if (!strcmp(a, "--broadcasts")) opt_broadcasts = atoi(ARG);
        else if (!strcmp(a, "--pending")) opt_pending = atoi(ARG);
        else if (!strcmp(a, "--allow-fail")) opt_allow_fail = 1;
        else if (!strcmp(a, "--timeout")) opt_timeout = atof(ARG);
        else if (!strcmp(a, "--connect-timeout")) opt_connect_timeout = atof(ARG);
        else if (!strcmp(a, "--server-pid")) opt_server_pid = atoi(ARG);
        else if (!strcmp(a, "--poll-us")) opt_poll_us = atoi(ARG);
        else if (!strcmp(a, "--duration")) opt_duration = atof(ARG);
        else usage();
    }
    if (!opt_port || opt_conns < 1 || opt_size < 1 || opt_window < 1 || opt_messages < 0) usage();
    if (opt_senders > opt_conns) opt_senders = opt_conns;
    int mode_echo = !strcmp(opt_mode, "echo"), mode_fan = !strcmp(opt_mode, "fanout"),
        mode_idle = !strcmp(opt_mode, "idle");
    if (!mode_echo && !mode_fan && !mode_idle) usage();
    is_echo = mode_echo;

    /* as many sockets as the hard limit allows (the server does the same for itself) */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && (rlim_t)opt_conns + 16 > rl.rlim_cur)
        die("%d connections need more than the open-file limit %lu", opt_conns,
            (unsigned long)rl.rlim_cur);

    nconns = opt_conns;
    conns = calloc((size_t)nconns, sizeof *conns);
    mark = calloc((size_t)nconns, sizeof *mark);
    if (!conns || !mark) die("out of memory");
    for (int i = 0; i < nconns; i++) conns[i].fd = -1;
    epfd = epoll_create1(EPOLL_CLOEXEC);
    build_frames();
    if (mode_echo) {
        lat_cap = (size_t)nconns * (size_t)opt_messages;
        lat = malloc(lat_cap * sizeof *lat);
        for (int i = 0; i < nconns; i++) conns[i].ts = malloc((size_t)opt_window * sizeof(double));
        if (!lat) die("out of memory");
    }

    double t0 = now();
    long rss_before = -1, rss_after = -1, rss_end = -1;
    int synced = 1;

    if (mode_idle) {
        /* user 0 alone first, and one message through the server, so that lazy imports and
           first-use allocations are not charged to the idle users */
        connect_range(1, t0 + opt_connect_timeout);
        if (n_open < 1) die("the first connection failed");
        phase = PH_SYNC;
        sync_users(now() + 10);
        phase = PH_CONNECT;
        usleep(200000);
        rss_before = server_rss_kb();
    }
    connect_range(nconns, t0 + opt_connect_timeout);
    double t_connected = now();
    if (n_failed && !opt_allow_fail) {
        fprintf(stderr, "loadgen: %d of %d connections failed\n", n_failed, nconns);
    }
    if (!mode_echo) {
        phase = PH_SYNC;
        synced = sync_users(now() + 20);
        if (!synced) fprintf(stderr, "loadgen: not every user received the sync broadcast\n");
    }
    if (mode_idle) {
        usleep(300000);
        rss_after = server_rss_kb();
    }

    /* ---- the timed phase ---- */
    phase = PH_RUN;
    set_base();
    double gen0 = self_cpu(), srv0 = server_cpu();
    double ts = now();
    int ok = 0;
    double bc[64];
    int nbc = 0;
    if (mode_echo || mode_fan) {
        expected = (uint64_t)opt_senders * (uint64_t)opt_messages;
        if (mode_echo && opt_duration > 0) t_stop_sending = ts + opt_duration;
        for (int i = 0; i < nconns; i++)
            if (conns[i].state == ST_OPEN) pump(&conns[i], ts);
        ok = loop(run_done, ts + opt_timeout);
    } else {
        ok = synced;
        for (int b = 0; b < opt_broadcasts && b < 64 && ok; b++) {
            double tb = now();
            ok = broadcast_once(opt_timeout);
            bc[nbc++] = now() - tb;
            usleep(50000);
        }
        rss_end = server_rss_kb();
    }
    double te = now();
    double gen1 = self_cpu(), srv1 = server_cpu();
    phase = PH_DONE;

    uint64_t total = 0, min_got = UINT64_MAX;
    for (int i = 0; i < nconns; i++)
        if (conns[i].state == ST_OPEN || conns[i].t_done) {
            uint64_t g = delivered(&conns[i]);
            total += g;
            if (g < min_got) min_got = g;
        }
    uint64_t other = 0;
    for (int i = 0; i < nconns; i++) other += conns[i].other;
    if (min_got == UINT64_MAX) min_got = 0;

    printf("{\"mode\": \"%s\", \"proto\": \"%s\", \"size\": %ld, \"ok\": %s, ", opt_mode,
           opt_raw ? "raw" : "ws", opt_size, ok ? "true" : "false");
    print_common(gen0, gen1, srv0, srv1);
    printf(", \"connect_s\": %.4f, \"sync_rounds\": %d, \"other_frames\": %llu",
           t_connected - t0, sync_rounds, (unsigned long long)other);
    if (mode_echo) {
        double wall = (ok ? t_last_done : te) - ts;
        qsort(lat, nlat, sizeof *lat, cmp_double);
        printf(", \"window\": %d, \"messages\": %llu, \"stopped_by_duration\": %s, \"wall_s\": %.6f, \"msgs_per_s\": %.1f, "
               "\"mb_per_s\": %.3f, \"lat_p50_ms\": %.4f, \"lat_p99_ms\": %.4f, \"lat_max_ms\": %.4f",
               opt_window, (unsigned long long)total,
               total < (uint64_t)nconns * (uint64_t)opt_messages ? "true" : "false", wall, wall > 0 ? (double)total / wall : 0,
               wall > 0 ? (double)total * (double)opt_size / wall / 1e6 : 0,
               pct(lat, nlat, 0.5) * 1e3, pct(lat, nlat, 0.99) * 1e3,
               nlat ? lat[nlat - 1] * 1e3 : -1.0);
    } else if (mode_fan) {
        double wall = (ok ? t_last_done : te) - ts;
        printf(", \"senders\": %d, \"window\": %d, \"per_sender\": %ld, \"expected_per_user\": %llu, "
               "\"deliveries\": %llu, \"min_user_got\": %llu, \"t_last_s\": %.6f, "
               "\"tail_s\": %.6f, \"deliveries_per_s\": %.1f",
               opt_senders, opt_window, opt_messages, (unsigned long long)expected,
               (unsigned long long)total, (unsigned long long)min_got, wall,
               ok ? t_last_done - t_last_send : -1.0, wall > 0 ? (double)total / wall : 0);
    } else {
        printf(", \"rss_before_kb\": %ld, \"rss_after_kb\": %ld, \"rss_end_kb\": %ld, "
               "\"rss_per_user_b\": %.1f, \"broadcast_s\": [",
               rss_before, rss_after, rss_end,
               (rss_before >= 0 && rss_after >= 0 && n_open > 1)
                   ? (double)(rss_after - rss_before) * 1024.0 / (double)(n_open - 1)
                   : -1.0);
        for (int b = 0; b < nbc; b++) printf("%s%.6f", b ? ", " : "", bc[b]);
        printf("]");
    }
    printf("}\n");
    fflush(stdout);
    for (int i = 0; i < nconns; i++) kill_conn(&conns[i], -1);
    return 0;
}
