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
 *   - --tls: every connection speaks TLS (OpenSSL, the certificate is not checked: the same
 *     one is given to every target), wss://. Each socket has one SSL object; its handshake is
 *     driven by readiness like everything else; writes are partial-write SSL_write()s from the
 *     same burst buffer; reads decrypt every byte (no MSG_TRUNC), up to 16 records a wake-up.
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
 *   openloop  open-loop chat: --conns users; for each rate of the --rates ladder (messages/s
 *           into the server), --step-s seconds of messages from random senders with Poisson
 *           arrivals (exponential gaps; the whole schedule is drawn up front from --seed).
 *           Each message is queued at its scheduled time whatever has been delivered (what a
 *           socket cannot take waits in the generator). Every payload carries its message id
 *           (16 hex digits + fixed padding), and every user must receive every message once:
 *           a bitmap per user counts lost and duplicated (message, user) pairs, and a last-id
 *           per (user, sender) counts out-of-order ones. Latency is from the scheduled send
 *           time (no coordinated omission) to the receipt, over all pairs of a step (log
 *           histogram, < 1% error). A step passes with p99 < --p99-limit-ms and nothing lost,
 *           duplicated or closed; pairs missing --drain-s after the step's last scheduled
 *           send are lost. Climbing stops at a clear failure (loss, dup, a closed connection,
 *           p99 >= --stop-p99-ms) or after --max-fails failed steps in a row. Receivers read
 *           every payload here (big recv()s, parsed in place; no system call per frame).
 *
 * --deflate (fanout and idle): every connection offers permessage-deflate (RFC 7692) as Chromium
 *   does (`permessage-deflate; client_max_window_bits`) and inflates, with zlib, every compressed
 *   frame it receives (one inflater per connection, kept between messages unless the server
 *   agreed `server_no_context_takeover`). The messages are 4,096 distinct JSON-like chat events
 *   of exactly --size bytes (seeded random words; each sender starts at a different one), sent
 *   uncompressed (RFC 7692 allows a compressing peer to send any message uncompressed). A
 *   delivery is then a message that inflates to exactly one of them, byte for byte (anything
 *   else is counted as a mismatch); the output adds the wire bytes of the deliveries against
 *   the same frames uncompressed.
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
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

enum { ST_FREE, ST_CONNECTING, ST_TLS, ST_HANDSHAKE, ST_OPEN, ST_DEAD };
enum { F_CONNECT, F_HTTP, F_EOF_HS, F_RESET_HS, F_TIMEOUT, F_BAD_ACCEPT, F_CLOSED_OPEN, F_NREASONS };
static const char *reason_names[F_NREASONS] = {
    "connect_error", "http_refused", "closed_before_101", "reset_before_101",
    "handshake_timeout", "bad_accept", "closed_after_open"};

enum { PH_CONNECT, PH_SYNC, PH_RUN, PH_DONE };

struct conn {
    int fd;
    SSL *ssl;          /* --tls: this connection's TLS state (NULL: plain TCP) */
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
    uint8_t *obuf;     /* openloop: frames queued here when the socket cannot take them */
    uint32_t olen, ooff, ocap;
    uint8_t pay[128];  /* openloop: payload of the current frame, when split across reads */
    /* --deflate */
    uint8_t deflate;   /* permessage-deflate agreed */
    uint8_t srv_nct;   /* ... with server_no_context_takeover */
    uint8_t zcur;      /* the frame being read has RSV1: its payload is kept and inflated */
    z_stream *zs;      /* the inflater, made at the first compressed message */
    uint8_t *zin;      /* the compressed payload of the current frame */
    uint32_t zlen, zcap;
};

/* options */
static const char *opt_host = "127.0.0.1";
static int opt_port = 0;
static const char *opt_path = "/";
static int opt_raw = 0;
static int opt_tls = 0;
static SSL_CTX *tls_ctx;
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
static const char *opt_rates = "10,20,50,100";
static double opt_step_s = 2.0, opt_drain_s = 3.0, opt_settle_s = 5.0;
static double opt_p99_limit_ms = 50.0, opt_stop_p99_ms = 200.0;
static int opt_max_fails = 2;
static unsigned long long opt_seed = 1;
static int opt_deflate = 0;

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
static double t_rx;       /* openloop: when the bytes being parsed were received */
/* --deflate */
#define NMSG 4096                 /* distinct messages */
#define ID_BASE 100000            /* message i carries "id":ID_BASE+i at offset 6 */
static uint8_t *msgtext;          /* NMSG plain messages of opt_size bytes each */
static uint8_t *zout;             /* inflated output of one message */
static size_t zout_cap;
static int n_deflate_agreed;
static uint64_t z_messages, z_errors, z_mismatch, wire_bytes, plain_bytes;

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

/* --deflate: NMSG chat events of exactly opt_size bytes, e.g.
   {"id":100042,"type":"message","room":"lobby","from":{"id":317,"name":"user17"},
    "ts":1764633600123,"text":"so the build is ok for lunch tomorrow ..."}
   Words are drawn with a Zipf-like bias from a small vocabulary, plus a number: no easier to
   compress than chat (bench/deflate_study.py measures that kind of traffic). */
static void build_messages(void) {
    static const char *words[] = {
        "the", "a", "to", "and", "of", "is", "in", "it", "you", "that", "for", "on", "with",
        "this", "be", "are", "was", "have", "not", "at", "but", "we", "can", "so", "what", "just",
        "all", "about", "like", "do", "if", "my", "me", "no", "up", "out", "one", "time", "get",
        "know", "lunch", "meeting", "deploy", "build", "tomorrow", "server", "room", "ok",
        "thanks", "release", "review", "coffee", "branch", "merge", "ticket", "later", "why",
        "how", "yes", "maybe", "today", "sorry", "great", "fixed", "broken", "test", "again"};
    const int nwords = (int)(sizeof words / sizeof *words);
    uint64_t st = 0x2545f4914f6cdd1dULL;
#define NEXT() (st ^= st << 13, st ^= st >> 7, st ^= st << 17, st)
    msgtext = malloc((size_t)NMSG * (size_t)opt_size);
    char *tmp = malloc((size_t)opt_size + 64);
    if (!msgtext || !tmp) die("out of memory");
    for (int m = 0; m < NMSG; m++) {
        unsigned user = (unsigned)(NEXT() % 1000);
        int n = snprintf(tmp, (size_t)opt_size + 64,
                         "{\"id\":%d,\"type\":\"message\",\"room\":\"lobby\",\"from\":{\"id\":%u,"
                         "\"name\":\"user%u\"},\"ts\":%llu,\"text\":\"%llu", ID_BASE + m, user,
                         user % 200, 1764633600000ULL + (unsigned long long)m * 731,
                         (unsigned long long)(NEXT() % 100000));
        if (n + 2 > opt_size) die("--deflate needs --size of at least %d", n + 2);
        while (n < opt_size - 2) {
            uint64_t r = NEXT();
            int w = (int)((r % (uint64_t)nwords) * ((r >> 20) % (uint64_t)nwords) / (uint64_t)nwords);
            int len = (int)strlen(words[w]);
            tmp[n++] = ' ';
            for (int i = 0; i < len && n < opt_size - 2; i++) tmp[n++] = words[w][i];
        }
        tmp[n++] = '"';
        tmp[n++] = '}';
        memcpy(msgtext + (size_t)m * (size_t)opt_size, tmp, (size_t)opt_size);
    }
#undef NEXT
    free(tmp);
    zout_cap = (size_t)opt_size + 1;
    zout = malloc(zout_cap);
    if (!zout) die("out of memory");
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
    if (opt_deflate) {
        reps = NMSG;
        build_messages();
    }
    burst_len = reps * flen;
    burst = malloc(burst_len);
    if (!burst) die("out of memory");
    for (size_t r = 0; r < reps; r++) {
        uint8_t *f = burst + r * flen;
        memcpy(f, h, hdr);
        for (long i = 0; i < opt_size; i++) {
            uint8_t c = opt_deflate ? msgtext[r * (size_t)opt_size + (size_t)i]
                                    : (uint8_t)('a' + (i % 26)); /* ASCII: valid UTF-8 text */
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
    if (c->ssl) {
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->fd >= 0) {
        struct linger lg = {1, 0}; /* abortive close: no TIME_WAIT pile-up between runs */
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        close(c->fd);
        c->fd = -1;
    }
    free(c->hsbuf);
    c->hsbuf = NULL;
    if (c->zs) {
        inflateEnd(c->zs);
        free(c->zs);
        c->zs = NULL;
    }
    free(c->zin);
    c->zin = NULL;
    c->zcap = c->zlen = 0;
}

static const char *handshake_request(size_t *len) {
    static char req[512];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n%s\r\n",
                     opt_path, opt_host, opt_port,
                     opt_deflate ? "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
                                 : "");
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

/* send()/recv() on the socket, or through TLS: the same results (EAGAIN when OpenSSL wants
   to wait for the socket, whichever way). */
static ssize_t io_send(struct conn *c, const void *buf, size_t len) {
    if (!c->ssl) return send(c->fd, buf, len, MSG_NOSIGNAL);
    int n = SSL_write(c->ssl, buf, len > (1u << 30) ? (int)(1u << 30) : (int)len);
    if (n > 0) return n;
    int e = SSL_get_error(c->ssl, n);
    errno = (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) ? EAGAIN : ECONNRESET;
    return -1;
}

static ssize_t io_recv(struct conn *c, void *buf, size_t len) {
    if (!c->ssl) return recv(c->fd, buf, len, 0);
    int n = SSL_read(c->ssl, buf, len > (1u << 30) ? (int)(1u << 30) : (int)len);
    if (n > 0) return n;
    int e = SSL_get_error(c->ssl, n);
    if (e == SSL_ERROR_ZERO_RETURN) return 0;
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        errno = EAGAIN;
        return -1;
    }
    ERR_clear_error();
    errno = ECONNRESET;
    return -1;
}

static void flush(struct conn *c) {
    while (c->out_left) {
        size_t len = burst_len - c->out_pos;
        if (len > c->out_left) len = c->out_left;
        ssize_t n = io_send(c, burst + c->out_pos, len);
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
        /* --deflate: go on through the distinct messages; else every send starts at frame 0 */
        c->out_pos = (uint32_t)((c->out_pos + (size_t)n) % (opt_deflate ? burst_len : flen));
    }
    while (c->ooff < c->olen) {
        ssize_t n = io_send(c, c->obuf + c->ooff, c->olen - c->ooff);
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
        c->ooff += (uint32_t)n;
    }
    c->olen = c->ooff = 0;
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

static int is_ol;
static void ol_deliver(struct conn *c, const uint8_t *payload);

/* --deflate: inflate the compressed frame just read (RFC 7692 §7.2.2: the 00 00 ff ff tail
   restored) and check it is one of our messages. Returns 1 for a delivery. */
static int inflate_frame(struct conn *c) {
    static const uint8_t tail[4] = {0x00, 0x00, 0xff, 0xff};
    if (!c->zs) {
        c->zs = calloc(1, sizeof *c->zs);
        if (!c->zs || inflateInit2(c->zs, -15) != Z_OK) die("inflateInit2 failed");
    }
    z_stream *zs = c->zs;
    size_t out = 0;
    for (int part = 0; part < 2; part++) {
        zs->next_in = part ? (Bytef *)tail : c->zin;
        zs->avail_in = part ? 4 : c->zlen;
        while (zs->avail_in) {
            zs->next_out = zout + out;
            zs->avail_out = (uInt)(zout_cap - out);
            int rc = inflate(zs, Z_SYNC_FLUSH);
            out = zout_cap - zs->avail_out;
            if (rc != Z_OK && rc != Z_BUF_ERROR) {
                z_errors++;
                inflateReset(zs);
                return 0;
            }
            if (rc == Z_BUF_ERROR || !zs->avail_out) break; /* no progress, or too big */
        }
    }
    z_messages++;
    if (c->srv_nct) inflateReset(zs);
    if (out != (size_t)opt_size) {
        z_mismatch++;
        return 0;
    }
    int id = 0;
    for (int i = 6; i < 12; i++) id = id * 10 + (zout[i] - '0');
    id -= ID_BASE;
    if (id < 0 || id >= NMSG || memcmp(zout, msgtext + (size_t)id * (size_t)opt_size, out)) {
        z_mismatch++;
        return 0;
    }
    return 1;
}

static void frame_done(struct conn *c) {
    uint8_t op = c->hdr[0] & 0x0f, fin = c->hdr[0] & 0x80;
    if (c->zcur) {
        c->zcur = 0;
        if (fin && (op == 1 || op == 2) && inflate_frame(c)) {
            c->msgs++;
            wire_bytes += 2 + (c->cur_len >= 126 ? 2 : 0) + (c->cur_len >= 65536 ? 6 : 0) + c->cur_len;
            plain_bytes += flen - 4; /* the same frame unmasked and uncompressed */
        } else c->other++;
        c->zlen = 0;
        return;
    }
    if (opt_deflate && fin && (op == 1 || op == 2) && c->cur_len == (uint64_t)opt_size) {
        wire_bytes += flen - 4;
        plain_bytes += flen - 4;
    }
    if (fin && (op == 1 || op == 2 || op == 0) && c->cur_len == (uint64_t)opt_size) {
        if (is_ol) ol_deliver(c, c->pay);
        else c->msgs++;
    } else if (op == 8) c->got_close = 1;
    else c->other++;
}

static void parse_ws(struct conn *c, const uint8_t *p, size_t n) {
    const size_t whole = 2 + (size_t)opt_size; /* openloop: an unmasked frame of our size */
    while (n) {
        if (c->payload_left) {
            size_t k = c->payload_left < n ? (size_t)c->payload_left : n;
            if (is_ol && c->cur_len == (uint64_t)opt_size)
                memcpy(c->pay + (c->cur_len - c->payload_left), p, k);
            if (c->zcur) {
                memcpy(c->zin + c->zlen, p, k);
                c->zlen += (uint32_t)k;
            }
            p += k;
            n -= k;
            c->payload_left -= k;
            if (!c->payload_left) frame_done(c);
            continue;
        }
        if (is_ol && !c->hlen && n >= whole && p[0] == 0x81 && p[1] == (uint8_t)opt_size) {
            ol_deliver(c, p + 2); /* the common case: parsed in place, no copy */
            p += whole;
            n -= whole;
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
            c->zcur = c->deflate && (c->hdr[0] & 0x40);
            if (c->zcur) {
                if (l > (1u << 24)) die("a compressed frame of %llu bytes", (unsigned long long)l);
                if (l > c->zcap) {
                    c->zcap = (uint32_t)(l > 256 ? l : 256);
                    c->zin = realloc(c->zin, c->zcap);
                    if (!c->zin) die("out of memory");
                }
                c->zlen = 0;
            }
            if (!l) frame_done(c);
        }
    }
}

/* Mode logic after `c` received data (or at the start of the timed phase). */
static void pump(struct conn *c, double t);

static void on_open(struct conn *c) {
    if (opt_deflate) { /* each sender starts at a different message (see build_messages) */
        size_t idx = (size_t)(c - conns), k = (size_t)(opt_senders > 0 ? opt_senders : 1);
        c->out_pos = (uint32_t)(((idx % k) * NMSG / k) % NMSG * flen);
    }
    c->state = ST_OPEN;
    n_pending--;
    n_open++;
    n_ever_opened++;
}

static void handle_handshake(struct conn *c) {
    if (!c->hsbuf) c->hsbuf = malloc(4096);
    ssize_t n = io_recv(c, c->hsbuf + c->hslen, 4095 - c->hslen);
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
    if (opt_deflate && strcasestr(c->hsbuf, "\nSec-WebSocket-Extensions:") &&
        strstr(c->hsbuf, "permessage-deflate")) {
        c->deflate = 1;
        c->srv_nct = strstr(c->hsbuf, "server_no_context_takeover") != NULL;
        n_deflate_agreed++;
    }
    size_t rest = (size_t)(c->hslen - ((end + 4) - c->hsbuf));
    uint8_t tmp[4096];
    memcpy(tmp, end + 4, rest);
    free(c->hsbuf);
    c->hsbuf = NULL;
    on_open(c);
    if (rest) parse_ws(c, tmp, rest);
}

/* The upgrade request, once the connection (and its TLS) is up. */
static void send_upgrade(struct conn *c) {
    size_t len;
    const char *req = handshake_request(&len);
    if (io_send(c, req, len) != (ssize_t)len) {
        kill_conn(c, F_CONNECT);
        return;
    }
    c->state = ST_HANDSHAKE;
    ep_set(c, EPOLLIN, EPOLL_CTL_MOD);
}

/* --tls: one more round of the client's TLS handshake. */
static void tls_step(struct conn *c) {
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        send_upgrade(c);
        return;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ) ep_set(c, EPOLLIN, EPOLL_CTL_MOD);
    else if (e == SSL_ERROR_WANT_WRITE) ep_set(c, EPOLLOUT, EPOLL_CTL_MOD);
    else {
        ERR_clear_error();
        kill_conn(c, F_CONNECT);
    }
}

static void handle_event(struct conn *c, uint32_t ev) {
    if (c->state == ST_TLS) {
        tls_step(c);
        return;
    }
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
        if (opt_tls) {
            c->ssl = SSL_new(tls_ctx);
            if (!c->ssl || !SSL_set_fd(c->ssl, c->fd)) die("SSL_new failed");
            SSL_set_connect_state(c->ssl);
            c->state = ST_TLS;
            tls_step(c);
            return;
        }
        send_upgrade(c);
        return;
    }
    if (c->state == ST_HANDSHAKE) {
        handle_handshake(c);
        /* TLS may hold decrypted frames that came with the 101: epoll cannot see them. */
        if (!(c->ssl && c->state == ST_OPEN && SSL_pending(c->ssl) > 0)) return;
        ev = EPOLLIN;
    }
    if (c->state != ST_OPEN) return;
    if (ev & EPOLLOUT) {
        flush(c);
        if (c->state != ST_OPEN) return;
    }
    if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        ssize_t n;
        if (!c->ssl && (opt_raw || (c->payload_left >= 4096 && !c->zcur))) {
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
        } else if (c->ssl) {
            /* SSL_read() gives one record at a time: take several per wake-up (what is left
               is in the kernel, which epoll sees: rbuf is larger than any record). */
            int got = 0;
            for (int i = 0; i < 16; i++) {
                n = io_recv(c, rbuf, sizeof rbuf);
                if (n <= 0) break;
                got = 1;
                parse_ws(c, rbuf, (size_t)n);
                if (c->got_close) {
                    kill_conn(c, F_CLOSED_OPEN);
                    return;
                }
            }
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
                kill_conn(c, F_CLOSED_OPEN);
                return;
            }
            if (got) pump(c, now());
            return;
        } else {
            n = recv(c->fd, rbuf, sizeof rbuf, 0);
        }
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            kill_conn(c, F_CLOSED_OPEN);
            return;
        }
        if (n > 0) {
            if (is_ol) t_rx = now();
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
    if (phase != PH_RUN || is_ol) return;
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

/* ---- openloop: a ladder of Poisson message rates, every (message, user) pair checked ---- */
#define NB (256 + 40 * 128) /* log histogram of microseconds: exact below 256, then 1/128 */

struct step {
    double rate;
    uint64_t first, n; /* message ids [first, first + n) */
    int recipients;    /* users open when the step began: each must get every message */
    uint64_t got, dup, ooo, late, lost, unsent;
    uint64_t hist[NB], late_hist[NB];
    uint64_t nlate_send;
    double lat_max, send_late_max;
    double t0, t_sched_end, t_last_rx, t_end;
    uint64_t queued_max; /* most bytes waiting in the generator for one socket */
    double gen_cpu, srv_cpu;
    int closed, ran, drained, ok;
    const char *why;
};

static struct step *steps;
static int nsteps;
static uint64_t ol_total, ol_next;  /* messages planned; the next one to send */
static double *ol_sched;            /* offset in its step, made absolute when the step starts */
static uint32_t *ol_sender;
static uint16_t *ol_stepof;
static uint64_t *ol_seen;           /* a bitmap of message ids per user */
static size_t ol_words;
static uint32_t *ol_last;           /* [user * nconns + sender]: last id received + 1 */
static uint64_t ol_corrupt;         /* frames of our size with a payload we never sent */
static int8_t hexv[256];
static uint8_t ol_pad[128];         /* the payload bytes after the 16 hex digits */
static const uint8_t ol_key[4] = {0x5a, 0x13, 0xc4, 0x7e};

static uint64_t rng_state;
static uint64_t rng(void) { /* splitmix64 */
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* ln(x) for x > 0 without libm (the generator is built with a plain `gcc -O2`). */
static double ln_(double x) {
    int e = 0;
    while (x >= 2.0) { x *= 0.5; e++; }
    while (x < 1.0) { x *= 2.0; e--; }
    double s = (x - 1.0) / (x + 1.0), s2 = s * s, term = s, sum = 0; /* s <= 1/3 */
    for (int k = 1; k < 60; k += 2) {
        sum += term / k;
        term *= s2;
    }
    return 2.0 * sum + e * 0.69314718055994530942;
}

static int hbucket(double seconds) {
    if (seconds < 0) seconds = 0;
    uint64_t v = (uint64_t)(seconds * 1e6);
    if (v < 256) return (int)v;
    int msb = 63 - __builtin_clzll(v);
    int b = 256 + (msb - 8) * 128 + (int)((v >> (msb - 7)) & 127);
    return b < NB ? b : NB - 1;
}
static double hvalue_ms(int b) { /* the middle of bucket b */
    if (b < 256) return (b + 0.5) * 1e-3;
    int msb = (b - 256) / 128 + 8, sub = (b - 256) % 128;
    double lo = (double)((uint64_t)(128 + sub) << (msb - 7)), w = (double)(1ULL << (msb - 7));
    return (lo + w / 2) * 1e-3;
}
static double hpct_ms(const uint64_t *h, double q) { /* nearest rank; -1 if empty */
    uint64_t total = 0;
    for (int b = 0; b < NB; b++) total += h[b];
    if (!total) return -1;
    uint64_t rank = (uint64_t)(q * (double)total + 0.999999);
    if (rank < 1) rank = 1;
    uint64_t acc = 0;
    for (int b = 0; b < NB; b++) {
        acc += h[b];
        if (acc >= rank) return hvalue_ms(b);
    }
    return hvalue_ms(NB - 1);
}

static double pct_upto(const uint64_t *h, double q, double max_s) { /* never above the max */
    double v = hpct_ms(h, q);
    return v > max_s * 1e3 ? max_s * 1e3 : v;
}

static void ol_plan(void) {
    double rates[256];
    const char *p = opt_rates;
    while (*p && nsteps < 256) {
        char *end;
        double r = strtod(p, &end);
        if (end == p || r <= 0) die("bad --rates %s", opt_rates);
        rates[nsteps++] = r;
        p = *end == ',' ? end + 1 : end;
    }
    if (!nsteps) die("--rates is empty");
    if (opt_size < 24 || opt_size > 125) die("openloop needs --size between 24 and 125");
    steps = calloc((size_t)nsteps, sizeof *steps);
    if (!steps) die("out of memory");
    /* the whole schedule, drawn up front: exponential gaps, a uniformly random sender */
    size_t cap = 1024;
    ol_sched = malloc(cap * sizeof *ol_sched);
    ol_sender = malloc(cap * sizeof *ol_sender);
    ol_stepof = malloc(cap * sizeof *ol_stepof);
    rng_state = opt_seed;
    for (int s = 0; s < nsteps; s++) {
        steps[s].rate = rates[s];
        steps[s].first = ol_total;
        for (double t = 0;;) {
            double u = (double)(rng() >> 11) * 0x1.0p-53; /* [0, 1) */
            t += -ln_(1.0 - u) / rates[s];
            if (t >= opt_step_s) break;
            if (ol_total == cap) {
                cap *= 2;
                ol_sched = realloc(ol_sched, cap * sizeof *ol_sched);
                ol_sender = realloc(ol_sender, cap * sizeof *ol_sender);
                ol_stepof = realloc(ol_stepof, cap * sizeof *ol_stepof);
                if (!ol_sched || !ol_sender || !ol_stepof) die("out of memory");
            }
            ol_sched[ol_total] = t;
            ol_sender[ol_total] = (uint32_t)(rng() % (uint64_t)nconns);
            ol_stepof[ol_total] = (uint16_t)s;
            ol_total++;
        }
        steps[s].n = ol_total - steps[s].first;
    }
    if (ol_total >= 0xffffffffULL) die("too many messages planned");
    ol_words = (size_t)(ol_total + 63) / 64;
    if ((double)ol_words * 8.0 * nconns > 4e9) die("the --rates ladder needs too much memory");
    ol_seen = calloc((size_t)nconns * ol_words + 1, sizeof *ol_seen);
    if (!ol_seen) die("out of memory");
    if (nconns <= 4096) /* else out-of-order is not counted (-1) */
        ol_last = calloc((size_t)nconns * (size_t)nconns, sizeof *ol_last);
    memset(hexv, -1, sizeof hexv);
    for (int i = 0; i < 10; i++) hexv['0' + i] = (int8_t)i;
    for (int i = 0; i < 6; i++) hexv['a' + i] = (int8_t)(10 + i);
    for (long i = 16; i < opt_size; i++) ol_pad[i] = (uint8_t)('A' + (i % 26));
}

/* A final text frame of the benchmark's size arrived for user `c`. */
static void ol_deliver(struct conn *c, const uint8_t *pl) {
    uint64_t id = 0;
    for (int i = 0; i < 16; i++) {
        int v = hexv[pl[i]];
        if (v < 0) {
            /* not an id: the sync broadcast's payload (the burst buffer's a, b, c, ...)? */
            for (long j = 0; j < opt_size; j++)
                if (pl[j] != (uint8_t)('a' + (j % 26))) {
                    ol_corrupt++;
                    return;
                }
            c->msgs++;
            return;
        }
        id = (id << 4) | (uint64_t)v;
    }
    if (id >= ol_next || memcmp(pl + 16, ol_pad + 16, (size_t)opt_size - 16)) {
        ol_corrupt++; /* never sent, or damaged: that pair stays missing */
        return;
    }
    size_t u = (size_t)(c - conns);
    struct step *st = &steps[ol_stepof[id]];
    uint64_t *w = &ol_seen[u * ol_words + id / 64], bit = 1ULL << (id % 64);
    if (*w & bit) {
        st->dup++;
        return;
    }
    *w |= bit;
    st->got++;
    st->t_last_rx = t_rx;
    double lat = t_rx - ol_sched[id];
    st->hist[hbucket(lat)]++;
    if (lat > st->lat_max) st->lat_max = lat;
    if (ol_last) {
        uint32_t *last = &ol_last[u * (size_t)nconns + ol_sender[id]];
        if ((uint32_t)id + 1 < *last) st->ooo++;
        else *last = (uint32_t)id + 1;
    }
}

/* Queue message `id` on its sender at time t (its scheduled time or just after). */
static void ol_send(uint64_t id, double t) {
    struct step *st = &steps[ol_stepof[id]];
    struct conn *c = &conns[ol_sender[id]];
    double late = t - ol_sched[id];
    st->late_hist[hbucket(late)]++;
    st->nlate_send++;
    if (late > st->send_late_max) st->send_late_max = late;
    if (c->state != ST_OPEN) {
        st->unsent++; /* its sender is gone: every pair of it will be missing */
        return;
    }
    uint32_t flen_tx = 6 + (uint32_t)opt_size;
    if (c->olen + flen_tx > c->ocap) {
        if (c->ooff) { /* compact before growing */
            memmove(c->obuf, c->obuf + c->ooff, c->olen - c->ooff);
            c->olen -= c->ooff;
            c->ooff = 0;
        }
        if (c->olen + flen_tx > c->ocap) {
            c->ocap = c->ocap ? c->ocap * 2 : 4096;
            c->obuf = realloc(c->obuf, c->ocap);
            if (!c->obuf) die("out of memory");
        }
    }
    uint8_t *f = c->obuf + c->olen;
    f[0] = 0x81;
    f[1] = (uint8_t)(0x80 | opt_size);
    memcpy(f + 2, ol_key, 4);
    char hex[17];
    snprintf(hex, sizeof hex, "%016llx", (unsigned long long)id);
    for (long i = 0; i < opt_size; i++)
        f[6 + i] = (uint8_t)((i < 16 ? (uint8_t)hex[i] : ol_pad[i]) ^ ol_key[i % 4]);
    c->olen += flen_tx;
    if (c->olen - c->ooff > st->queued_max) st->queued_max = c->olen - c->ooff;
    if (!c->want_out) flush(c);
}

/* epoll_wait with a timeout in seconds, to the microsecond where epoll_pwait2 exists. */
static int wait_events(struct epoll_event *evs, int max, double timeout) {
    if (timeout < 0) timeout = 0;
#ifdef SYS_epoll_pwait2
    static int have_pwait2 = 1;
    if (have_pwait2) {
        struct timespec ts = {(time_t)timeout, (long)((timeout - (double)(time_t)timeout) * 1e9)};
        int n = (int)syscall(SYS_epoll_pwait2, epfd, evs, max, &ts, NULL, (size_t)8);
        if (n >= 0 || errno != ENOSYS) return n;
        have_pwait2 = 0;
    }
#endif
    int ms = (int)(timeout * 1000);
    int n = epoll_wait(epfd, evs, max, ms);
    if (n == 0 && ms == 0 && timeout > 0) {
        struct timespec pause = {0, (long)(timeout * 1e9)};
        nanosleep(&pause, NULL);
    }
    return n;
}

/* Send what is due and read what arrives until `until`, or earlier when step `st` has every
   pair (and nothing is left to send). */
static void ol_loop(struct step *st, uint64_t end, double until, uint64_t expected) {
    static struct epoll_event evs[1024];
    for (;;) {
        double t = now();
        while (ol_next < end && ol_sched[ol_next] <= t) ol_send(ol_next++, t);
        if (ol_next >= end && st->got >= expected) return;
        if (t >= until) return;
        double next = ol_next < end ? ol_sched[ol_next] : until;
        if (next > until) next = until;
        double wait = next - t;
        if (wait > 0.05) wait = 0.05;
        int n = wait_events(evs, 1024, wait);
        if (n < 0 && errno != EINTR) die("epoll_wait: %s", strerror(errno));
        for (int i = 0; i < n; i++) handle_event(&conns[evs[i].data.u32], evs[i].events);
        if (n < 64 && opt_poll_us > 0) {
            /* a light batch: let deliveries pile up for a moment (as in loop()), but never past
               the next scheduled send */
            double nap = opt_poll_us * 1e-6;
            if (ol_next < end) {
                double left = ol_sched[ol_next] - now();
                if (left < nap) nap = left;
            }
            if (nap > 0) {
                struct timespec pause = {0, (long)(nap * 1e9)};
                nanosleep(&pause, NULL);
            }
        }
    }
}

static void ol_step(struct step *st, double deadline) {
    st->ran = 1;
    st->recipients = n_open;
    uint64_t expected = st->n * (uint64_t)st->recipients, end = st->first + st->n;
    int failed0 = n_failed;
    double t0 = now() + 0.002;
    for (uint64_t id = st->first; id < end; id++) ol_sched[id] += t0;
    st->t0 = t0;
    st->t_sched_end = st->n ? ol_sched[end - 1] : t0;
    double drain_until = (st->n ? st->t_sched_end : t0 + opt_step_s) + opt_drain_s;
    if (drain_until > deadline) drain_until = deadline;
    double gen0 = self_cpu(), srv0 = server_cpu();
    ol_next = st->first;
    ol_loop(st, end, drain_until, expected);
    st->t_end = now();
    double gen1 = self_cpu(), srv1 = server_cpu();
    st->gen_cpu = gen1 - gen0;
    st->srv_cpu = (srv0 >= 0 && srv1 >= 0) ? srv1 - srv0 : -1;
    st->drained = ol_next >= end && st->got >= expected;
    st->lost = st->got < expected ? expected - st->got : 0;
    st->closed = n_failed - failed0;
    double p99 = pct_upto(st->hist, 0.99, st->lat_max);
    st->why = ol_next < end ? "deadline" : st->lost ? "lost" : st->dup ? "dup"
              : st->closed ? "closed"
              : (st->n && (p99 < 0 || p99 >= opt_p99_limit_ms)) ? "p99" : NULL; /* n = 0: vacuous */
    st->ok = st->why == NULL;
}

static const char *ol_stop_reason;
static void ol_run(double deadline) {
    int fails = 0;
    for (int s = 0; s < nsteps; s++) {
        struct step *st = &steps[s];
        if (now() + opt_step_s > deadline) {
            ol_stop_reason = "deadline";
            break;
        }
        ol_step(st, deadline);
        double p99 = pct_upto(st->hist, 0.99, st->lat_max);
        fprintf(stderr, "loadgen: openloop %g msg/s: %llu msgs, p50 %.2f p99 %.2f max %.2f ms, "
                "lost %llu dup %llu ooo %llu closed %d%s%s\n", st->rate,
                (unsigned long long)st->n, pct_upto(st->hist, 0.5, st->lat_max), p99,
                st->lat_max * 1e3,
                (unsigned long long)st->lost, (unsigned long long)st->dup,
                (unsigned long long)st->ooo, st->closed, st->ok ? "" : " FAIL ",
                st->ok ? "" : st->why);
        fails = st->ok ? 0 : fails + 1;
        int clear = !st->ok && (st->lost || st->dup || st->closed || !strcmp(st->why, "deadline")
                                || p99 >= opt_stop_p99_ms);
        if (clear || fails >= opt_max_fails || n_open == 0) {
            ol_stop_reason = clear ? st->why : n_open == 0 ? "no user left" : "failed steps";
            if (st->lost && n_open) { /* were they late, or really gone? */
                uint64_t got0 = st->got, expected = st->n * (uint64_t)st->recipients;
                double until = now() + opt_settle_s;
                if (until > deadline) until = deadline;
                ol_loop(st, st->first + st->n, until, expected);
                st->late = st->got - got0;
            }
            break;
        }
        /* a short pause between steps, still reading */
        double until = now() + 0.1;
        ol_loop(st, st->first + st->n, until, UINT64_MAX);
    }
    if (!ol_stop_reason) ol_stop_reason = "ladder done";
}

static void ol_print(void) {
    double cap = 0;
    for (int s = 0; s < nsteps; s++)
        if (steps[s].ran && steps[s].ok && steps[s].rate > cap) cap = steps[s].rate;
    printf(", \"users\": %d, \"step_s\": %.3f, \"drain_s\": %.3f, \"seed\": %llu, "
           "\"p99_limit_ms\": %.3f, \"stopped\": \"%s\", \"corrupt\": %llu, "
           "\"capacity_msgs_per_s\": %.3f, \"steps\": [",
           nconns, opt_step_s, opt_drain_s, opt_seed, opt_p99_limit_ms, ol_stop_reason,
           (unsigned long long)ol_corrupt, cap);
    int first = 1;
    for (int s = 0; s < nsteps; s++) {
        struct step *st = &steps[s];
        if (!st->ran) continue;
        double wall = st->t_end - st->t0, busy = st->t_last_rx - st->t0;
        printf("%s{\"rate\": %g, \"messages\": %llu, \"offered_per_s\": %.1f, \"recipients\": %d, "
               "\"expected\": %llu, \"delivered\": %llu, \"deliveries_per_s\": %.1f, "
               "\"lat_p50_ms\": %.4f, \"lat_p99_ms\": %.4f, \"lat_max_ms\": %.4f, "
               "\"lost\": %llu, \"late\": %llu, \"dup\": %llu, \"ooo\": %lld, \"closed\": %d, "
               "\"unsent\": %llu, \"drained\": %s, \"drain_s\": %.4f, "
               "\"send_late_p99_ms\": %.4f, \"send_late_max_ms\": %.4f, \"gen_queued_max_b\": %llu, "
               "\"wall_s\": %.4f, \"gen_cpu_s\": %.4f, \"srv_cpu_s\": %.4f, \"ok\": %s, \"why\": %s%s%s}",
               first ? "" : ", ", st->rate, (unsigned long long)st->n,
               (double)st->n / opt_step_s, st->recipients,
               (unsigned long long)(st->n * (uint64_t)st->recipients),
               (unsigned long long)st->got, busy > 0 ? (double)st->got / busy : 0,
               pct_upto(st->hist, 0.5, st->lat_max), pct_upto(st->hist, 0.99, st->lat_max),
               st->lat_max * 1e3,
               (unsigned long long)st->lost, (unsigned long long)st->late,
               (unsigned long long)st->dup, ol_last ? (long long)st->ooo : -1LL, st->closed,
               (unsigned long long)st->unsent, st->drained ? "true" : "false",
               st->t_end - st->t_sched_end, pct_upto(st->late_hist, 0.99, st->send_late_max),
               st->send_late_max * 1e3, (unsigned long long)st->queued_max, wall, st->gen_cpu,
               st->srv_cpu, st->ok ? "true" : "false", st->why ? "\"" : "",
               st->why ? st->why : "null", st->why ? "\"" : "");
        first = 0;
    }
    printf("]");
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
            "usage: loadgen --port P [--host 127.0.0.1] [--raw | --tls] --mode echo|fanout|idle|openloop\n"
            "  [--conns N] [--senders K] [--messages M] [--size BYTES] [--window W]\n"
            "  [--broadcasts B] [--pending C] [--allow-fail] [--timeout S]\n"
            "  [--connect-timeout S] [--server-pid PID] [--poll-us US] [--duration S]\n"
            "  fanout, idle: [--deflate] (offer permessage-deflate, inflate and check)\n"
            "  openloop: [--rates R1,R2,...] [--step-s S] [--drain-s S] [--settle-s S]\n"
            "            [--seed N] [--p99-limit-ms MS] [--stop-p99-ms MS] [--max-fails K]\n");
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
        else if (!strcmp(a, "--tls")) opt_tls = 1;
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
        else if (!strcmp(a, "--rates")) opt_rates = ARG;
        else if (!strcmp(a, "--step-s")) opt_step_s = atof(ARG);
        else if (!strcmp(a, "--drain-s")) opt_drain_s = atof(ARG);
        else if (!strcmp(a, "--settle-s")) opt_settle_s = atof(ARG);
        else if (!strcmp(a, "--seed")) opt_seed = strtoull(ARG, NULL, 10);
        else if (!strcmp(a, "--p99-limit-ms")) opt_p99_limit_ms = atof(ARG);
        else if (!strcmp(a, "--stop-p99-ms")) opt_stop_p99_ms = atof(ARG);
        else if (!strcmp(a, "--max-fails")) opt_max_fails = atoi(ARG);
        else if (!strcmp(a, "--deflate")) opt_deflate = 1;
        else usage();
    }
    if (!opt_port || opt_conns < 1 || opt_size < 1 || opt_window < 1 || opt_messages < 0) usage();
    if (opt_senders > opt_conns) opt_senders = opt_conns;
    int mode_echo = !strcmp(opt_mode, "echo"), mode_fan = !strcmp(opt_mode, "fanout"),
        mode_idle = !strcmp(opt_mode, "idle"), mode_ol = !strcmp(opt_mode, "openloop");
    if (!mode_echo && !mode_fan && !mode_idle && !mode_ol) usage();
    if (mode_ol && opt_raw) die("openloop needs WebSocket framing (message ids): not --raw");
    if (opt_tls && opt_raw) die("--tls and --raw: the raw relay speaks no TLS");
    if (opt_tls) {
        tls_ctx = SSL_CTX_new(TLS_client_method());
        if (!tls_ctx) die("SSL_CTX_new failed");
        SSL_CTX_set_verify(tls_ctx, SSL_VERIFY_NONE, NULL); /* the benchmark's own certificate */
        /* send()'s semantics: a write may take part of the buffer. */
        SSL_CTX_set_mode(tls_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                                      SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    }
    if (opt_deflate && (opt_raw || mode_ol || mode_echo))
        die("--deflate is for --mode fanout and idle, over WebSocket");
    if (mode_ol && (opt_step_s <= 0 || opt_drain_s < 0 || opt_max_fails < 1)) usage();
    is_echo = mode_echo;
    is_ol = mode_ol;

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
    if (mode_ol) ol_plan();
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
    int connect_failed = n_failed;
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
    if (mode_ol) {
        ok = synced && !connect_failed;
        if (ok) ol_run(ts + opt_timeout);
        else ol_stop_reason = "not every user connected and got the sync broadcast";
    } else if (mode_echo || mode_fan) {
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
           opt_raw ? "raw" : opt_tls ? "wss" : "ws", opt_size, ok ? "true" : "false");
    print_common(gen0, gen1, srv0, srv1);
    printf(", \"connect_s\": %.4f, \"sync_rounds\": %d, \"other_frames\": %llu",
           t_connected - t0, sync_rounds, (unsigned long long)other);
    if (opt_deflate)
        printf(", \"deflate\": {\"agreed\": %d, \"compressed_messages\": %llu, "
               "\"inflate_errors\": %llu, \"mismatch\": %llu, \"wire_bytes\": %llu, "
               "\"plain_bytes\": %llu, \"wire_ratio\": %.4f}",
               n_deflate_agreed, (unsigned long long)z_messages, (unsigned long long)z_errors,
               (unsigned long long)z_mismatch, (unsigned long long)wire_bytes,
               (unsigned long long)plain_bytes,
               plain_bytes ? (double)wire_bytes / (double)plain_bytes : -1.0);
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
    } else if (mode_ol) {
        printf(", \"connect_failed\": %d, \"wall_s\": %.6f", connect_failed, te - ts);
        ol_print();
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
