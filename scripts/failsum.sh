#!/usr/bin/env bash
# failsum.sh TARGET LOG: the closing summary of a failed `make test`: which
# target failed, and from its log the failing tests with the lines that say
# which check failed (go test's "--- FAIL" and file:line messages, panics
# and races, the C programs' and guest scripts' FAIL lines).
set -uo pipefail
target=$1 log=$2
echo
echo "==== make test FAILED in $target (whole output: $log)"
grep -nE -- '^\s*--- FAIL|^FAIL|^\s+[A-Za-z0-9_]+_test\.go:[0-9]+:|^panic:|WARNING: DATA RACE|^FAIL[: ]|[^A-Za-z]FAIL:|ERROR: AddressSanitizer|runtime error:|^make(\[[0-9]+\])?: \*\*\*' "$log" \
	| grep -v 'testlog.go' | tail -40
echo "==== end of summary: make test FAILED in $target"
