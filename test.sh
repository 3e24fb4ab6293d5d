#!/usr/bin/env bash
# test.sh: every check and test of every module in the workspace.
#   Installs Mosquitto when it is missing and this user can (root with apt-get), then gofmt,
#   go vet, staticcheck (pinned by the tools module: go tool staticcheck) and go test -race
#   for each module listed in go.work.
# Without Mosquitto the broker tests skip (a summary at the end says how many); with CI=true
# a missing broker fails the run.
set -euo pipefail
cd "$(dirname "$0")"

need_apt=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || need_apt+=(mosquitto-clients)
if [ ${#need_apt[@]} -gt 0 ]; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
		echo "== installing ${need_apt[*]}"
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
	else
		echo "== ${need_apt[*]} missing and not installable here (needs root and apt-get):" \
			"install it, e.g. 'sudo apt-get install -y mosquitto mosquitto-clients', or broker tests skip" >&2
	fi
fi

echo "== no large files"
if [ -d .git ] || git rev-parse --git-dir >/dev/null 2>&1; then
	large=$(git ls-files -z | xargs -0 -r stat -c '%s %n' 2>/dev/null | awk '$1 > 1000000 {print $2}')
	if [ -n "$large" ]; then
		echo "files over 1 MB are tracked (build outputs? add them to .gitignore):" >&2
		echo "$large" >&2
		exit 1
	fi
fi

echo "== gofmt"
unformatted=$(gofmt -l $(find . -name '*.go' -not -path './.git/*'))
if [ -n "$unformatted" ]; then
	echo "not gofmt'd:" >&2
	echo "$unformatted" >&2
	exit 1
fi

TERN_SKIP_LOG=$(mktemp)
export TERN_SKIP_LOG
trap 'rm -f "$TERN_SKIP_LOG"' EXIT

status=0
for dir in $(go list -m -f '{{.Dir}}'); do
	rel=${dir#"$PWD"}
	rel=${rel#/}
	[ "$rel" = tools ] && continue # only pins the tools' versions
	echo "== module ./${rel}"
	(cd "$dir" && go vet ./... && go tool staticcheck ./... && go test -race -count=1 -timeout 20m ./...) || status=1
done

skipped=$(sort -u "$TERN_SKIP_LOG" | wc -l)
if [ "$skipped" -gt 0 ]; then
	cat >&2 <<MSG

************************************************************************
* $skipped test(s) SKIPPED: no Mosquitto broker on this machine.
* They did not run, so this result proves less than it seems.
* Install it (Debian/Ubuntu): sudo apt-get install -y mosquitto mosquitto-clients
************************************************************************
MSG
fi
if [ $status = 0 ]; then echo "== all modules passed"; else echo "== FAILED" >&2; fi
exit $status
