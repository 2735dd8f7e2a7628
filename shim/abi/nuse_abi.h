/* SPDX-License-Identifier: Apache-2.0 */
/*
 * nuse_abi.h - the one definition of what the shim (libnuse.so) and the
 * daemon (nused) share: control-socket messages and the shared-memory arena.
 *
 * The Go mirror is shim/abi/abi.go; abi_test.go fails if the two disagree
 * in any size or offset.  Bump NUSE_ABI_VERSION on every layout change.
 *
 * Overview
 *  - The shim connects to the daemon's unix SOCK_SEQPACKET control socket
 *    and sends NUSE_CTL_HELLO.  The daemon checks SO_PEERCRED, creates a
 *    memfd arena for the process and answers NUSE_CTL_HELLO_OK with the memfd
 *    attached (SCM_RIGHTS).
 *  - Sockets are born over the control socket (NUSE_CTL_SOCKET, NUSE_CTL_ACCEPT)
 *    because each carries the daemon's end of a socketpair whose other end is
 *    the application's file descriptor.  That fd carries the socket's
 *    readiness for the kernel's poll/select/epoll: it is readable while one
 *    "signal byte" the daemon wrote is queued in it, and unwritable while the
 *    shim has "filled" it (tx ring full, or connect in progress).  A shim
 *    thread that must block sleeps in poll() on it; when the daemon dies,
 *    that end reads EOF, so no blocked call can hang.
 *  - All other control calls are requests in the arena's command slots.
 *  - Data never round-trips: send() copies into the socket's tx ring, recv()
 *    copies out of its rx ring.  Rings are single-producer/single-consumer
 *    byte rings with free-running 64-bit head (producer) and tail (consumer).
 *  - The daemon trusts nothing here: every index, length and id it reads from
 *    the arena is checked, and a violation ends that session only.
 */
#ifndef NUSE_ABI_H
#define NUSE_ABI_H

#include <stdint.h>

#define NUSE_ABI_MAGIC   0x4553554eu /* "NUSE" little-endian */
#define NUSE_ABI_VERSION 13u

#define NUSE_CACHELINE 64

/* ---- control socket messages ---------------------------------------- */

enum nuse_ctl_type {
	NUSE_CTL_HELLO = 1,    /* shim -> daemon: nuse_ctl_hello */
	NUSE_CTL_HELLO_OK = 2, /* daemon -> shim: nuse_ctl_hello_ok + memfd */
	NUSE_CTL_SOCKET = 3,   /* shim -> daemon: nuse_ctl_req + socketpair end */
	NUSE_CTL_ACCEPT = 4,   /* shim -> daemon: nuse_ctl_req + socketpair end */
	NUSE_CTL_REPLY = 5,    /* daemon -> shim: nuse_ctl_reply */
	NUSE_CTL_ERROR = 6,    /* daemon -> shim: nuse_ctl_reply, msg says why */
	NUSE_CTL_STATS = 7,    /* CLI -> daemon: header only; reply is JSON text */
	NUSE_CTL_UC = 8,       /* uc "daemon" backend -> daemon: a uc proxy session; body and
	                        * the rest of the conversation are defined by uc/proxy */
	NUSE_CTL_RELAY = 9,    /* shim -> daemon: nuse_ctl_req (sock, gen) + a fresh socketpair
	                        * end: the daemon relays the connection through that pair */
	NUSE_CTL_IDENT = 10,   /* shim -> daemon: nuse_ctl_req (sock: 0 local, 1 peer) + a
	                        * relayed socket's fd: the reply gives that TCP address */
	NUSE_CTL_KEEP = 11,    /* shim -> daemon: nuse_ctl_req (sock, gen) of a listener handed
	                        * on: kept for its new holder when this session lets go */
	NUSE_CTL_ADOPT = 12,   /* shim -> daemon: nuse_ctl_req + a listener's fd this process
	                        * inherited: the reply gives it a slot here (sock, gen, addr) */
	NUSE_CTL_PORTFREE = 14, /* shim -> daemon: nuse_ctl_req (family; sock: a port the kernel
	                         * picked at bind(port 0)): 0 if no engine holds it either */
	NUSE_CTL_REPAIR = 13,  /* shim -> daemon: nuse_ctl_req (sock, gen) + a fresh socketpair
	                        * end: the new pair of a socket whose pair the daemon let go of */
	NUSE_CTL_DIRECT = 15,  /* shim -> daemon: nuse_ctl_req (sock, gen) of a socket whose state
	                        * has NUSE_SS_DIRECT; the reply (result = this end's side, 0 or
	                        * 1) carries the connection's memfd (struct nuse_direct) */
	NUSE_CTL_WAKE = 16,    /* shim -> daemon: nuse_ctl_req (sock, gen) of a direct socket
	                        * whose region says wake_ok for the peer's side; the reply
	                        * carries a copy of the daemon's end of the peer's app pair:
	                        * the writer wakes its reader itself (psig) */
	NUSE_CTL_SPARES = 17,  /* shim -> daemon: nuse_ctl_req (family: the count) + that many
	                        * (1..NUSE_SPARES_MAX) socketpair ends, spares for OP_SOCKET and
	                        * OP_ACCEPT; the reply's result is how many the daemon kept (the
	                        * first ones), their ids in addr (uint32 each), or -errno */
};

/* Spare pairs a NUSE_CTL_SPARES carries at most, and a session holds. */
#define NUSE_SPARES_MAX 16
#define NUSE_SPARES_HELD 64

struct nuse_ctl_hdr {
	uint32_t magic;   /* NUSE_ABI_MAGIC */
	uint16_t version; /* NUSE_ABI_VERSION */
	uint16_t type;    /* enum nuse_ctl_type */
	uint32_t len;     /* whole message length, header included */
	uint32_t seq;     /* echoed in the reply */
};

#define NUSE_COMM_LEN 16

struct nuse_ctl_hello {
	struct nuse_ctl_hdr hdr;
	uint32_t pid;
	uint32_t flags;
	char comm[NUSE_COMM_LEN]; /* program name, NUL padded */
};

struct nuse_ctl_hello_ok {
	struct nuse_ctl_hdr hdr;
	uint64_t arena_size; /* bytes to mmap from the attached memfd */
	uint32_t session_id;
	uint32_t pad;
};

/* An engine name: up to 15 of [a-z0-9_-], NUL-terminated and NUL-padded. */
#define NUSE_ENGINE_LEN 16

struct nuse_ctl_req {
	struct nuse_ctl_hdr hdr;
	int32_t family;   /* SOCKET: AF_INET/AF_INET6 */
	int32_t type;     /* SOCKET: SOCK_STREAM (flags stripped) */
	int32_t protocol; /* SOCKET: 0 or IPPROTO_TCP */
	uint32_t sock;    /* ACCEPT: listener slot */
	uint32_t gen;     /* ACCEPT: listener generation */
	uint32_t pad;
	/* SOCKET: the engine to carry it, "" for the daemon's default (since
	 * version 3).  ACCEPT: all zero; the listener's engine serves. */
	char engine[NUSE_ENGINE_LEN];
};

#define NUSE_ADDR_LEN 128 /* >= sizeof(struct sockaddr_storage) */
#define NUSE_MSG_LEN  128

struct nuse_ctl_reply {
	struct nuse_ctl_hdr hdr;
	int32_t result;   /* >= 0 on success, -errno on failure */
	uint32_t sock;    /* new slot */
	uint32_t gen;     /* its generation */
	uint32_t addrlen; /* ACCEPT: peer address length */
	uint8_t addr[NUSE_ADDR_LEN];
	char msg[NUSE_MSG_LEN]; /* NUSE_CTL_ERROR: human-readable reason */
};

/* ---- the arena ------------------------------------------------------ */

/*
 * Layout: [nuse_arena_hdr][cmd slots][sock 0][sock 1]...
 * Each sock: [nuse_sock (one page)][rx data ring_size][tx data ring_size].
 * Offsets and sizes are given in the header; the shim uses them as given,
 * the daemon never reads them back from shared memory.
 */
#define NUSE_CMD_SLOTS 64 /* one bit each in cmd_pending */
#define NUSE_MAX_SOCKS_LIMIT 65536

struct nuse_arena_hdr {
	uint32_t magic;
	uint32_t version;
	uint64_t arena_size;
	uint32_t max_socks;
	uint32_t ring_size; /* per direction, power of two */
	uint64_t cmd_off;
	uint64_t socks_off;
	uint64_t sock_stride;
	uint64_t spin_ns; /* how long the shim spins before it sleeps */
	uint8_t pad0[NUSE_CACHELINE - 56];

	/* Doorbell of the daemon: the shim bumps d_seq after posting work and
	 * calls FUTEX_WAKE on it when d_sleeping is set. */
	uint32_t d_seq;
	uint32_t d_sleeping;
	uint8_t pad1[NUSE_CACHELINE - 8];

	/* Command slots with a request posted (bit i = slot i). */
	uint64_t cmd_pending;
	uint8_t pad2[NUSE_CACHELINE - 8];

	/* Sockets that need the daemon's attention: tx data produced, or rx
	 * space freed while the daemon waited for it (bit i = sock i). */
	uint64_t attention[NUSE_MAX_SOCKS_LIMIT / 64];
};

enum nuse_cmd_state {
	NUSE_CMD_FREE = 0,
	NUSE_CMD_CLAIMED = 1,   /* a shim thread owns it, filling it */
	NUSE_CMD_SUBMITTED = 2, /* bit set in cmd_pending */
	NUSE_CMD_DONE = 3,      /* result written by the daemon */
};

/*
 * nuse_cmd.flags.  ASYNC: no thread waits for the answer; the daemon
 * stores FREE instead of DONE.  Only for CLOSE and (since version 13)
 * SETSOCKOPT (else -EINVAL, DONE).  The
 * daemon runs a batch's asynchronous commands (the bits it takes from
 * cmd_pending at once) before the others, so a command posted after one
 * never overtakes it.
 */
enum nuse_cmd_flags {
	NUSE_CMD_F_ASYNC = 1u << 0,
};

enum nuse_op {
	NUSE_OP_BIND = 1,        /* addr */
	NUSE_OP_LISTEN = 2,      /* arg0 = backlog */
	NUSE_OP_CONNECT = 3,     /* addr; result 0 or -EINPROGRESS or -errno */
	NUSE_OP_SHUTDOWN = 4,    /* arg0 = SHUT_RD/WR/RDWR */
	NUSE_OP_CLOSE = 5,       /* no reply awaited */
	NUSE_OP_GETSOCKNAME = 6, /* addr out */
	NUSE_OP_GETPEERNAME = 7, /* addr out */
	NUSE_OP_SETSOCKOPT = 8,  /* arg0 = level, arg1 = optname, opt/optlen */
	NUSE_OP_GETSOCKOPT = 9,  /* arg0 = level, arg1 = optname, opt/optlen out */
	NUSE_OP_SOCKET = 10,     /* arg0 = a spare's id, opt = struct nuse_op_socket; sock/gen
	                          * unused; addr out = struct nuse_op_born */
	NUSE_OP_ACCEPT = 11,     /* sock/gen = the listener, arg0 = a spare's id; opt out =
	                          * struct nuse_op_born, addr out = the peer's address.
	                          * Both: -ENOENT for an id the daemon does not hold; a
	                          * failed one leaves the spare the daemon's */
};

/* NUSE_OP_SOCKET's request: as nuse_ctl_req's fields. */
struct nuse_op_socket {
	int32_t family, type, protocol;
	char engine[NUSE_ENGINE_LEN];
};

/* What NUSE_OP_SOCKET and NUSE_OP_ACCEPT give: the new slot. */
struct nuse_op_born {
	uint32_t sock, gen;
};

#define NUSE_OPT_LEN 64
#define NUSE_INFO_LEN 256

struct nuse_cmd {
	uint32_t state;   /* enum nuse_cmd_state; futex word of the waiter */
	uint32_t waiting; /* a shim thread sleeps on state */
	uint16_t op;      /* enum nuse_op */
	uint16_t flags;
	uint32_t sock;
	uint32_t gen;
	int32_t result;   /* written by the daemon: >= 0 or -errno */
	uint32_t arg0;
	uint32_t arg1;
	uint32_t addrlen;
	uint32_t optlen;
	uint8_t addr[NUSE_ADDR_LEN];
	uint8_t opt[NUSE_OPT_LEN];
	uint8_t pad[256 - 40 - NUSE_ADDR_LEN - NUSE_OPT_LEN];
};

/* nuse_sock.state bits: written by the daemon only. */
enum nuse_sock_state {
	NUSE_SS_OPEN = 1u << 0,
	NUSE_SS_CONNECTING = 1u << 1,
	NUSE_SS_CONNECTED = 1u << 2,
	NUSE_SS_LISTENING = 1u << 3,
	NUSE_SS_ACCEPTQ = 1u << 4,  /* listener has a connection to accept */
	NUSE_SS_RD_EOF = 1u << 5,   /* peer sent FIN: EOF once rx is drained */
	NUSE_SS_WR_DEAD = 1u << 6,  /* no more sending: reset or closed */
	NUSE_SS_ERROR = 1u << 7,    /* so_error holds a pending error */
	NUSE_SS_RESET = 1u << 8,    /* connection reset: rx gives ECONNRESET */
	NUSE_SS_TX_STALL = 1u << 9, /* daemon waits for the engine to drain */
	NUSE_SS_RAW = 1u << 10,     /* bytes came past the shim: reset (PROTOCOL.md) */
	NUSE_SS_SHARED = 1u << 11,  /* a listener handed on: other sessions hold it too */
	NUSE_SS_DIRECT = 1u << 12,  /* connected over a direct region (NUSE_CTL_DIRECT): the
	                             * slot's own rings are unused */
};

/* nuse_sock.sig: how many readiness bytes are queued in the application's
 * end (0: none; the daemon adds one per edge, the shim takes them all);
 * nuse_sock.fill: has the shim filled its end so it polls unwritable? */
enum nuse_sig { NUSE_SIG_NONE = 0, NUSE_SIG_SET = 1 };
/* FILL_BUSY is no longer written (the shim fills on every EAGAIN); reserved. */
enum nuse_fill { NUSE_FILL_NONE = 0, NUSE_FILL_DONE = 1, NUSE_FILL_BUSY = 2 };

/* nuse_sock.lazy: loud (0), lazy and level-triggered everywhere (LT: a
 * queued byte is wake-up enough), or lazy with an edge-triggered waiter
 * (ET: while watched, each arrival is an edge, as when loud). */
enum nuse_lazy { NUSE_LAZY_NONE = 0, NUSE_LAZY_LT = 1, NUSE_LAZY_ET = 2 };

/* nuse_sock.daemon_wait bits: set by the daemon; the shim flags the socket
 * in attention[] and rings the doorbell when it satisfies RX_SPACE.
 * TRIM_TX: the tx ring has been idle and empty a while; the shim gives its
 * pages back at its next write (it is the producer) and clears the bit. */
enum nuse_dwait {
	NUSE_DWAIT_RX_SPACE = 1u << 0,
	NUSE_DWAIT_TRIM_TX = 1u << 1,
};

struct nuse_ring {
	uint64_t head; /* producer: bytes ever written */
	/* producer: where the data resumes after a rewind (PROTOCOL.md "Data"):
	 * the bytes from the consumer's tail up to it, when tail < skip <= head,
	 * are none */
	uint64_t skip;
	uint8_t pad0[NUSE_CACHELINE - 16];
	uint64_t tail; /* consumer: bytes ever read */
	uint8_t pad1[NUSE_CACHELINE - 8];
};

struct nuse_sock {
	uint32_t gen;    /* bumped by the daemon each time the slot is reused */
	uint32_t state;  /* enum nuse_sock_state */
	int32_t so_error;
	uint32_t sig;         /* enum nuse_sig */
	uint32_t fill;        /* enum nuse_fill */
	uint32_t daemon_wait; /* enum nuse_dwait */
	/* Junk bytes the shim ever wrote to fill its end, counted before each
	 * write: more bytes at the daemon's end than this are the program's own,
	 * written past the shim (PROTOCOL.md "Raw writes"). */
	uint64_t fill_bytes;
	/* daemon-maintained counters, for the curious */
	uint64_t tx_bytes;
	uint64_t rx_bytes;
	/* Lazy readiness (PROTOCOL.md "Lazy readiness", since version 10).
	 * lazy: set by the shim while every wait of this program for the
	 * socket's data is one the shim sees (an epoll set it scans, its own
	 * blocking calls); cleared for good when that stops being true (poll's,
	 * fork's, ... demotion).  watched: the shim's threads asleep in such a
	 * wait (each adds one, looks at the ring again, sleeps, takes it back).
	 * The daemon leaves out the readiness byte of a lazy socket's data
	 * while watched is 0.  lazy_owed: set by the daemon while data waits
	 * without its byte; the shim that clears lazy waits for it to clear
	 * (the byte is written then). */
	uint32_t lazy; /* enum nuse_lazy */
	uint32_t lazy_owed;
	uint32_t watched;
	uint8_t pad1[NUSE_CACHELINE - 60];
	struct nuse_ring rx; /* daemon -> shim */
	struct nuse_ring tx; /* shim -> daemon */
	/* GETSOCKOPT TCP_INFO answers here (a Linux struct tcp_info, result =
	 * its length): it does not fit a command slot's opt. */
	uint8_t info[NUSE_INFO_LEN];
};

#define NUSE_SOCK_HDR_SIZE 4096

/* ---- the direct region of a shm connection (since version 4) --------- */

/*
 * One memfd per connection between two NUSE sockets of the shm engine,
 * given by the daemon to exactly the two ends' sessions (NUSE_CTL_DIRECT):
 * [nuse_direct (one page)][ring 0 data][ring 1 data].  ring[i] carries the
 * bytes side i writes and side 1-i reads (side 0 is the connecting end).
 * The end of side i owns ring[i].head and ring[1-i].tail; it trusts
 * nothing its peer writes (a count out of range breaks the connection).
 * The memfd is sealed (no shrink, no grow), so neither end can make the
 * other's or the daemon's access fault.
 */
#define NUSE_DIRECT_MAGIC 0x54434944u /* "DICT" little-endian */

struct nuse_direct {
	uint32_t magic;
	uint32_t version;   /* NUSE_ABI_VERSION */
	uint32_t ring_size; /* per direction, power of two */
	uint32_t pad;
	uint64_t data_off;  /* ring i's data at data_off + i * ring_size */
	uint8_t pad0[NUSE_CACHELINE - 24];
	struct nuse_ring ring[2];
	/* wwait[i]: side i's writer found ring[i] full and waits for room.
	 * The reader that frees room takes it (exchange to 0) and flags its
	 * own socket for the daemon, which wakes the writer. */
	uint32_t wwait[2];
	/* rspin[i]: side i's threads spinning for data on ring[1-i] (a count:
	 * add before the spin, subtract before sleeping, then look again).
	 * A writer whose reader spins publishes its head and rings nobody:
	 * the reader takes the bytes itself, and the daemon is not woken per
	 * message.  A reader that leaves bytes unread flags its socket so the
	 * daemon mirrors them on the fd. */
	uint32_t rspin[2];
	uint8_t pad1[NUSE_CACHELINE - 16];
	/* psig[i]: readiness bytes side i's peer wrote into side i's app fd
	 * itself, through the waker the daemon gave it (NUSE_CTL_WAKE):
	 * counted before each is written, as a socket's sig, and taken back
	 * by side i's shim with sig's (it folds them into sig). */
	uint32_t psig[2];
	/* wake_ok[i]: the daemon holds side i's waker (the daemon's end of its
	 * app pair), so side 1-i may ask for a copy.  Set and cleared by the
	 * daemon only. */
	uint32_t wake_ok[2];
	/* et[i]: side i's fd is (or was) in an epoll set with EPOLLET, so
	 * every write is an edge it must be told of; otherwise one queued
	 * byte (psig[i] > 0) is enough and a writer adds none. */
	uint32_t et[2];
	uint8_t pad2[NUSE_CACHELINE - 24];
};

#define NUSE_DIRECT_HDR_SIZE 4096

/* Daemon defaults; the arena header carries the values in force. */
#define NUSE_DEFAULT_RING_SIZE (1024u * 1024u)
#define NUSE_DEFAULT_MAX_SOCKS 4096u

#define NUSE_DEFAULT_SOCK_PATH "/run/nuse/nused.sock"

#endif /* NUSE_ABI_H */
