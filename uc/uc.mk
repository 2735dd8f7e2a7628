# The UC channel (issue 4): unit tests of the packet code (test-fuzz
# fuzzes it), soft backend over loopback, and the namespace end-to-end
# tests (root).
TESTS += test-uc

.PHONY: test-uc test-uc-guest
test-uc:
	$(GO) test -race -count=1 ./uc/...
	bash scripts/brief.sh $(CURDIR)/bin/uc.log $(GO) test -count=1 -v -timeout 10m ./tests/uc

# The guest half (issue 4, items 3-5): verbs<->verbs on rdma_rxe, the link
# endpoint over verbs, perftest vs nuse perf, soft(host)<->verbs(guest)
# interop. Boots one QEMU guest (about 2-3 minutes); skips without QEMU.
TESTS += test-uc-guest
test-uc-guest:
	bash scripts/uc/guest-test.sh
