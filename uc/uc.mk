# The UC channel (issue 4): unit tests of the packet code (test-fuzz
# fuzzes it), soft backend over loopback, and the namespace end-to-end
# tests (root).
TESTS += test-uc

.PHONY: test-uc test-uc-guest
test-uc:
	$(GO) test -race -count=1 ./uc/...
	@mkdir -p $(CURDIR)/bin
	cd tests/uc && $(GO) test -count=1 -v -timeout 10m . 2>&1 | tee $(CURDIR)/bin/uc.log | grep -E '^(=== RUN|--- |PASS|FAIL|ok|\s+uc_test.go)'; exit $${PIPESTATUS[0]}

# The guest half (issue 4, items 3-5): verbs<->verbs on rdma_rxe, the link
# endpoint over verbs, perftest vs nuse perf, soft(host)<->verbs(guest)
# interop. Boots one QEMU guest (about 2-3 minutes); skips without QEMU.
TESTS += test-uc-guest
test-uc-guest:
	bash scripts/uc/guest-test.sh
