// SPDX-License-Identifier: GPL-2.0
/*
 * nuse.ko - a layer-3 virtual network device whose packets go to and come
 * from user space through rings in shared memory (see nuse_uapi.h).
 *
 * Locking: the pairing of a file (struct nuse_file) and a device (struct
 * nuse_dev) changes under RTNL only. The data paths find each other through
 * RCU pointers: ndo_start_xmit (under rcu_read_lock_bh) and the NAPI poll
 * (softirq) reach the file's rings through nd->nf; ioctl and poll on the
 * file reach the device through nf->nd under rcu_read_lock(). Detaching
 * clears both pointers and waits for a grace period before the rings are
 * freed. ndo_start_xmit is the only k2u producer (one queue, no LLTX) and
 * the NAPI poll the only u2k consumer.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/etherdevice.h>
#include <linux/fs.h>
#include <linux/if_arp.h>
#include <linux/init.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/netdevice.h>
#include <linux/poll.h>
#include <linux/rtnetlink.h>
#include <linux/skbuff.h>
#include <linux/slab.h>
#include <linux/u64_stats_sync.h>
#include <linux/uaccess.h>
#include <linux/virtio_net.h>
#include <linux/vmalloc.h>
#include <net/ip.h>
#include <net/rtnetlink.h>

#include "nuse_uapi.h"

#define NUSE_DEFAULT_SLOTS	512
#define NUSE_NAPI_WEIGHT	64

struct nuse_file;

struct nuse_stats {
	u64 packets;
	u64 bytes;
	u64 dropped;
	u64 errors;
	struct u64_stats_sync syncp;
};

struct nuse_dev {
	struct net_device *dev;
	struct napi_struct napi;
	struct nuse_file __rcu *nf;
	bool persist;
	struct nuse_stats rx;	/* u2k, written by the NAPI poll */
	struct nuse_stats tx;	/* k2u, written by ndo_start_xmit */
	struct page *head_page;	/* heads of small packets */
	unsigned int head_next;	/* next piece of head_page */
};

struct nuse_file {
	struct nuse_dev __rcu *nd;
	wait_queue_head_t wq;
	struct mutex lock;	/* serializes NUSE_IOC_CREATE */
	void *mem;		/* vmalloc_user()ed, mapped by user space */
	size_t mem_size;
	struct nuse_ctrl *ctrl;
	struct nuse_desc *k2u_desc, *u2k_desc;
	u8 *k2u_buf, *u2k_buf;
	u32 k2u_slots, u2k_slots, slot_size;
	bool tso;		/* user space takes GSO packets */
	size_t u2k_area;
	u32 k2u_prod;		/* authoritative copies of our own indices */
	u32 u2k_cons;
};

static struct rtnl_link_ops nuse_link_ops;

static void nuse_err(u64 *counter)
{
	/* Shared with user space, informational only. */
	WRITE_ONCE(*counter, READ_ONCE(*counter) + 1);
}

/* k2u: the kernel transmits on the device. */
static netdev_tx_t nuse_xmit(struct sk_buff *skb, struct net_device *dev)
{
	struct nuse_dev *nd = netdev_priv(dev);
	struct nuse_file *nf;
	struct nuse_desc *d;
	u32 prod, cons, len = skb->len;
	u16 gso_size = 0;
	u8 gso_type = 0;
	u32 slot;

	nf = rcu_dereference_bh(nd->nf);
	if (!nf)
		goto drop;

	prod = nf->k2u_prod;
	cons = smp_load_acquire(&nf->ctrl->k2u.cons);
	if (prod - cons >= nf->k2u_slots) {
		/* Full, or a consumer index that makes no sense: drop. */
		nuse_err(&nf->ctrl->k2u_full);
		goto drop;
	}
	if (unlikely(len > nf->slot_size)) {
		nuse_err(&nf->ctrl->k2u_too_big);
		goto drop;
	}
	if (skb_is_gso(skb)) {
		unsigned int t = skb_shinfo(skb)->gso_type;

		if (!nf->tso || !(t & (SKB_GSO_TCPV4 | SKB_GSO_TCPV6)))
			goto drop;
		gso_type = t & SKB_GSO_TCPV4 ? NUSE_GSO_TCPV4 : NUSE_GSO_TCPV6;
		gso_size = skb_shinfo(skb)->gso_size;
	}

	slot = prod & (nf->k2u_slots - 1);
	d = &nf->k2u_desc[slot];
	if (skb_copy_bits(skb, 0, nf->k2u_buf + (size_t)slot * nf->slot_size,
			  len))
		goto drop;

	memset(d, 0, sizeof(*d));
	d->off = slot * nf->slot_size;
	d->len = len;
	d->proto = ntohs(skb->protocol);
	d->gso_type = gso_type;
	d->gso_size = gso_size;
	if (skb->ip_summed == CHECKSUM_PARTIAL) {
		d->csum = NUSE_CSUM_PARTIAL;
		d->csum_start = skb_checksum_start_offset(skb);
		d->csum_offset = skb->csum_offset;
	} else if (skb->ip_summed == CHECKSUM_UNNECESSARY) {
		d->csum = NUSE_CSUM_UNNECESSARY;
	}
	smp_store_release(&nf->ctrl->k2u.prod, prod + 1);
	nf->k2u_prod = prod + 1;

	u64_stats_update_begin(&nd->tx.syncp);
	nd->tx.packets++;
	nd->tx.bytes += len;
	u64_stats_update_end(&nd->tx.syncp);

	/* wq_has_sleeper() orders the prod store before the waiter check. */
	if (wq_has_sleeper(&nf->wq))
		wake_up_interruptible_poll(&nf->wq, EPOLLIN | EPOLLRDNORM);
	consume_skb(skb);
	return NETDEV_TX_OK;

drop:
	u64_stats_update_begin(&nd->tx.syncp);
	nd->tx.dropped++;
	u64_stats_update_end(&nd->tx.syncp);
	kfree_skb(skb);
	return NETDEV_TX_OK;
}

/*
 * Heads of small u2k packets: 1 KiB pieces of a page the device keeps for
 * its NAPI poll (the only user). Each skb accounts for 1 KiB of it, as
 * with napi_alloc_skb(), which for small packets takes a fresh page every
 * four of them (cleared first, with init_on_alloc). This page is handed
 * out again as soon as every piece of it has been freed, the common case:
 * a small packet is usually consumed or dropped before the next one comes.
 */
#define NUSE_HEAD_SIZE		SZ_1K
#define NUSE_HEADS_PER_PAGE	(PAGE_SIZE / NUSE_HEAD_SIZE)
#define NUSE_SMALL_MAX		(SKB_WITH_OVERHEAD(NUSE_HEAD_SIZE) - \
				 NET_SKB_PAD - NET_IP_ALIGN)

static void *nuse_small_head(struct nuse_dev *nd)
{
	struct page *page = nd->head_page;

	if (page) {
		if (page_ref_count(page) == 1) {
			/* Only our own reference left: all pieces are back. */
			nd->head_next = 0;
		} else if (nd->head_next == NUSE_HEADS_PER_PAGE) {
			/* The last piece to be freed frees the page. */
			put_page(page);
			nd->head_page = NULL;
			page = NULL;
		}
	}
	if (!page) {
		page = alloc_page(GFP_ATOMIC | __GFP_NOWARN | __GFP_NOMEMALLOC);
		if (!page)
			return NULL;
		nd->head_page = page;
		nd->head_next = 0;
	}
	/* One reference per piece, dropped by skb_free_frag(). */
	get_page(page);
	return page_address(page) + nd->head_next++ * NUSE_HEAD_SIZE;
}

static struct sk_buff *nuse_alloc_skb(struct nuse_dev *nd, u32 len)
{
	struct sk_buff *skb;
	void *data;

	if (len > NUSE_SMALL_MAX)
		return napi_alloc_skb(&nd->napi, len);
	data = nuse_small_head(nd);
	if (!data)
		return NULL;
	skb = napi_build_skb(data, NUSE_HEAD_SIZE);
	if (!skb) {
		skb_free_frag(data);
		return NULL;
	}
	skb_reserve(skb, NET_SKB_PAD + NET_IP_ALIGN);
	return skb;
}

/*
 * Checks and copies one u2k descriptor into an skb. Returns NULL (and counts
 * the cause) for a bad one. The descriptor and the packet are in memory
 * user space may change at any time: each field is read once.
 */
static struct sk_buff *nuse_u2k_skb(struct nuse_dev *nd, struct nuse_file *nf,
				    const struct nuse_desc *ud)
{
	struct nuse_ctrl *c = nf->ctrl;
	struct sk_buff *skb;
	u32 off, len;
	u16 proto, start, offset, gso_size;
	u8 csum, first, gso_type;
	u32 max_len;

	off = READ_ONCE(ud->off);
	len = READ_ONCE(ud->len);
	proto = READ_ONCE(ud->proto);
	csum = READ_ONCE(ud->csum);
	start = READ_ONCE(ud->csum_start);
	offset = READ_ONCE(ud->csum_offset);
	gso_type = READ_ONCE(ud->gso_type);
	gso_size = READ_ONCE(ud->gso_size);

	/*
	 * GSO (with NUSE_F_TSO): a TCP super-segment with a partial
	 * checksum, cut into gso_size pieces on its way.
	 */
	if (READ_ONCE(ud->flags) || csum > NUSE_CSUM_PARTIAL ||
	    (gso_type && (!nf->tso || gso_type > NUSE_GSO_TCPV6 ||
			  csum != NUSE_CSUM_PARTIAL || !gso_size ||
			  gso_size > nd->dev->mtu)) ||
	    (!gso_type && gso_size)) {
		nuse_err(&c->err_bad_csum);
		return NULL;
	}
	max_len = gso_type ? min_t(u32, nf->slot_size, IP_MAX_MTU) :
			     nd->dev->mtu;
	if (len == 0 || len > max_len) {
		nuse_err(&c->err_bad_len);
		return NULL;
	}
	if (off > nf->u2k_area || len > nf->u2k_area - off) {
		nuse_err(&c->err_bad_off);
		return NULL;
	}

	skb = nuse_alloc_skb(nd, len);
	if (!skb) {
		nuse_err(&c->err_nomem);
		return NULL;
	}
	skb_put_data(skb, nf->u2k_buf + off, len);

	/* Decide the protocol from our copy, not from shared memory. */
	first = skb->data[0] >> 4;
	if (proto == 0)
		proto = first == 4 ? ETH_P_IP : first == 6 ? ETH_P_IPV6 : 0;
	if (!((proto == ETH_P_IP && first == 4) ||
	      (proto == ETH_P_IPV6 && first == 6))) {
		nuse_err(&c->err_bad_proto);
		goto bad;
	}
	skb->protocol = htons(proto);
	skb->dev = nd->dev;
	skb->pkt_type = PACKET_HOST;
	skb_reset_mac_header(skb);
	skb_reset_network_header(skb);

	if (gso_type) {
		struct virtio_net_hdr h = {
			.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM,
			.gso_type = gso_type == NUSE_GSO_TCPV4 ?
				    VIRTIO_NET_HDR_GSO_TCPV4 :
				    VIRTIO_NET_HDR_GSO_TCPV6,
			.gso_size = __cpu_to_virtio16(true, gso_size),
			.csum_start = __cpu_to_virtio16(true, start),
			.csum_offset = __cpu_to_virtio16(true, offset),
		};

		if ((gso_type == NUSE_GSO_TCPV4) != (proto == ETH_P_IP) ||
		    virtio_net_hdr_to_skb(skb, &h, true)) {
			nuse_err(&c->err_bad_csum);
			goto bad;
		}
		return skb;
	}

	switch (csum) {
	case NUSE_CSUM_UNNECESSARY:
		skb->ip_summed = CHECKSUM_UNNECESSARY;
		break;
	case NUSE_CSUM_PARTIAL:
		/* Checks start and offset against the packet. */
		if (!skb_partial_csum_set(skb, start, offset)) {
			nuse_err(&c->err_bad_csum);
			goto bad;
		}
		break;
	default:
		skb->ip_summed = CHECKSUM_NONE;
	}
	return skb;
bad:
	kfree_skb(skb);
	return NULL;
}

/*
 * GRO pays off for TCP streams; for anything else (and for what is a GSO
 * packet already) it is a lookup per packet for nothing.
 */
static bool nuse_want_gro(const struct sk_buff *skb)
{
	if (skb_is_gso(skb))
		return false;
	if (skb->protocol == htons(ETH_P_IP))
		return skb->len >= sizeof(struct iphdr) &&
		       ip_hdr(skb)->protocol == IPPROTO_TCP;
	return skb->len >= sizeof(struct ipv6hdr) &&
	       ipv6_hdr(skb)->nexthdr == IPPROTO_TCP;
}

/* u2k: packets from user space, received on the device. */
static int nuse_poll(struct napi_struct *napi, int budget)
{
	struct nuse_dev *nd = container_of(napi, struct nuse_dev, napi);
	u64 pkts = 0, bytes = 0, errs = 0;
	struct nuse_file *nf;
	struct nuse_ctrl *c;
	struct sk_buff *skb;
	u32 prod, cons;
	int done = 0;

	nf = rcu_dereference(nd->nf);
	if (!nf) {
		napi_complete(napi);
		return 0;
	}
	c = nf->ctrl;
	cons = nf->u2k_cons;
	prod = smp_load_acquire(&c->u2k.prod);
	if (prod - cons > nf->u2k_slots) {
		/* A producer index out of range: nothing pending is trusted. */
		nuse_err(&c->err_bad_index);
		errs++;
		cons = prod;
	}
	while (done < budget && cons != prod) {
		const struct nuse_desc *ud;

		ud = &nf->u2k_desc[cons & (nf->u2k_slots - 1)];
		cons++;
		done++;
		skb = nuse_u2k_skb(nd, nf, ud);
		if (!skb) {
			errs++;
			continue;
		}
		pkts++;
		bytes += skb->len;
		if (nuse_want_gro(skb))
			napi_gro_receive(napi, skb);
		else
			netif_receive_skb(skb);
	}
	nf->u2k_cons = cons;
	smp_store_release(&c->u2k.cons, cons);

	u64_stats_update_begin(&nd->rx.syncp);
	nd->rx.packets += pkts;
	nd->rx.bytes += bytes;
	nd->rx.errors += errs;
	u64_stats_update_end(&nd->rx.syncp);

	if (done < budget && napi_complete_done(napi, done)) {
		/*
		 * Ask for a kick, then look once more: user space publishes
		 * prod before it reads the flag, we set the flag before we
		 * read prod.
		 */
		WRITE_ONCE(c->u2k.flags, NUSE_RING_NEED_KICK);
		smp_mb();
		if (READ_ONCE(c->u2k.prod) != cons && napi_schedule_prep(napi)) {
			WRITE_ONCE(c->u2k.flags, 0);
			__napi_schedule(napi);
		}
	}
	return done;
}

static void nuse_kick(struct nuse_dev *nd, struct nuse_file *nf)
{
	WRITE_ONCE(nf->ctrl->u2k.flags, 0);
	local_bh_disable();
	napi_schedule(&nd->napi);
	local_bh_enable();
}

static int nuse_open(struct net_device *dev)
{
	struct nuse_dev *nd = netdev_priv(dev);

	napi_enable(&nd->napi);
	netif_start_queue(dev);
	/* Drain what was queued while the device was down. */
	local_bh_disable();
	napi_schedule(&nd->napi);
	local_bh_enable();
	return 0;
}

static int nuse_stop(struct net_device *dev)
{
	struct nuse_dev *nd = netdev_priv(dev);

	netif_stop_queue(dev);
	napi_disable(&nd->napi);
	if (nd->head_page) {
		put_page(nd->head_page);
		nd->head_page = NULL;
	}
	return 0;
}

static int nuse_change_mtu(struct net_device *dev, int mtu)
{
	struct nuse_dev *nd = netdev_priv(dev);
	struct nuse_file *nf = rtnl_dereference(nd->nf);

	if (nf && mtu > nf->slot_size)
		return -EINVAL;
	dev->mtu = mtu;
	return 0;
}

/* TSO only while a file that asked for it (and has room) is attached. */
static netdev_features_t nuse_fix_features(struct net_device *dev,
					   netdev_features_t features)
{
	struct nuse_dev *nd = netdev_priv(dev);
	struct nuse_file *nf = rtnl_dereference(nd->nf);

	if (!nf || !nf->tso)
		features &= ~(NETIF_F_TSO | NETIF_F_TSO6);
	return features;
}

static void nuse_get_stats64(struct net_device *dev,
			     struct rtnl_link_stats64 *s)
{
	struct nuse_dev *nd = netdev_priv(dev);
	unsigned int start;

	do {
		start = u64_stats_fetch_begin(&nd->rx.syncp);
		s->rx_packets = nd->rx.packets;
		s->rx_bytes = nd->rx.bytes;
		s->rx_errors = nd->rx.errors;
	} while (u64_stats_fetch_retry(&nd->rx.syncp, start));
	do {
		start = u64_stats_fetch_begin(&nd->tx.syncp);
		s->tx_packets = nd->tx.packets;
		s->tx_bytes = nd->tx.bytes;
		s->tx_dropped = nd->tx.dropped;
	} while (u64_stats_fetch_retry(&nd->tx.syncp, start));
}

static void nuse_detach(struct nuse_dev *nd, struct nuse_file *nf);

static int nuse_dev_init(struct net_device *dev)
{
	struct nuse_dev *nd = netdev_priv(dev);

	nd->dev = dev;
	u64_stats_init(&nd->rx.syncp);
	u64_stats_init(&nd->tx.syncp);
	netif_napi_add_weight(dev, &nd->napi, nuse_poll, NUSE_NAPI_WEIGHT);
	return 0;
}

static void nuse_dev_uninit(struct net_device *dev)
{
	struct nuse_dev *nd = netdev_priv(dev);
	struct nuse_file *nf = rtnl_dereference(nd->nf);

	/* The device is going away under an attached file. */
	if (nf)
		nuse_detach(nd, nf);
	netif_napi_del(&nd->napi);
}

static const struct net_device_ops nuse_netdev_ops = {
	.ndo_init		= nuse_dev_init,
	.ndo_uninit		= nuse_dev_uninit,
	.ndo_open		= nuse_open,
	.ndo_stop		= nuse_stop,
	.ndo_start_xmit		= nuse_xmit,
	.ndo_change_mtu		= nuse_change_mtu,
	.ndo_fix_features	= nuse_fix_features,
	.ndo_get_stats64	= nuse_get_stats64,
};

static void nuse_setup(struct net_device *dev)
{
	dev->netdev_ops = &nuse_netdev_ops;
	dev->rtnl_link_ops = &nuse_link_ops;
	dev->needs_free_netdev = true;
	dev->type = ARPHRD_NONE;
	dev->hard_header_len = 0;
	dev->addr_len = 0;
	dev->mtu = ETH_DATA_LEN;
	dev->min_mtu = IPV4_MIN_MTU;
	dev->max_mtu = NUSE_MAX_SLOT_SIZE;
	dev->tx_queue_len = 1000;
	dev->flags = IFF_POINTOPOINT | IFF_NOARP | IFF_MULTICAST;
	dev->priv_flags |= IFF_NO_QUEUE;
	dev->features = NETIF_F_SG | NETIF_F_HW_CSUM | NETIF_F_HIGHDMA |
			NETIF_F_FRAGLIST | NETIF_F_TSO | NETIF_F_TSO6;
	dev->hw_features = dev->features;
}

static int nuse_validate(struct nlattr *tb[], struct nlattr *data[],
			 struct netlink_ext_ack *extack)
{
	if (tb[IFLA_ADDRESS]) {
		NL_SET_ERR_MSG(extack, "nuse devices have no link address");
		return -EINVAL;
	}
	return 0;
}

static int nuse_newlink(struct net *net, struct net_device *dev,
			struct nlattr *tb[], struct nlattr *data[],
			struct netlink_ext_ack *extack)
{
	struct nuse_dev *nd = netdev_priv(dev);

	/* Made with "ip link add": stays until "ip link del". */
	nd->persist = true;
	netif_carrier_off(dev);
	return register_netdevice(dev);
}

static struct rtnl_link_ops nuse_link_ops __read_mostly = {
	.kind		= "nuse",
	.priv_size	= sizeof(struct nuse_dev),
	.setup		= nuse_setup,
	.validate	= nuse_validate,
	.newlink	= nuse_newlink,
};

/* Under RTNL. */
static void nuse_attach(struct nuse_dev *nd, struct nuse_file *nf)
{
	nf->u2k_cons = 0;
	nf->k2u_prod = 0;
	rcu_assign_pointer(nf->nd, nd);
	rcu_assign_pointer(nd->nf, nf);
	if (nf->tso)
		netif_set_tso_max_size(nd->dev, nf->slot_size);
	netdev_update_features(nd->dev);
	netif_carrier_on(nd->dev);
}

/* Under RTNL; the caller waits for a grace period before freeing nf. */
static void nuse_detach(struct nuse_dev *nd, struct nuse_file *nf)
{
	netif_carrier_off(nd->dev);
	RCU_INIT_POINTER(nd->nf, NULL);
	RCU_INIT_POINTER(nf->nd, NULL);
	if (nd->dev->reg_state == NETREG_REGISTERED)
		netdev_update_features(nd->dev);
	wake_up_interruptible_poll(&nf->wq, EPOLLERR | EPOLLHUP);
}

static int nuse_alloc_rings(struct nuse_file *nf, struct nuse_setup *s)
{
	size_t desc_bytes, off;

	if (!is_power_of_2(s->k2u_slots) || !is_power_of_2(s->u2k_slots) ||
	    s->k2u_slots < NUSE_MIN_SLOTS || s->k2u_slots > NUSE_MAX_SLOTS ||
	    s->u2k_slots < NUSE_MIN_SLOTS || s->u2k_slots > NUSE_MAX_SLOTS ||
	    s->slot_size < NUSE_MIN_SLOT_SIZE ||
	    s->slot_size > NUSE_MAX_SLOT_SIZE)
		return -EINVAL;
	s->slot_size = ALIGN(s->slot_size, 64);

	off = PAGE_SIZE;
	s->k2u_desc_off = off;
	desc_bytes = PAGE_ALIGN((size_t)s->k2u_slots * sizeof(struct nuse_desc));
	off += desc_bytes;
	s->u2k_desc_off = off;
	desc_bytes = PAGE_ALIGN((size_t)s->u2k_slots * sizeof(struct nuse_desc));
	off += desc_bytes;
	s->k2u_buf_off = off;
	off += PAGE_ALIGN((size_t)s->k2u_slots * s->slot_size);
	s->u2k_buf_off = off;
	off += PAGE_ALIGN((size_t)s->u2k_slots * s->slot_size);
	if (off > NUSE_MAX_MMAP)
		return -E2BIG;
	s->mmap_size = off;
	s->desc_size = sizeof(struct nuse_desc);

	nf->mem = vmalloc_user(off);
	if (!nf->mem)
		return -ENOMEM;
	nf->mem_size = off;
	nf->ctrl = nf->mem;
	nf->k2u_desc = nf->mem + s->k2u_desc_off;
	nf->u2k_desc = nf->mem + s->u2k_desc_off;
	nf->k2u_buf = nf->mem + s->k2u_buf_off;
	nf->u2k_buf = nf->mem + s->u2k_buf_off;
	nf->k2u_slots = s->k2u_slots;
	nf->u2k_slots = s->u2k_slots;
	nf->slot_size = s->slot_size;
	nf->tso = s->flags & NUSE_F_TSO;
	nf->u2k_area = (size_t)s->u2k_slots * s->slot_size;
	nf->ctrl->version = NUSE_UAPI_VERSION;
	nf->ctrl->u2k.flags = NUSE_RING_NEED_KICK;
	return 0;
}

static int nuse_create(struct nuse_file *nf, struct nuse_setup __user *arg)
{
	struct net *net = current->nsproxy->net_ns;
	struct net_device *dev = NULL;
	struct nuse_setup s;
	struct nuse_dev *nd;
	bool created = false;
	int err, i;

	if (!ns_capable(net->user_ns, CAP_NET_ADMIN))
		return -EPERM;
	if (copy_from_user(&s, arg, sizeof(s)))
		return -EFAULT;
	if (s.version != NUSE_UAPI_VERSION)
		return -EPROTO;
	if (s.flags & ~(NUSE_F_PERSIST | NUSE_F_TSO))
		return -EINVAL;
	for (i = 0; i < ARRAY_SIZE(s.reserved); i++)
		if (s.reserved[i])
			return -EINVAL;
	s.name[NUSE_IFNAMSIZ - 1] = '\0';
	if (!s.name[0])
		strscpy(s.name, "nuse%d", sizeof(s.name));
	if (!s.mtu)
		s.mtu = ETH_DATA_LEN;
	if (s.mtu < IPV4_MIN_MTU || s.mtu > NUSE_MAX_SLOT_SIZE)
		return -EINVAL;
	if (!s.k2u_slots)
		s.k2u_slots = NUSE_DEFAULT_SLOTS;
	if (!s.u2k_slots)
		s.u2k_slots = NUSE_DEFAULT_SLOTS;

	mutex_lock(&nf->lock);
	if (nf->mem) {
		err = -EBUSY;
		goto out_unlock;
	}

	rtnl_lock();
	if (!strchr(s.name, '%'))
		dev = __dev_get_by_name(net, s.name);
	if (dev) {
		err = -EEXIST;
		if (dev->rtnl_link_ops != &nuse_link_ops)
			goto out_rtnl;
		nd = netdev_priv(dev);
		err = -EBUSY;
		if (rtnl_dereference(nd->nf))
			goto out_rtnl;
		s.mtu = dev->mtu;
	} else {
		err = -ENOMEM;
		dev = alloc_netdev(sizeof(struct nuse_dev), s.name,
				   NET_NAME_UNKNOWN, nuse_setup);
		if (!dev)
			goto out_rtnl;
		dev_net_set(dev, net);
		dev->mtu = s.mtu;
		nd = netdev_priv(dev);
		nd->persist = s.flags & NUSE_F_PERSIST;
		created = true;
	}
	if (!s.slot_size)
		s.slot_size = max_t(u32, NUSE_MIN_SLOT_SIZE,
				    roundup_pow_of_two(s.mtu));
	err = -EINVAL;
	if (s.slot_size < s.mtu)
		goto out_free;
	err = nuse_alloc_rings(nf, &s);
	if (err)
		goto out_free;
	if (created) {
		netif_carrier_off(dev);
		err = register_netdevice(dev);
		if (err) {
			/* register_netdevice() did not free it. */
			goto out_free;
		}
	} else if (s.flags & NUSE_F_PERSIST) {
		nd->persist = true;
	}
	nuse_attach(nd, nf);
	strscpy(s.name, dev->name, sizeof(s.name));
	s.ifindex = dev->ifindex;
	rtnl_unlock();
	mutex_unlock(&nf->lock);

	if (copy_to_user(arg, &s, sizeof(s)))
		return -EFAULT;
	return 0;

out_free:
	if (nf->mem) {
		vfree(nf->mem);
		nf->mem = NULL;
	}
	if (created)
		free_netdev(dev);
out_rtnl:
	rtnl_unlock();
out_unlock:
	mutex_unlock(&nf->lock);
	return err;
}

static int nuse_fop_open(struct inode *inode, struct file *file)
{
	struct nuse_file *nf;

	nf = kzalloc(sizeof(*nf), GFP_KERNEL);
	if (!nf)
		return -ENOMEM;
	init_waitqueue_head(&nf->wq);
	mutex_init(&nf->lock);
	file->private_data = nf;
	return nonseekable_open(inode, file);
}

static int nuse_fop_release(struct inode *inode, struct file *file)
{
	struct nuse_file *nf = file->private_data;
	struct nuse_dev *nd;

	rtnl_lock();
	nd = rtnl_dereference(nf->nd);
	if (nd) {
		nuse_detach(nd, nf);
		if (!nd->persist)
			unregister_netdevice(nd->dev);
	}
	rtnl_unlock();
	/* No data path can see the rings after this. */
	synchronize_net();
	vfree(nf->mem);
	kfree(nf);
	return 0;
}

static long nuse_fop_ioctl(struct file *file, unsigned int cmd,
			   unsigned long arg)
{
	struct nuse_file *nf = file->private_data;
	struct nuse_dev *nd;
	int val;

	switch (cmd) {
	case NUSE_IOC_CREATE:
		return nuse_create(nf, (struct nuse_setup __user *)arg);
	case NUSE_IOC_KICK:
		rcu_read_lock();
		nd = rcu_dereference(nf->nd);
		if (nd)
			nuse_kick(nd, nf);
		rcu_read_unlock();
		return nd ? 0 : -ENXIO;
	case NUSE_IOC_SET_PERSIST:
		if (get_user(val, (int __user *)arg))
			return -EFAULT;
		rtnl_lock();
		nd = rtnl_dereference(nf->nd);
		if (nd)
			nd->persist = !!val;
		rtnl_unlock();
		return nd ? 0 : -ENXIO;
	}
	return -ENOTTY;
}

/* A write of any length is a kick. */
static ssize_t nuse_fop_write(struct file *file, const char __user *buf,
			      size_t count, loff_t *ppos)
{
	struct nuse_file *nf = file->private_data;
	struct nuse_dev *nd;

	rcu_read_lock();
	nd = rcu_dereference(nf->nd);
	if (nd)
		nuse_kick(nd, nf);
	rcu_read_unlock();
	return nd ? count : -ENXIO;
}

static __poll_t nuse_fop_poll(struct file *file, poll_table *wait)
{
	struct nuse_file *nf = file->private_data;
	__poll_t mask = 0;

	poll_wait(file, &nf->wq, wait);
	/* Pairs with wq_has_sleeper() in nuse_xmit(). */
	smp_mb();
	rcu_read_lock();
	if (!rcu_dereference(nf->nd)) {
		mask = EPOLLERR | EPOLLHUP;
	} else {
		mask = EPOLLOUT | EPOLLWRNORM;
		if (READ_ONCE(nf->ctrl->k2u.prod) !=
		    READ_ONCE(nf->ctrl->k2u.cons))
			mask |= EPOLLIN | EPOLLRDNORM;
	}
	rcu_read_unlock();
	return mask;
}

static int nuse_fop_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct nuse_file *nf = file->private_data;
	unsigned long size = vma->vm_end - vma->vm_start;
	int err;

	mutex_lock(&nf->lock);
	err = -ENXIO;
	if (!nf->mem)
		goto out;
	err = -EINVAL;
	if (vma->vm_pgoff || size > nf->mem_size || !(vma->vm_flags & VM_SHARED))
		goto out;
	err = remap_vmalloc_range(vma, nf->mem, 0);
out:
	mutex_unlock(&nf->lock);
	return err;
}

static const struct file_operations nuse_fops = {
	.owner		= THIS_MODULE,
	.open		= nuse_fop_open,
	.release	= nuse_fop_release,
	.unlocked_ioctl	= nuse_fop_ioctl,
	.compat_ioctl	= compat_ptr_ioctl,
	.write		= nuse_fop_write,
	.poll		= nuse_fop_poll,
	.mmap		= nuse_fop_mmap,
	.llseek		= no_llseek,
};

static struct miscdevice nuse_misc = {
	.minor	= MISC_DYNAMIC_MINOR,
	.name	= "nuse",
	.nodename = "nuse",
	.fops	= &nuse_fops,
	.mode	= 0600,
};

static int __init nuse_init(void)
{
	int err;

	err = rtnl_link_register(&nuse_link_ops);
	if (err)
		return err;
	err = misc_register(&nuse_misc);
	if (err) {
		rtnl_link_unregister(&nuse_link_ops);
		return err;
	}
	pr_info("NUSE virtual network device, uapi %d\n", NUSE_UAPI_VERSION);
	return 0;
}

static void __exit nuse_exit(void)
{
	misc_deregister(&nuse_misc);
	/* Deletes the devices left (persistent ones; no file is open). */
	rtnl_link_unregister(&nuse_link_ops);
}

module_init(nuse_init);
module_exit(nuse_exit);

MODULE_DESCRIPTION("NUSE: virtual network device with shared-memory packet rings");
MODULE_AUTHOR("The NUSE project");
MODULE_LICENSE("GPL");
MODULE_ALIAS_RTNL_LINK("nuse");
