package main

import (
	"debug/elf"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nuse-project/nuse/daemon/ctlclient"
	"github.com/nuse-project/nuse/shim/abi"
	"github.com/nuse-project/nuse/shim/rules"
)

func init() {
	register("run", "run a program with its matching sockets through NUSE", runRun)
}

// DefaultRules give NUSE the daemon's default subnets.
const DefaultRules = "tcp 10.77.0.0/16; tcp [fd77::]/64"

func defaultSock() string {
	if s := os.Getenv("NUSE_SOCK"); s != "" {
		return s
	}
	return abi.DefaultSockPath
}

func runRun(args []string) int {
	fs := flag.NewFlagSet("nuse run", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(os.Stderr, `usage: nuse run [flags] -- program [arguments]

Runs program with libnuse.so preloaded. Its TCP sockets that the rules match
go through the NUSE daemon; everything else stays in the kernel. If no daemon
answers on --sock, one is started for the lifetime of the program.

flags:
`)
		fs.PrintDefaults()
	}
	sock := fs.String("sock", defaultSock(), "daemon control socket")
	rules := fs.String("rules", "", "rules text (default: $NUSE_RULES, else \""+DefaultRules+"\")")
	rulesFile := fs.String("rules-file", "", "file with rules, one per line")
	lib := fs.String("lib", "", "libnuse.so to preload (default: $NUSE_LIB, else next to this binary)")
	asan := fs.Bool("asan", false, "preload the AddressSanitizer build of the shim (libnuse-asan.so)")
	debug := fs.Bool("debug", false, "let the shim log its decisions to stderr")
	daemonArgs := fs.String("daemon-args", "", "flags for the daemon, if nuse run starts one")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	argv := fs.Args()
	if len(argv) == 0 {
		fs.Usage()
		return 2
	}
	// Check the rules here, as the shim will parse them: a typo should stop
	// the launch, not quietly leave every socket in the kernel.
	if err := checkRules(*rules, *rulesFile); err != nil {
		fmt.Fprintln(os.Stderr, "nuse run:", err)
		return 2
	}
	libPath, err := findLib(*lib, *asan)
	if err != nil {
		fmt.Fprintln(os.Stderr, "nuse run:", err)
		return 1
	}
	prog, err := exec.LookPath(argv[0])
	if err != nil {
		fmt.Fprintf(os.Stderr, "nuse run: %v\n", err)
		return 127
	}
	if static, err := isStatic(prog); err == nil && static {
		fmt.Fprintf(os.Stderr, "nuse run: warning: %s is statically linked, so LD_PRELOAD cannot reach it; its sockets stay in the kernel\n", prog)
	}

	var daemon *ownDaemon
	if !ctlclient.Ping(*sock) {
		daemon, err = startDaemon("nuse run", *sock, *daemonArgs)
		if err != nil {
			fmt.Fprintln(os.Stderr, "nuse run:", err)
			return 1
		}
		defer daemon.stop()
	}

	env := os.Environ()
	preload := libPath
	if *asan {
		if rt := asanRuntime(); rt != "" {
			preload = rt + ":" + libPath
		}
		env = setEnv(env, "ASAN_OPTIONS", envOr("ASAN_OPTIONS", "detect_leaks=0:abort_on_error=1"))
	}
	if old := os.Getenv("LD_PRELOAD"); old != "" {
		preload += ":" + old
	}
	env = setEnv(env, "LD_PRELOAD", preload)
	env = setEnv(env, "NUSE_SOCK", *sock)
	switch {
	case *rulesFile != "":
		env = setEnv(env, "NUSE_RULES_FILE", *rulesFile)
	case *rules != "":
		env = setEnv(env, "NUSE_RULES", *rules)
	case os.Getenv("NUSE_RULES") == "" && os.Getenv("NUSE_RULES_FILE") == "":
		env = setEnv(env, "NUSE_RULES", DefaultRules)
	}
	if *debug {
		env = setEnv(env, "NUSE_DEBUG", "1")
	}

	cmd := exec.Command(prog, argv[1:]...)
	cmd.Args[0] = argv[0]
	cmd.Env = env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "nuse run:", err)
		return 126
	}
	go func() {
		for s := range sigs {
			_ = cmd.Process.Signal(s)
		}
	}()
	err = cmd.Wait()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	default:
		fmt.Fprintln(os.Stderr, "nuse run:", err)
		return 1
	}
}

// rulesText finds the rules the shim will read: --rules-file, --rules,
// $NUSE_RULES_FILE, $NUSE_RULES, or none ("" and "") for the default.
func rulesText(text, file string) (string, string, error) {
	switch {
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", "", fmt.Errorf("rules file: %w", err)
		}
		return string(b), file, nil
	case text != "":
		return text, "--rules", nil
	case os.Getenv("NUSE_RULES_FILE") != "":
		b, err := os.ReadFile(os.Getenv("NUSE_RULES_FILE"))
		if err != nil {
			return "", "", fmt.Errorf("$NUSE_RULES_FILE: %w", err)
		}
		return string(b), "$NUSE_RULES_FILE", nil
	case os.Getenv("NUSE_RULES") != "":
		return os.Getenv("NUSE_RULES"), "$NUSE_RULES", nil
	}
	return "", "", nil
}

// checkRules parses the rules nuse run will hand to the shim.
func checkRules(text, file string) error {
	t, src, err := rulesText(text, file)
	if err != nil || src == "" {
		return err
	}
	if _, err := rules.Parse(t); err != nil {
		return fmt.Errorf("%s: %v", src, err)
	}
	return nil
}

// findLib locates libnuse.so.
func findLib(flagVal string, asan bool) (string, error) {
	name := "libnuse.so"
	if asan {
		name = "libnuse-asan.so"
	}
	cands := []string{flagVal}
	if !asan {
		cands = append(cands, os.Getenv("NUSE_LIB"))
	}
	if exe, err := os.Executable(); err == nil {
		dir := filepath.Dir(exe)
		cands = append(cands, filepath.Join(dir, name), filepath.Join(dir, "..", "lib", "nuse", name))
	}
	cands = append(cands, "/usr/local/lib/nuse/"+name, "/usr/lib/nuse/"+name)
	for _, c := range cands {
		if c == "" {
			continue
		}
		if _, err := os.Stat(c); err == nil {
			return filepath.Abs(c)
		}
		if c == flagVal {
			return "", fmt.Errorf("%s: no such file", c)
		}
	}
	return "", fmt.Errorf("cannot find %s (looked next to this binary and in /usr/local/lib/nuse); pass --lib or run 'make build'", name)
}

// isStatic reports whether an executable has no program interpreter, so the
// dynamic loader (and with it LD_PRELOAD) never runs.
func isStatic(path string) (bool, error) {
	f, err := elf.Open(path)
	if err != nil {
		return false, err // scripts and the like: their interpreter decides
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false, nil
		}
	}
	return true, nil
}

func asanRuntime() string {
	out, err := exec.Command("gcc", "-print-file-name=libasan.so").Output()
	if err != nil {
		return ""
	}
	p := strings.TrimSpace(string(out))
	if !filepath.IsAbs(p) {
		return ""
	}
	return p
}

// ownDaemon is a daemon started for one command's lifetime.
type ownDaemon struct {
	cmd    *exec.Cmd
	exited chan struct{}
	log    string
}

// startDaemon starts a daemon for the caller's lifetime; who names the
// caller in messages ("nuse run").
func startDaemon(who, sock, extra string) (*ownDaemon, error) {
	return startDaemonOn(who, sock, extra, -1)
}

// startDaemonOn is startDaemon with the daemon pinned to one CPU (cpu >= 0),
// for benchmarks that place each party on its own core.
func startDaemonOn(who, sock, extra string, cpu int) (*ownDaemon, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	args := []string{"daemon", "--sock", sock}
	if extra != "" {
		args = append(args, strings.Fields(extra)...)
	}
	logf, err := os.CreateTemp("", "nused-*.log")
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	d := &ownDaemon{cmd: exec.Command(exe, args...), exited: make(chan struct{}), log: logf.Name()}
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := startPinned(d.cmd, cpu); err != nil {
		return nil, fmt.Errorf("starting the daemon: %w", err)
	}
	go func() { _ = d.cmd.Wait(); close(d.exited) }()
	deadline := time.Now().Add(15 * time.Second)
	for !ctlclient.Ping(sock) {
		select {
		case <-d.exited:
			b, _ := os.ReadFile(logf.Name())
			return nil, fmt.Errorf("the daemon exited (%v):\n%s", d.cmd.ProcessState, b)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			d.stop()
			return nil, fmt.Errorf("the daemon did not answer on %s within 15 s (log: %s)", sock, logf.Name())
		}
	}
	fmt.Fprintf(os.Stderr, "%s: started a daemon (pid %d, log %s); it stops when %s ends\n", who, d.cmd.Process.Pid, logf.Name(), who)
	return d, nil
}

// privateDaemon starts a daemon with no netdev on a socket in a fresh
// temporary directory, for a benchmark's lifetime: it needs no root and
// sends nothing anywhere but within its engine. stop ends it and removes
// the directory.
func privateDaemon(who, extra string, cpu int) (sock string, stop func(), err error) {
	dir, err := os.MkdirTemp("", "nuse-perf-")
	if err != nil {
		return "", nil, err
	}
	sock = filepath.Join(dir, "nused.sock")
	d, err := startDaemonOn(who, sock, "--netdev none -q "+extra, cpu)
	if err != nil {
		os.RemoveAll(dir)
		return "", nil, err
	}
	return sock, func() { d.stop(); os.RemoveAll(dir) }, nil
}

// startPinned starts cmd with its CPU affinity set to cpu (all CPUs if
// cpu < 0). The child inherits the affinity of the thread that forks it, so
// that thread is locked and pinned for the fork, then given its mask back.
func startPinned(cmd *exec.Cmd, cpu int) error {
	if cpu < 0 {
		return cmd.Start()
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var old, set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		return err
	}
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return fmt.Errorf("pinning to CPU %d: %w", cpu, err)
	}
	defer unix.SchedSetaffinity(0, &old)
	return cmd.Start()
}

// stop asks the daemon to finish, then insists.
func (d *ownDaemon) stop() {
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(10 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.exited
	}
	if d.cmd.ProcessState.Success() {
		os.Remove(d.log) // kept only when something went wrong
	} else {
		fmt.Fprintf(os.Stderr, "nuse: the daemon ended with %v; its log: %s\n", d.cmd.ProcessState, d.log)
	}
}

func setEnv(env []string, k, v string) []string {
	pre := k + "="
	for i, e := range env {
		if strings.HasPrefix(e, pre) {
			env[i] = pre + v
			return env
		}
	}
	return append(env, pre+v)
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
