package daemon

// The netdev kinds the daemon can open (--netdev). Each package registers
// itself with stack/netdev in its init.
import (
	_ "github.com/nuse-project/nuse/stack/link/kmod" // kmod: the nuse.ko device
	_ "github.com/nuse-project/nuse/stack/link/tap"  // tap, none
	_ "github.com/nuse-project/nuse/uc/link"         // uc: RDMA UC channel to a peer daemon
)
