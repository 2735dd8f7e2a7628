package gvisor

import (
	"fmt"
	"sort"

	"github.com/nuse-project/nuse/stack"
)

// The gVisor engine's settings: its TCP knobs (TCPConfig.Set's keys).
var settings = []stack.Setting{
	{Key: "sack", Default: "on", Help: "selective acknowledgements"},
	{Key: "rack", Default: "on", Help: "RACK loss detection"},
	{Key: "cc", Default: "cubic", Help: "congestion control: reno or cubic"},
	{Key: "moderate-rcvbuf", Default: "on", Help: "receive-buffer auto-tuning"},
	{Key: "sndbuf", Default: "1m", Help: "default send buffer (bytes, k/m suffixes)"},
	{Key: "sndbuf-max", Default: "4m", Help: "largest send buffer"},
	{Key: "rcvbuf", Default: "1m", Help: "default receive buffer"},
	{Key: "rcvbuf-max", Default: "4m", Help: "largest receive buffer"},
	{Key: "nodelay", Default: "off", Help: "TCP_NODELAY on every new socket"},
	{Key: "delayed-ack", Default: "on", Help: "hold a pure ACK for ack-delay so that an answer can carry it (netstack itself ACKs at once)"},
	{Key: "ack-delay", Default: "1ms", Help: "how long a delayed ACK may wait (at most 200ms)"},
	{Key: "ack-delay-max", Default: "100ms", Help: "how long a delayed ACK may wait on a flow whose answers came after their ACK had gone (the flow waits twice the answer's time; at most 200ms; ack-delay or less: a fixed delay)"},
	{Key: "mtu", Default: "65536", Help: "MTU of the loopback NIC"},
}

func init() {
	stack.Register(stack.Registration{
		Name:     "gvisor",
		Summary:  "gVisor's netstack in the daemon: a full user-space TCP/IP stack on the daemon's netdev (TAP, kmod, uc) and its own loopback; the default",
		Settings: settings,
		New:      newFromEnv,
	})
}

// newFromEnv starts a gVisor engine as the daemon asks: its settings are
// TCPConfig keys; it takes the daemon's netdev.
func newFromEnv(env stack.Env) (stack.Engine, error) {
	cfg := Config{StackAddrs: env.StackAddrs, Gateways: env.Gateways, Loopback: env.Loopback}
	keys := make([]string, 0, len(env.Settings))
	for k := range env.Settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := cfg.TCP.Set(k, env.Settings[k]); err != nil {
			return nil, err
		}
	}
	if env.Netdev != nil {
		dev, err := env.Netdev()
		if err != nil {
			return nil, fmt.Errorf("netdev: %w", err)
		}
		cfg.Netdev = dev
	}
	e, err := New(cfg)
	if err != nil {
		if cfg.Netdev != nil && cfg.Netdev.Close != nil {
			_ = cfg.Netdev.Close()
		}
		return nil, err
	}
	return e, nil
}
