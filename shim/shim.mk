# shim/shim.mk - libnuse.so helpers and the C test programs (tests/c).
#
# The shim's strict flags (-Wall -Wextra -Werror -fvisibility=hidden) are in
# shim/shim.go's #cgo CFLAGS: given through CGO_CFLAGS they also reach
# runtime/cgo, whose gcc_clearenv.c fails -Wextra -Werror.  So the flags the
# top Makefile passes in CGO_CFLAGS are reduced to optimisation and debug.
SHIM_CFLAGS := -O2 -g -DNUSE_ABI_SUM=$(ABI_SUM)

TESTC_CFLAGS := -O2 -g -Wall -Wextra -Werror -pthread

.PHONY: bin/libnuse.so bin/libnuse-asan.so testc
bin/libnuse.so: $(BIN)/libnuse.so
bin/libnuse-asan.so: $(BIN)/libnuse-asan.so

$(BIN)/libnuse.so $(BIN)/libnuse-asan.so: $(wildcard shim/*.c shim/*.h)

testc: $(BIN)/tcp_semantics $(BIN)/pingpong $(BIN)/sendrate $(BIN)/stress $(BIN)/fakedaemon $(BIN)/epoll_et $(BIN)/conform $(BIN)/twoconns $(BIN)/lazywait $(BIN)/wakecost

$(BIN)/tcp_semantics: tests/c/tcp_semantics.c
	@mkdir -p $(BIN)
	$(CC) $(TESTC_CFLAGS) -o $@ $<

# The issue 11 conformance program (tests/e2e/conform_test.go runs it over
# the kernel and under the preload and diffs the two).
$(BIN)/conform: tests/c/conform.c
	@mkdir -p $(BIN)
	$(CC) $(TESTC_CFLAGS) -o $@ $<

$(BIN)/pingpong: tests/c/pingpong.c
	@mkdir -p $(BIN)
	$(CC) $(TESTC_CFLAGS) -o $@ $<

build: testc

$(BIN)/epoll_et: tests/c/epoll_et.c
	@mkdir -p $(BIN)
	$(CC) $(TESTC_CFLAGS) -o $@ $<

$(BIN)/sendrate: tests/c/sendrate.c
	@mkdir -p $(BIN)
	$(CC) $(TESTC_CFLAGS) -o $@ $<

$(BIN)/lazywait: tests/c/lazywait.c
	@mkdir -p $(BIN)
	$(CC) $(TESTC_CFLAGS) -o $@ $<

$(BIN)/twoconns: tests/c/twoconns.c
	@mkdir -p $(BIN)
	$(CC) $(TESTC_CFLAGS) -o $@ $<

# What a wake-up costs its giver on this machine (README, "What a wake-up
# costs here").
$(BIN)/wakecost: tests/c/wakecost.c
	@mkdir -p $(BIN)
	$(CC) $(TESTC_CFLAGS) -o $@ $<

$(BIN)/stress: tests/c/stress.c
	@mkdir -p $(BIN)
	$(CC) $(TESTC_CFLAGS) -o $@ $<

# The C test programs over kernel loopback (no preload): they must hold
# against the kernel before they can judge NUSE (tests/e2e runs them under
# the preload).  In a network namespace of our own when we may create one.
TESTS += test-shim
.PHONY: test-shim
test-shim: testc
	@set -eo pipefail; ns=nuses-ci-$$$$; run=""; \
	if [ "$$(id -u)" = 0 ] && ip netns add $$ns 2>/dev/null; then \
		trap "ip netns del $$ns" EXIT; ip netns exec $$ns ip link set lo up; run="ip netns exec $$ns"; \
	fi; \
	$$run timeout 120 $(BIN)/tcp_semantics -p 17300 | grep -v "^PASS"; \
	$$run timeout 120 $(BIN)/stress 127.0.0.1 17400 8 10 20; \
	$$run timeout 150 $(BIN)/lazywait 127.0.0.1 17450 | grep -v "^ok: "; \
	test "$$(timeout 60 $(BIN)/wakecost -n 50 | grep -c ' median .* us  p90 .* us$$')" = 5; \
	$(MAKE) --no-print-directory test-shim-fallback RUN="$$run"

# Under the preload, with no daemon or one that refuses the session, every
# socket stays in the kernel: the program passes as without the preload,
# and the shim says why in one line.
.PHONY: test-shim-fallback
test-shim-fallback: testc $(BIN)/libnuse.so
	@set -eo pipefail; d=$$(mktemp -d /tmp/nuses-fb.XXXXXX); pids=""; \
	trap 'for p in $$pids; do kill $$p; done; rm -rf $$d' EXIT; \
	$(BIN)/fakedaemon $$d/refuse.sock refuse & pids="$$pids $$!"; \
	$(BIN)/fakedaemon $$d/version.sock version & pids="$$pids $$!"; \
	sleep 0.2; \
	for sock in $$d/none.sock $$d/refuse.sock $$d/version.sock; do \
		$(RUN) env LD_PRELOAD=$(BIN)/libnuse.so NUSE_SOCK=$$sock NUSE_RULES='tcp 127.0.0.1; tcp [::1]' \
			timeout 120 $(BIN)/tcp_semantics -p 17500 >$$d/out 2>$$d/err || { cat $$d/out $$d/err; exit 1; }; \
		grep -q 'NUSE sockets fall back to the kernel' $$d/err || { echo "no fallback message for $$sock"; cat $$d/err; exit 1; }; \
		echo "fallback ($$(basename $$sock .sock)): $$(tail -1 $$d/out); $$(head -1 $$d/err)"; \
	done

$(BIN)/fakedaemon: tests/c/fakedaemon.c shim/abi/nuse_abi.h
	@mkdir -p $(BIN)
	$(CC) $(TESTC_CFLAGS) -o $@ $<
