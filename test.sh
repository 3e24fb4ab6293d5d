#!/usr/bin/env bash
# test.sh: every check and test of every module in the workspace.
#   gofmt, go vet, then go test -race for each module listed in go.work.
# Tests that need Mosquitto find it on PATH; with CI=true a missing broker fails the run.
set -euo pipefail
cd "$(dirname "$0")"

echo "== gofmt"
unformatted=$(gofmt -l $(find . -name '*.go' -not -path './.git/*'))
if [ -n "$unformatted" ]; then
	echo "not gofmt'd:" >&2
	echo "$unformatted" >&2
	exit 1
fi

status=0
for dir in $(go list -m -f '{{.Dir}}'); do
	rel=${dir#"$PWD"}
	rel=${rel#/}
	echo "== module ./${rel}"
	(cd "$dir" && go vet ./... && go test -race -count=1 -timeout 20m ./...) || status=1
done
exit $status
