/* SPDX-License-Identifier: (GPL-2.0 WITH Linux-syscall-note) OR MIT */
/*
 * nuse_uapi.h - the interface of /dev/nuse (nuse.ko), shared by the module
 * and by user space (stack/link/kmod mirrors it in Go; its layout test
 * checks the two agree).
 *
 * A NUSE device is a layer-3 (IP, no link header) network device, like a
 * TUN device, whose packets travel through two rings in memory shared with
 * user space:
 *
 *   k2u: packets the kernel transmits on the device, for user space to read
 *        (kernel produces, user consumes);
 *   u2k: packets user space injects; the kernel receives them on the device
 *        (user produces, kernel consumes, through NAPI).
 *
 * open("/dev/nuse"), ioctl(NUSE_IOC_CREATE) creates (or attaches to) the
 * device and sizes the rings, mmap(mmap_size, MAP_SHARED, offset 0) maps
 * them. Memory layout (offsets are returned by NUSE_IOC_CREATE):
 *
 *   0              struct nuse_ctrl (one page)
 *   k2u_desc_off   k2u_slots  x struct nuse_desc
 *   u2k_desc_off   u2k_slots  x struct nuse_desc
 *   k2u_buf_off    k2u_slots  x slot_size bytes (packet i of the k2u ring is
 *                  at desc.off, always slot (index % k2u_slots))
 *   u2k_buf_off    u2k_slots  x slot_size bytes, the area user space writes
 *                  packets into; a u2k descriptor may point anywhere in it
 *
 * Ring indices are free-running 32-bit counters; entry i lives at
 * (i & (slots - 1)). A ring is empty when prod == cons, full when
 * prod - cons == slots. The producer writes the descriptor and packet, then
 * publishes prod with a release store; the consumer reads prod with an
 * acquire load and publishes cons after it is done with the entries.
 *
 * Wake-ups. k2u: poll()/epoll on the fd reports EPOLLIN while the k2u ring
 * is not empty. u2k: after publishing prod, user space must kick the
 * kernel (ioctl(NUSE_IOC_KICK) or a write() of any length) when
 * u2k.flags has NUSE_RING_NEED_KICK set; read flags after publishing prod
 * (a full barrier between the two). The kernel sets the flag before it
 * stops polling the ring and then looks at prod once more.
 *
 * The kernel trusts nothing user space writes: every u2k descriptor is
 * checked (offset and length inside the u2k area, length within the MTU,
 * protocol, checksum fields) and a bad one is dropped and counted as a
 * receive error (rx_errors, and per cause in struct nuse_ctrl); a u2k prod
 * more than u2k_slots ahead of cons drops everything pending.
 */
#ifndef _UAPI_LINUX_NUSE_H
#define _UAPI_LINUX_NUSE_H

#include <linux/types.h>
#include <linux/ioctl.h>

#define NUSE_UAPI_VERSION	1
#define NUSE_DEV_PATH		"/dev/nuse"
#define NUSE_IFNAMSIZ		16

/* struct nuse_setup.flags */
#define NUSE_F_PERSIST		(1U << 0) /* keep the device after close */
#define NUSE_F_TSO		(1U << 1) /* both rings may carry TCP segments
					   * of up to slot_size bytes (gso_type
					   * and gso_size say how to cut them) */

/* struct nuse_desc.csum */
#define NUSE_CSUM_NONE		0 /* not checked: the receiver verifies */
#define NUSE_CSUM_UNNECESSARY	1 /* checksums are known to be good */
#define NUSE_CSUM_PARTIAL	2 /* finish: sum from csum_start, store at
				   * csum_start + csum_offset */

/*
 * struct nuse_desc.gso_type, with NUSE_F_TSO only, both directions: a TCP
 * super-segment of up to slot_size bytes with a partial checksum
 * (NUSE_CSUM_PARTIAL, csum_start at the TCP header), to be cut into
 * segments of gso_size payload bytes (at most the MTU).
 */
#define NUSE_GSO_NONE		0
#define NUSE_GSO_TCPV4		1
#define NUSE_GSO_TCPV6		2

/* struct nuse_ring_ctrl.flags */
#define NUSE_RING_NEED_KICK	(1U << 0) /* u2k: kernel is not polling */

/* Limits */
#define NUSE_MIN_SLOTS		16
#define NUSE_MAX_SLOTS		32768
#define NUSE_MIN_SLOT_SIZE	2048
#define NUSE_MAX_SLOT_SIZE	65536
#define NUSE_MAX_MMAP		(512ULL << 20)

/* One packet: 32 bytes. */
struct nuse_desc {
	__u32 off;		/* offset of the packet in the ring's buffer area */
	__u32 len;		/* bytes, starting with the IP header */
	__u16 proto;		/* ETH_P_IP or ETH_P_IPV6, host order; 0: from
				 * the IP version nibble (u2k only) */
	__u8 csum;		/* NUSE_CSUM_* */
	__u8 gso_type;		/* NUSE_GSO_*, 0 without NUSE_F_TSO */
	__u16 gso_size;		/* segment payload size (MSS), or 0 */
	__u16 csum_start;	/* NUSE_CSUM_PARTIAL: from the packet start */
	__u16 csum_offset;	/* NUSE_CSUM_PARTIAL: from csum_start */
	__u16 flags;		/* must be 0 */
	__u32 reserved[3];	/* set to 0 (not read) */
};

/* One ring's shared indices, each on its own cache line. */
struct nuse_ring_ctrl {
	__u32 prod;
	__u32 pad0[15];
	__u32 cons;
	__u32 pad1[15];
	__u32 flags;		/* NUSE_RING_* */
	__u32 pad2[15];
};

/* Offset 0 of the mapping. Counters are written by the kernel only. */
struct nuse_ctrl {
	struct nuse_ring_ctrl k2u;
	struct nuse_ring_ctrl u2k;
	__u32 version;		/* NUSE_UAPI_VERSION */
	__u32 pad;
	/* u2k descriptors dropped, per cause */
	__u64 err_bad_index;	/* prod more than u2k_slots ahead of cons */
	__u64 err_bad_off;	/* offset/length outside the u2k area */
	__u64 err_bad_len;	/* length 0 or over the MTU */
	__u64 err_bad_proto;	/* unknown protocol / version nibble */
	__u64 err_bad_csum;	/* bad csum/gso/flags/reserved fields */
	__u64 err_nomem;	/* no skb */
	/* k2u packets dropped */
	__u64 k2u_full;		/* the ring was full */
	__u64 k2u_too_big;	/* longer than slot_size */
};

/* NUSE_IOC_CREATE argument. */
struct nuse_setup {
	__u32 version;		/* in: NUSE_UAPI_VERSION */
	__u32 flags;		/* in: NUSE_F_* */
	char name[NUSE_IFNAMSIZ]; /* in: name, pattern with %d, or "" for
				   * "nuse%d"; an existing unattached NUSE
				   * device of that name is attached to;
				   * out: the device's name */
	__u32 mtu;		/* in: 0 = 1500 (ignored when attaching) */
	__u32 k2u_slots;	/* in: power of two, 0 = 512; out */
	__u32 u2k_slots;	/* in: power of two, 0 = 512; out */
	__u32 slot_size;	/* in: 0 = fits the MTU; out */
	__u32 ifindex;		/* out */
	__u32 desc_size;	/* out: sizeof(struct nuse_desc) */
	__u64 mmap_size;	/* out */
	__u64 k2u_desc_off;	/* out */
	__u64 u2k_desc_off;	/* out */
	__u64 k2u_buf_off;	/* out */
	__u64 u2k_buf_off;	/* out */
	__u64 reserved[4];	/* in: must be 0 */
};

#define NUSE_IOC_MAGIC		0xe4
#define NUSE_IOC_CREATE		_IOWR(NUSE_IOC_MAGIC, 1, struct nuse_setup)
#define NUSE_IOC_KICK		_IO(NUSE_IOC_MAGIC, 2)
#define NUSE_IOC_SET_PERSIST	_IOW(NUSE_IOC_MAGIC, 3, int)

#endif /* _UAPI_LINUX_NUSE_H */
