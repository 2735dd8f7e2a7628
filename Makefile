# NUSE build and test entry points. Areas add their own targets in
# <area>/<area>.mk (kmod/kmod.mk, uc/uc.mk, ...) and append to TESTS.
GO      ?= go
BIN     := $(CURDIR)/bin
export PATH := $(PATH):/usr/local/go/bin:$(HOME)/go/bin

SHIM_CFLAGS := -O2 -g -Wall -Wextra -Werror -fvisibility=hidden
# Go's build cache does not see headers outside a package's directory
# (shim/abi/nuse_abi.h, included by the shim and by shim/abi/cdefs): the
# header's checksum in CGO_CFLAGS makes a changed ABI rebuild them.
ABI_SUM := $(shell cksum < shim/abi/nuse_abi.h | cut -d' ' -f1)
export CGO_CFLAGS := -O2 -g -DNUSE_ABI_SUM=$(ABI_SUM)
GO_SRCS     := $(shell find . -name '*.go' -not -path './bin/*' 2>/dev/null) go.mod
SHIM_SRCS   := $(wildcard shim/*.c shim/*.h shim/*.go) shim/abi/nuse_abi.h

# Test targets, run in order by `make test`.
TESTS := test-lint test-unit test-e2e

.PHONY: all build test demo clean lint $(TESTS)
all: build

build: $(BIN)/nuse $(BIN)/libnuse.so

$(BIN)/libnuse.so: $(SHIM_SRCS)
	@mkdir -p $(BIN)
	CGO_CFLAGS="$(SHIM_CFLAGS)" $(GO) build -buildmode=c-shared -o $@ ./shim
	@rm -f $(BIN)/libnuse.h

# The sanitizer build of the shim, exercised by the e2e tests.
$(BIN)/libnuse-asan.so: $(SHIM_SRCS)
	@mkdir -p $(BIN)
	CGO_CFLAGS="$(SHIM_CFLAGS) -fsanitize=address,undefined -fno-omit-frame-pointer -DNUSE_ASAN" \
	CGO_LDFLAGS="-fsanitize=address,undefined" $(GO) build -buildmode=c-shared -o $@ ./shim
	@rm -f $(BIN)/libnuse-asan.h

$(BIN)/nuse: $(GO_SRCS) cmd/nuse/default.pgo
	@mkdir -p $(BIN)
	$(GO) build -o $@ ./cmd/nuse

-include $(wildcard */*.mk */*/*.mk)

# Each target's output is kept in bin/test-TARGET.log; when one fails, the
# last lines printed name the target, the failing tests and their checks
# (CI keeps only what was printed).
test: build
	@set -o pipefail; for t in $(TESTS); do echo "==> $$t"; \
		if ! $(MAKE) --no-print-directory $$t 2>&1 | tee $(BIN)/test-$$t.log; then \
			bash scripts/failsum.sh $$t $(BIN)/test-$$t.log; exit 1; fi; done

test-lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: files above need formatting"; exit 1; }
	$(GO) vet ./...
	@if command -v staticcheck >/dev/null; then staticcheck ./...; else echo "staticcheck not installed (.ci/run installs it)"; exit 1; fi

test-unit:
	$(GO) test -race -count=1 ./shim/... ./daemon/... ./stack/... ./cmd/... ./internal/...

# Every fuzz target, fuzzing for a count of executions (a few seconds
# each). Counts, not durations: a duration races Go's fuzz coordinator at
# its deadline (golang/go#75804, fixed in Go 1.27) and fails for nothing.
FUZZ := ./daemon/usock:FuzzDecodeCtl:40000 ./daemon/usock:FuzzSockaddr:40000 \
	./daemon/usock:FuzzCommand:40000 ./shim/rules:FuzzParse:150000 \
	./uc/soft:FuzzParsePacket:150000 ./uc/soft:FuzzSplitIPv4UDP:150000 \
	./uc/soft:FuzzResponder:150000 ./uc/proxy:FuzzParseReq:150000
TESTS += test-fuzz
.PHONY: test-fuzz
test-fuzz:
	@set -e; for t in $(FUZZ); do IFS=: read -r pkg name n <<<"$$t"; \
		echo "fuzz $$pkg $$name $${n}x"; \
		out=$$($(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime "$${n}x" "$$pkg" 2>&1) || \
			{ echo "$$out"; exit 1; }; echo "$$out" | tail -2; done

SHELL := /bin/bash
test-e2e: build $(BIN)/libnuse-asan.so
	bash scripts/brief.sh $(BIN)/e2e.log $(GO) test -count=1 -v -timeout 20m ./tests/e2e/...

demo: build
	bash scripts/demo.sh

clean:
	rm -rf $(BIN)
