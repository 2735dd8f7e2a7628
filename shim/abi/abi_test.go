package abi

import (
	"testing"
	"unsafe"

	"github.com/nuse-project/nuse/shim/abi/cdefs"
)

func TestLayoutMatchesHeader(t *testing.T) {
	var (
		hdr   CtlHdr
		hello CtlHello
		ok    CtlHelloOK
		req   CtlReq
		rep   CtlReply
		ah    ArenaHdr
		cmd   Cmd
		ring  Ring
		osr   OpSocketReq
		born  OpBorn
		sock  Sock
		dir   Direct
	)
	goLayout := map[string]uintptr{
		"nuse_ctl_hdr": unsafe.Sizeof(hdr), "nuse_ctl_hdr.version": unsafe.Offsetof(hdr.Version),
		"nuse_ctl_hdr.type": unsafe.Offsetof(hdr.Type), "nuse_ctl_hdr.len": unsafe.Offsetof(hdr.Len),
		"nuse_ctl_hdr.seq": unsafe.Offsetof(hdr.Seq),
		"nuse_ctl_hello":   unsafe.Sizeof(hello), "nuse_ctl_hello.pid": unsafe.Offsetof(hello.Pid),
		"nuse_ctl_hello.flags": unsafe.Offsetof(hello.Flags), "nuse_ctl_hello.comm": unsafe.Offsetof(hello.Comm),
		"nuse_ctl_hello_ok": unsafe.Sizeof(ok), "nuse_ctl_hello_ok.arena_size": unsafe.Offsetof(ok.ArenaSize),
		"nuse_ctl_hello_ok.session_id": unsafe.Offsetof(ok.SessionID),
		"nuse_ctl_req":                 unsafe.Sizeof(req), "nuse_ctl_req.family": unsafe.Offsetof(req.Family),
		"nuse_ctl_req.type": unsafe.Offsetof(req.Type), "nuse_ctl_req.protocol": unsafe.Offsetof(req.Protocol),
		"nuse_ctl_req.sock": unsafe.Offsetof(req.Sock), "nuse_ctl_req.gen": unsafe.Offsetof(req.Gen),
		"nuse_ctl_req.engine": unsafe.Offsetof(req.Engine),
		"nuse_ctl_reply":      unsafe.Sizeof(rep), "nuse_ctl_reply.result": unsafe.Offsetof(rep.Result),
		"nuse_ctl_reply.sock": unsafe.Offsetof(rep.Sock), "nuse_ctl_reply.gen": unsafe.Offsetof(rep.Gen),
		"nuse_ctl_reply.addrlen": unsafe.Offsetof(rep.AddrLen), "nuse_ctl_reply.addr": unsafe.Offsetof(rep.Addr),
		"nuse_ctl_reply.msg": unsafe.Offsetof(rep.Msg),
		"nuse_arena_hdr":     unsafe.Sizeof(ah), "nuse_arena_hdr.arena_size": unsafe.Offsetof(ah.ArenaSize),
		"nuse_arena_hdr.max_socks": unsafe.Offsetof(ah.MaxSocks), "nuse_arena_hdr.ring_size": unsafe.Offsetof(ah.RingSize),
		"nuse_arena_hdr.cmd_off": unsafe.Offsetof(ah.CmdOff), "nuse_arena_hdr.socks_off": unsafe.Offsetof(ah.SocksOff),
		"nuse_arena_hdr.sock_stride": unsafe.Offsetof(ah.SockStride), "nuse_arena_hdr.spin_ns": unsafe.Offsetof(ah.SpinNs),
		"nuse_arena_hdr.d_seq": unsafe.Offsetof(ah.DSeq), "nuse_arena_hdr.d_sleeping": unsafe.Offsetof(ah.DSleeping),
		"nuse_arena_hdr.cmd_pending": unsafe.Offsetof(ah.CmdPending), "nuse_arena_hdr.attention": unsafe.Offsetof(ah.Attention),
		"nuse_cmd": unsafe.Sizeof(cmd), "nuse_cmd.state": unsafe.Offsetof(cmd.State), "nuse_cmd.waiting": unsafe.Offsetof(cmd.Waiting),
		"nuse_cmd.op": unsafe.Offsetof(cmd.Op), "nuse_cmd.flags": unsafe.Offsetof(cmd.Flags), "nuse_cmd.sock": unsafe.Offsetof(cmd.Sock),
		"nuse_cmd.gen": unsafe.Offsetof(cmd.Gen), "nuse_cmd.result": unsafe.Offsetof(cmd.Result), "nuse_cmd.arg0": unsafe.Offsetof(cmd.Arg0),
		"nuse_cmd.arg1": unsafe.Offsetof(cmd.Arg1), "nuse_cmd.addrlen": unsafe.Offsetof(cmd.AddrLen), "nuse_cmd.optlen": unsafe.Offsetof(cmd.OptLen),
		"nuse_cmd.addr": unsafe.Offsetof(cmd.Addr), "nuse_cmd.opt": unsafe.Offsetof(cmd.Opt),
		"nuse_ring": unsafe.Sizeof(ring), "nuse_ring.head": unsafe.Offsetof(ring.Head), "nuse_ring.skip": unsafe.Offsetof(ring.Skip), "nuse_ring.tail": unsafe.Offsetof(ring.Tail),
		"nuse_sock": unsafe.Sizeof(sock), "nuse_sock.gen": unsafe.Offsetof(sock.Gen), "nuse_sock.state": unsafe.Offsetof(sock.State),
		"nuse_sock.so_error": unsafe.Offsetof(sock.SoError), "nuse_sock.sig": unsafe.Offsetof(sock.Sig), "nuse_sock.fill": unsafe.Offsetof(sock.Fill),
		"nuse_sock.daemon_wait": unsafe.Offsetof(sock.DaemonWait), "nuse_sock.fill_bytes": unsafe.Offsetof(sock.FillBytes), "nuse_sock.tx_bytes": unsafe.Offsetof(sock.TxBytes),
		"nuse_sock.rx_bytes": unsafe.Offsetof(sock.RxBytes), "nuse_sock.rx": unsafe.Offsetof(sock.Rx), "nuse_sock.tx": unsafe.Offsetof(sock.Tx),
		"nuse_sock.info": unsafe.Offsetof(sock.Info),
		"nuse_direct":    unsafe.Sizeof(dir), "nuse_direct.ring_size": unsafe.Offsetof(dir.RingSize),
		"nuse_direct.data_off": unsafe.Offsetof(dir.DataOff), "nuse_direct.ring": unsafe.Offsetof(dir.Ring),
		"nuse_direct.wwait": unsafe.Offsetof(dir.WWait), "nuse_direct.rspin": unsafe.Offsetof(dir.RSpin),
		"nuse_direct.psig": unsafe.Offsetof(dir.PSig), "nuse_direct.wake_ok": unsafe.Offsetof(dir.WakeOK),
		"nuse_direct.et": unsafe.Offsetof(dir.ET),
		"nuse_op_socket": unsafe.Sizeof(osr), "nuse_op_socket.family": unsafe.Offsetof(osr.Family),
		"nuse_op_socket.type": unsafe.Offsetof(osr.Type), "nuse_op_socket.protocol": unsafe.Offsetof(osr.Protocol),
		"nuse_op_socket.engine": unsafe.Offsetof(osr.Engine),
		"nuse_op_born":          unsafe.Sizeof(born), "nuse_op_born.sock": unsafe.Offsetof(born.Sock), "nuse_op_born.gen": unsafe.Offsetof(born.Gen),
	}
	cLayout := cdefs.Layout()
	if len(cLayout) != len(goLayout) {
		t.Errorf("C lists %d layout entries, Go %d", len(cLayout), len(goLayout))
	}
	for name, cv := range cLayout {
		gv, ok := goLayout[name]
		if !ok {
			t.Errorf("%s: in the C header, missing from the Go check", name)
			continue
		}
		if gv != cv {
			t.Errorf("%s: C says %d, Go says %d", name, cv, gv)
		}
	}
	if unsafe.Sizeof(sock) > SockHdrSize {
		t.Errorf("nuse_sock (%d bytes) does not fit its %d-byte page", unsafe.Sizeof(sock), SockHdrSize)
	}
}

func TestConstantsMatchHeader(t *testing.T) {
	goConsts := map[string]uint64{
		"MAGIC": Magic, "VERSION": Version, "CMD_SLOTS": CmdSlots, "MAX_SOCKS_LIMIT": MaxSocksLimit,
		"SOCK_HDR_SIZE": SockHdrSize, "ADDR_LEN": AddrLen, "MSG_LEN": MsgLen, "OPT_LEN": OptLen, "INFO_LEN": InfoLen, "COMM_LEN": CommLen, "ENGINE_LEN": EngineLen,
		"CTL_HELLO": MsgHello, "CTL_HELLO_OK": MsgHelloOK, "CTL_SOCKET": MsgSocket, "CTL_ACCEPT": MsgAccept,
		"CTL_REPLY": MsgReply, "CTL_ERROR": MsgError, "CTL_STATS": MsgStats, "CTL_UC": MsgUC, "CTL_RELAY": MsgRelay, "CTL_IDENT": MsgIdent, "CTL_KEEP": MsgKeep, "CTL_ADOPT": MsgAdopt, "CTL_REPAIR": MsgRepair, "CTL_PORTFREE": MsgPortFree, "CTL_DIRECT": MsgDirect, "CTL_WAKE": MsgWake,
		"OP_BIND": OpBind, "OP_LISTEN": OpListen, "OP_CONNECT": OpConnect, "OP_SHUTDOWN": OpShutdown, "OP_CLOSE": OpClose,
		"OP_GETSOCKNAME": OpGetsockname, "OP_GETPEERNAME": OpGetpeername, "OP_SETSOCKOPT": OpSetsockopt, "OP_GETSOCKOPT": OpGetsockopt,
		"SS_OPEN": SSOpen, "SS_CONNECTING": SSConnecting, "SS_CONNECTED": SSConnected, "SS_LISTENING": SSListening,
		"SS_ACCEPTQ": SSAcceptQ, "SS_RD_EOF": SSRdEOF, "SS_WR_DEAD": SSWrDead, "SS_ERROR": SSError, "SS_RESET": SSReset,
		"SS_TX_STALL": SSTxStall, "SS_RAW": SSRaw, "SS_SHARED": SSShared, "SS_DIRECT": SSDirect, "SIG_NONE": SigNone, "SIG_SET": SigSet, "FILL_NONE": FillNone, "FILL_DONE": FillDone, "FILL_BUSY": FillBusy, "DWAIT_RX_SPACE": DWaitRxSpace, "DWAIT_TRIM_TX": DWaitTrimTx,
		"CMD_FREE": CmdFree, "CMD_CLAIMED": CmdClaimed, "CMD_SUBMITTED": CmdSubmitted, "CMD_DONE": CmdDone, "CMD_F_ASYNC": CmdAsync, "OP_SOCKET": OpSocket, "OP_ACCEPT": OpAccept, "CTL_SPARES": MsgSpares, "SPARES_MAX": SparesMax, "SPARES_HELD": SparesHeld,
		"DEFAULT_RING_SIZE": DefaultRing, "DEFAULT_MAX_SOCKS": DefaultSocks,
	}
	cConsts := cdefs.Consts()
	if len(cConsts) != len(goConsts) {
		t.Errorf("C lists %d constants, Go %d", len(cConsts), len(goConsts))
	}
	for name, cv := range cConsts {
		if gv, ok := goConsts[name]; !ok || gv != cv {
			t.Errorf("%s: C says %d, Go says %d (present %v)", name, cv, gv, ok)
		}
	}
	if cdefs.SockPath() != DefaultSockPath {
		t.Errorf("default socket path: C %q, Go %q", cdefs.SockPath(), DefaultSockPath)
	}
}
