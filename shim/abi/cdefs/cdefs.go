// Package cdefs exposes sizes and offsets of nuse_abi.h as the C compiler
// sees them, so the Go mirror can be checked against the header.
package cdefs

/*
#include <stddef.h>
#include <linux/tcp.h>
#include "../nuse_abi.h"

#define F(T, f) { #T "." #f, offsetof(struct T, f) }
#define S(T) { #T, sizeof(struct T) }
struct nv { const char *name; size_t v; };
static struct nv layout[] = {
	S(nuse_ctl_hdr), F(nuse_ctl_hdr, version), F(nuse_ctl_hdr, type), F(nuse_ctl_hdr, len), F(nuse_ctl_hdr, seq),
	S(nuse_ctl_hello), F(nuse_ctl_hello, pid), F(nuse_ctl_hello, flags), F(nuse_ctl_hello, comm),
	S(nuse_ctl_hello_ok), F(nuse_ctl_hello_ok, arena_size), F(nuse_ctl_hello_ok, session_id),
	S(nuse_ctl_req), F(nuse_ctl_req, family), F(nuse_ctl_req, type), F(nuse_ctl_req, protocol), F(nuse_ctl_req, sock), F(nuse_ctl_req, gen), F(nuse_ctl_req, engine),
	S(nuse_ctl_reply), F(nuse_ctl_reply, result), F(nuse_ctl_reply, sock), F(nuse_ctl_reply, gen), F(nuse_ctl_reply, addrlen), F(nuse_ctl_reply, addr), F(nuse_ctl_reply, msg),
	S(nuse_arena_hdr), F(nuse_arena_hdr, arena_size), F(nuse_arena_hdr, max_socks), F(nuse_arena_hdr, ring_size), F(nuse_arena_hdr, cmd_off),
	F(nuse_arena_hdr, socks_off), F(nuse_arena_hdr, sock_stride), F(nuse_arena_hdr, spin_ns), F(nuse_arena_hdr, d_seq), F(nuse_arena_hdr, d_sleeping),
	F(nuse_arena_hdr, cmd_pending), F(nuse_arena_hdr, attention),
	S(nuse_cmd), F(nuse_cmd, state), F(nuse_cmd, waiting), F(nuse_cmd, op), F(nuse_cmd, flags), F(nuse_cmd, sock), F(nuse_cmd, gen),
	F(nuse_cmd, result), F(nuse_cmd, arg0), F(nuse_cmd, arg1), F(nuse_cmd, addrlen), F(nuse_cmd, optlen), F(nuse_cmd, addr), F(nuse_cmd, opt),
	S(nuse_ring), F(nuse_ring, head), F(nuse_ring, skip), F(nuse_ring, tail),
	S(nuse_sock), F(nuse_sock, gen), F(nuse_sock, state), F(nuse_sock, so_error), F(nuse_sock, sig), F(nuse_sock, fill), F(nuse_sock, daemon_wait), F(nuse_sock, fill_bytes),
	F(nuse_sock, tx_bytes), F(nuse_sock, rx_bytes), F(nuse_sock, rx), F(nuse_sock, tx), F(nuse_sock, info),
	S(nuse_direct), F(nuse_direct, ring_size), F(nuse_direct, data_off), F(nuse_direct, ring), F(nuse_direct, wwait), F(nuse_direct, rspin),
	F(nuse_direct, psig), F(nuse_direct, wake_ok), F(nuse_direct, et),
	S(nuse_op_socket), F(nuse_op_socket, family), F(nuse_op_socket, type), F(nuse_op_socket, protocol), F(nuse_op_socket, engine),
	S(nuse_op_born), F(nuse_op_born, sock), F(nuse_op_born, gen),
};
#define TI(f) { #f, offsetof(struct tcp_info, f) }
static struct nv tcpinfo[] = {
	TI(tcpi_state), TI(tcpi_ca_state), TI(tcpi_rto), TI(tcpi_snd_mss), TI(tcpi_rcv_mss), TI(tcpi_unacked),
	TI(tcpi_pmtu), TI(tcpi_rtt), TI(tcpi_rttvar), TI(tcpi_snd_ssthresh), TI(tcpi_snd_cwnd), TI(tcpi_advmss),
	TI(tcpi_reordering), TI(tcpi_total_retrans), TI(tcpi_bytes_acked), TI(tcpi_bytes_received),
	TI(tcpi_segs_out), TI(tcpi_segs_in), TI(tcpi_notsent_bytes), TI(tcpi_bytes_sent),
	{ "sizeof", sizeof(struct tcp_info) },
};
static size_t tcpinfo_n(void) { return sizeof(tcpinfo) / sizeof(tcpinfo[0]); }
static const char *tcpinfo_name(size_t i) { return tcpinfo[i].name; }
static size_t tcpinfo_v(size_t i) { return tcpinfo[i].v; }
static size_t layout_n(void) { return sizeof(layout) / sizeof(layout[0]); }
static const char *layout_name(size_t i) { return layout[i].name; }
static size_t layout_v(size_t i) { return layout[i].v; }

static struct nv consts[] = {
	{"MAGIC", NUSE_ABI_MAGIC}, {"VERSION", NUSE_ABI_VERSION}, {"CMD_SLOTS", NUSE_CMD_SLOTS},
	{"MAX_SOCKS_LIMIT", NUSE_MAX_SOCKS_LIMIT}, {"SOCK_HDR_SIZE", NUSE_SOCK_HDR_SIZE},
	{"ADDR_LEN", NUSE_ADDR_LEN}, {"MSG_LEN", NUSE_MSG_LEN}, {"OPT_LEN", NUSE_OPT_LEN}, {"INFO_LEN", NUSE_INFO_LEN}, {"COMM_LEN", NUSE_COMM_LEN}, {"ENGINE_LEN", NUSE_ENGINE_LEN},
	{"CTL_HELLO", NUSE_CTL_HELLO}, {"CTL_HELLO_OK", NUSE_CTL_HELLO_OK}, {"CTL_SOCKET", NUSE_CTL_SOCKET},
	{"CTL_ACCEPT", NUSE_CTL_ACCEPT}, {"CTL_REPLY", NUSE_CTL_REPLY}, {"CTL_ERROR", NUSE_CTL_ERROR}, {"CTL_STATS", NUSE_CTL_STATS}, {"CTL_UC", NUSE_CTL_UC}, {"CTL_RELAY", NUSE_CTL_RELAY}, {"CTL_IDENT", NUSE_CTL_IDENT}, {"CTL_KEEP", NUSE_CTL_KEEP}, {"CTL_ADOPT", NUSE_CTL_ADOPT}, {"CTL_REPAIR", NUSE_CTL_REPAIR}, {"CTL_PORTFREE", NUSE_CTL_PORTFREE}, {"CTL_DIRECT", NUSE_CTL_DIRECT}, {"CTL_WAKE", NUSE_CTL_WAKE},
	{"OP_BIND", NUSE_OP_BIND}, {"OP_LISTEN", NUSE_OP_LISTEN}, {"OP_CONNECT", NUSE_OP_CONNECT}, {"OP_SHUTDOWN", NUSE_OP_SHUTDOWN},
	{"OP_CLOSE", NUSE_OP_CLOSE}, {"OP_GETSOCKNAME", NUSE_OP_GETSOCKNAME}, {"OP_GETPEERNAME", NUSE_OP_GETPEERNAME},
	{"OP_SETSOCKOPT", NUSE_OP_SETSOCKOPT}, {"OP_GETSOCKOPT", NUSE_OP_GETSOCKOPT},
	{"SS_OPEN", NUSE_SS_OPEN}, {"SS_CONNECTING", NUSE_SS_CONNECTING}, {"SS_CONNECTED", NUSE_SS_CONNECTED},
	{"SS_LISTENING", NUSE_SS_LISTENING}, {"SS_ACCEPTQ", NUSE_SS_ACCEPTQ}, {"SS_RD_EOF", NUSE_SS_RD_EOF},
	{"SS_WR_DEAD", NUSE_SS_WR_DEAD}, {"SS_ERROR", NUSE_SS_ERROR}, {"SS_RESET", NUSE_SS_RESET}, {"SS_TX_STALL", NUSE_SS_TX_STALL}, {"SS_RAW", NUSE_SS_RAW}, {"SS_SHARED", NUSE_SS_SHARED}, {"SS_DIRECT", NUSE_SS_DIRECT},
	{"SIG_NONE", NUSE_SIG_NONE}, {"SIG_SET", NUSE_SIG_SET}, {"FILL_NONE", NUSE_FILL_NONE}, {"FILL_DONE", NUSE_FILL_DONE}, {"FILL_BUSY", NUSE_FILL_BUSY}, {"DWAIT_RX_SPACE", NUSE_DWAIT_RX_SPACE}, {"DWAIT_TRIM_TX", NUSE_DWAIT_TRIM_TX},
	{"CMD_FREE", NUSE_CMD_FREE}, {"CMD_CLAIMED", NUSE_CMD_CLAIMED}, {"CMD_SUBMITTED", NUSE_CMD_SUBMITTED}, {"CMD_DONE", NUSE_CMD_DONE}, {"CMD_F_ASYNC", NUSE_CMD_F_ASYNC}, {"OP_SOCKET", NUSE_OP_SOCKET}, {"OP_ACCEPT", NUSE_OP_ACCEPT}, {"CTL_SPARES", NUSE_CTL_SPARES}, {"SPARES_MAX", NUSE_SPARES_MAX}, {"SPARES_HELD", NUSE_SPARES_HELD},
	{"DEFAULT_RING_SIZE", NUSE_DEFAULT_RING_SIZE}, {"DEFAULT_MAX_SOCKS", NUSE_DEFAULT_MAX_SOCKS},
};
static size_t consts_n(void) { return sizeof(consts) / sizeof(consts[0]); }
static const char *consts_name(size_t i) { return consts[i].name; }
static size_t consts_v(size_t i) { return consts[i].v; }
static const char *sock_path(void) { return NUSE_DEFAULT_SOCK_PATH; }
*/
import "C"

// TCPInfo maps struct tcp_info's field names (and "sizeof") to offsets, as
// the installed linux/tcp.h has them.
func TCPInfo() map[string]uintptr {
	m := map[string]uintptr{}
	for i := C.size_t(0); i < C.tcpinfo_n(); i++ {
		m[C.GoString(C.tcpinfo_name(i))] = uintptr(C.tcpinfo_v(i))
	}
	return m
}

// Layout maps "struct.field" (or "struct" for its size) to the C value.
func Layout() map[string]uintptr {
	m := map[string]uintptr{}
	for i := C.size_t(0); i < C.layout_n(); i++ {
		m[C.GoString(C.layout_name(i))] = uintptr(C.layout_v(i))
	}
	return m
}

// Consts maps the header's constant names to their values.
func Consts() map[string]uint64 {
	m := map[string]uint64{}
	for i := C.size_t(0); i < C.consts_n(); i++ {
		m[C.GoString(C.consts_name(i))] = uint64(C.consts_v(i))
	}
	return m
}

// SockPath is NUSE_DEFAULT_SOCK_PATH.
func SockPath() string { return C.GoString(C.sock_path()) }
