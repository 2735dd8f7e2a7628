# kmod/: nuse.ko and its tests in a Debian kernel under QEMU (scripts/guest).
# test-kmod builds the module warning-free against the installed
# linux-headers-amd64, the guest-side test binaries, then boots the guest
# and runs tests/kmod/guest-test.sh there.
KMOD_GO_SRCS := $(shell find stack/link/kmod stack/netdev stack/link/tap tests/kmod -name '*.go' 2>/dev/null) kmod/nuse_uapi.h go.mod

.PHONY: kmod kmod-clean test-kmod guest-image
kmod:
	@$(MAKE) --no-print-directory -C kmod clean >/dev/null
	@mkdir -p $(BIN); $(MAKE) --no-print-directory -C kmod 2>&1 | tee $(BIN)/kmod-build.log
	@test -f kmod/nuse.ko
	@if grep -E 'warning:|error:' $(BIN)/kmod-build.log; then echo "kmod: the module build has warnings"; exit 1; fi
	@echo "kmod: nuse.ko built without warnings"

kmod-clean:
	$(MAKE) -C kmod clean

$(BIN)/nusekmod: $(KMOD_GO_SRCS)
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -o $@ ./tests/kmod/nusekmod

$(BIN)/kmod.test: $(KMOD_GO_SRCS)
	@mkdir -p $(BIN)
	$(GO) test -c -o $@ ./stack/link/kmod

guest-image:
	scripts/guest/build.sh

test-kmod: kmod $(BIN)/nusekmod $(BIN)/kmod.test $(BIN)/nuse $(BIN)/libnuse.so
	scripts/guest/run.sh --timeout 900 -- tests/kmod/guest-test.sh

TESTS += test-kmod
