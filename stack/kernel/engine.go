// Package kernel is the `kernel` transport engine: each NUSE socket is a
// real kernel TCP socket held by the daemon, in the daemon's network
// namespace. The program's bytes still travel the shim's rings and the
// daemon, so "NUSE + kernel engine" against "kernel, no NUSE" measures
// NUSE's own cost apart from any protocol stack. It is also where
// connections made outside NUSE land (Adopt wraps an already-connected
// kernel socket, e.g. one redirected by eBPF).
//
// Every kernel socket is non-blocking and registered, edge-triggered, with
// one epoll instance that a goroutine waits on: a readiness change of any
// socket calls that socket's Notify callback. An idle engine sleeps in
// epoll_wait. Errors are the kernel's own errno values, unchanged.
package kernel

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/nuse-project/nuse/stack"
)

// Config is the engine's configuration; the zero value is the kernel's
// defaults for every socket.
type Config struct {
	// NoDelay sets TCP_NODELAY on every new socket.
	NoDelay bool
	// Congestion sets TCP_CONGESTION on every new socket ("" = the
	// kernel's default, net.ipv4.tcp_congestion_control).
	Congestion string
	// SndBuf, RcvBuf set SO_SNDBUF/SO_RCVBUF on every new socket (0 = the
	// kernel's auto-tuned defaults).
	SndBuf, RcvBuf int
}

var settings = []stack.Setting{
	{Key: "nodelay", Default: "off", Help: "TCP_NODELAY on every new socket"},
	{Key: "cc", Default: "the kernel's", Help: "TCP_CONGESTION of every new socket (see net.ipv4.tcp_available_congestion_control)"},
	{Key: "sndbuf", Default: "0 (auto)", Help: "SO_SNDBUF of every new socket, bytes"},
	{Key: "rcvbuf", Default: "0 (auto)", Help: "SO_RCVBUF of every new socket, bytes"},
}

func init() {
	stack.Register(stack.Registration{
		Name:     "kernel",
		Summary:  "real kernel TCP sockets held by the daemon, in its network namespace: NUSE's own cost without a user-space stack; where eBPF-redirected connections land",
		Settings: settings,
		New: func(env stack.Env) (stack.Engine, error) {
			var cfg Config
			for k, v := range env.Settings {
				if err := cfg.Set(k, v); err != nil {
					return nil, err
				}
			}
			return New(cfg)
		},
	})
}

// Set applies one key=value setting (see settings).
func (c *Config) Set(key, value string) error {
	switch key {
	case "nodelay":
		switch strings.ToLower(value) {
		case "1", "on", "true", "yes":
			c.NoDelay = true
		case "0", "off", "false", "no":
			c.NoDelay = false
		default:
			return fmt.Errorf("kernel engine: nodelay: want on or off, got %q", value)
		}
	case "cc":
		c.Congestion = value
	case "sndbuf", "rcvbuf":
		n, err := strconv.Atoi(value)
		if err != nil || n < 0 {
			return fmt.Errorf("kernel engine: %s: want a size in bytes, got %q", key, value)
		}
		if key == "sndbuf" {
			c.SndBuf = n
		} else {
			c.RcvBuf = n
		}
	default:
		return fmt.Errorf("kernel engine: unknown setting %q", key)
	}
	return nil
}

// Engine is the kernel engine.
type Engine struct {
	cfg  Config
	epfd int
	wake int // eventfd that tells the poller to stop

	mu     sync.Mutex
	socks  map[uint64]*socket // by id, which is the epoll data
	nextID uint64
	closed bool

	done chan struct{} // closed when the poller has returned

	// polled: a worker is awake and polls the epoll set every pass
	// (Polled), so the poller parks; watch gets a token when that ends,
	// stop is closed by Close.
	polled atomic.Bool
	watch  chan struct{}
	stop   chan struct{}
}

var (
	_ stack.Engine      = (*Engine)(nil)
	_ stack.EagerPoller = (*Engine)(nil)
)

// New starts an engine: an epoll instance and the goroutine that waits on
// it.
func New(cfg Config) (*Engine, error) {
	// Try the per-socket settings on a probe, so that a bad one (an
	// unknown congestion control) fails here, not on every socket.
	probe, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("kernel engine: socket: %w", err)
	}
	err = (&Engine{cfg: cfg}).configure(probe)
	unix.Close(probe)
	if err != nil {
		return nil, fmt.Errorf("kernel engine: applying the settings: %w", err)
	}
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("kernel engine: epoll_create1: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("kernel engine: eventfd: %w", err)
	}
	// id 0 is the eventfd.
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &unix.EpollEvent{Events: unix.EPOLLIN}); err != nil {
		unix.Close(wake)
		unix.Close(epfd)
		return nil, fmt.Errorf("kernel engine: epoll_ctl: %w", err)
	}
	e := &Engine{cfg: cfg, epfd: epfd, wake: wake, socks: map[uint64]*socket{}, nextID: 1, done: make(chan struct{}),
		watch: make(chan struct{}, 1), stop: make(chan struct{})}
	go e.poll()
	return e, nil
}

// Name implements stack.Engine.
func (e *Engine) Name() string { return "kernel" }

// FDsPerSocket implements stack.FDCost: each socket is a kernel socket,
// one descriptor of the daemon's (an accepted one too; a listener's queue
// of connections not yet accepted costs none).
func (e *Engine) FDsPerSocket() int { return 1 }

// Socket implements stack.Engine: a non-blocking kernel TCP socket with the
// engine's per-socket settings applied.
func (e *Engine) Socket(family int) (stack.Socket, error) {
	if family != unix.AF_INET && family != unix.AF_INET6 {
		return nil, syscall.EAFNOSUPPORT
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		return nil, errnoOf(err)
	}
	if err := e.configure(fd); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return e.add(fd, family, false)
}

// configure applies the engine's settings to a new socket.
func (e *Engine) configure(fd int) error {
	c := e.cfg
	if c.NoDelay {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
			return errnoOf(err)
		}
	}
	if c.Congestion != "" {
		if err := unix.SetsockoptString(fd, unix.IPPROTO_TCP, unix.TCP_CONGESTION, c.Congestion); err != nil {
			return errnoOf(err)
		}
	}
	if c.SndBuf > 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, c.SndBuf); err != nil {
			return errnoOf(err)
		}
	}
	if c.RcvBuf > 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, c.RcvBuf); err != nil {
			return errnoOf(err)
		}
	}
	return nil
}

// Adopt makes an existing kernel TCP socket an engine socket: one accepted
// or connected outside NUSE (e.g. a connection an eBPF hook redirected to
// the daemon), or a listener. The engine owns fd from then on (Close closes
// it), also when Adopt fails. fd is made non-blocking and close-on-exec.
func (e *Engine) Adopt(fd int) (stack.Socket, error) {
	fail := func(err error) (stack.Socket, error) { unix.Close(fd); return nil, err }
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return fail(errnoOf(err))
	}
	proto, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL)
	if err != nil {
		return fail(errnoOf(err))
	}
	family, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return fail(errnoOf(err))
	}
	if typ != unix.SOCK_STREAM || proto != unix.IPPROTO_TCP || (family != unix.AF_INET && family != unix.AF_INET6) {
		return fail(syscall.EPROTONOSUPPORT)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		return fail(errnoOf(err))
	}
	unix.CloseOnExec(fd)
	// An adopted socket that is connected (or connecting) counts as one
	// whose connect was started, for ConnectResult.
	_, perr := unix.Getpeername(fd)
	return e.add(fd, family, perr == nil)
}

// add registers fd with epoll and wraps it.
func (e *Engine) add(fd, family int, connected bool) (*socket, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		unix.Close(fd)
		return nil, syscall.ESHUTDOWN
	}
	id := e.nextID
	e.nextID++
	so := &socket{e: e, id: id, fd: fd, family: family, connStarted: connected}
	so.rx.Store(rxMaybe) // what came before it was in the set: its first Read looks
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLPRI | unix.EPOLLET}
	ev.Fd, ev.Pad = int32(uint32(id)), int32(uint32(id>>32))
	if err := unix.EpollCtl(e.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		unix.Close(fd)
		return nil, errnoOf(err)
	}
	e.socks[id] = so
	return so, nil
}

// remove takes a socket out of the engine; the caller closes its fd.
func (e *Engine) remove(so *socket) {
	e.mu.Lock()
	delete(e.socks, so.id)
	e.mu.Unlock()
	// Closing the fd would drop it from the epoll set too, but not while
	// another descriptor (a dup) keeps the file open.
	_ = unix.EpollCtl(e.epfd, unix.EPOLL_CTL_DEL, so.fd, nil)
}

// poll waits for readiness changes and reports them to the sockets'
// callbacks, until Close. While a worker is awake it does not watch: the
// worker polls the set every pass (Poll), and a waiter in epoll_wait
// would be woken by every segment that a write over loopback delivers,
// a thread wake-up each, for events the worker takes anyway.
func (e *Engine) poll() {
	defer close(e.done)
	events := make([]unix.EpollEvent, 128)
	for {
		if e.polled.Load() {
			// Polled(false) leaves a token when the workers sleep, so a
			// change after our load is not lost.
			select {
			case <-e.watch:
			case <-e.stop:
				return
			}
			continue
		}
		n, err := unix.EpollWait(e.epfd, events, -1)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			return // the epoll fd is broken: nothing more can be reported
		}
		if e.dispatch(events[:n]) {
			return
		}
	}
}

// Poll implements stack.Poller: a worker's look at the epoll set, without
// blocking. It takes all that is there (up to 1024 events a turn): while
// it polls, nobody else reports, and with a thousand connections busy,
// 16 a pass would leave events waiting behind each other.
func (e *Engine) Poll() bool {
	var events [128]unix.EpollEvent
	any := false
	for range 8 {
		n, err := unix.EpollWait(e.epfd, events[:], 0)
		if err != nil || n <= 0 {
			break
		}
		e.dispatch(events[:n])
		any = true
		if n < len(events) {
			break
		}
	}
	return any
}

// Polled implements stack.Poller: on, a worker polls every pass and the
// poller parks; off, the poller must watch (it is woken for that).
func (e *Engine) Polled(on bool) {
	e.polled.Store(on)
	if !on {
		select {
		case e.watch <- struct{}{}:
		default: // a token is there already
		}
	}
}

// PollEagerly implements stack.EagerPoller: the poller only relays
// events, so it parks whenever a worker is awake, thread to spare or not.
func (e *Engine) PollEagerly() {}

// dispatch calls the callbacks of the sockets that events name. It
// returns true if one of them is the stop event.
func (e *Engine) dispatch(events []unix.EpollEvent) (stop bool) {
	for i := range events {
		id := uint64(uint32(events[i].Fd)) | uint64(uint32(events[i].Pad))<<32
		if id == 0 {
			stop = true
			continue
		}
		e.mu.Lock()
		so := e.socks[id]
		e.mu.Unlock()
		if so != nil {
			so.notify(events[i].Events)
		}
	}
	return stop
}

// pollNow reports, on the caller's goroutine, readiness changes that are
// already there. Over loopback the kernel has usually delivered a write
// to its peer socket by the time write(2) returns, so looking right after
// a write tells the daemon about the peer at once, instead of after the
// poller's thread has been woken (tens of microseconds on a small VM).
// The poller may get some of the same events first; either reports them.
// It says whether there was any.
func (e *Engine) pollNow() bool {
	var events [16]unix.EpollEvent
	n, err := unix.EpollWait(e.epfd, events[:], 0)
	if err != nil || n <= 0 {
		return false
	}
	// The stop event is level-triggered (the eventfd stays readable): the
	// poller sees it too, and Close wakes it from its park.
	e.dispatch(events[:n])
	return true
}

// Close implements stack.Engine: every socket is reset (SO_LINGER 0) and
// closed, and the poller stops.
func (e *Engine) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	socks := make([]*socket, 0, len(e.socks))
	for _, so := range e.socks {
		socks = append(socks, so)
	}
	e.mu.Unlock()
	for _, so := range socks {
		so.Abort()
	}
	var one [8]byte
	one[0] = 1
	_, _ = unix.Write(e.wake, one[:])
	close(e.stop)
	<-e.done
	unix.Close(e.wake)
	unix.Close(e.epfd)
	return nil
}

// errnoOf gives err as a syscall.Errno where it is one (all of the
// kernel's answers are); EINTR never reaches callers (the calls retry).
func errnoOf(err error) error {
	if err == nil {
		return nil
	}
	if en, ok := err.(syscall.Errno); ok {
		return en
	}
	return err
}
