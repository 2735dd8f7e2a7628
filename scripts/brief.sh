#!/usr/bin/env bash
# brief.sh LOG CMD...: runs a verbose `go test` command, keeps its whole
# output in LOG and shows only the test lines; if it fails, shows all of
# LOG, because the lines a test logged are what tell why (CI keeps only
# what was printed).
set -uo pipefail
log=$1
shift
mkdir -p "$(dirname "$log")"
"$@" > "$log" 2>&1
rc=$?
grep -E '^(=== RUN|--- |PASS|FAIL|ok|SKIP)|^\s+[a-z_]+_test\.go:' "$log"
if [[ $rc != 0 ]]; then
	echo "==== $* failed (exit $rc); its whole output, from $log:"
	cat "$log"
fi
exit $rc
