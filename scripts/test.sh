#!/usr/bin/env bash
# Runs carelog's whole test suite: unit tests and the integration tests,
# which run against a real MariaDB/MySQL through a real Trillian.
#
#   scripts/test.sh [go test flags...]
#
# The database server comes from CARELOG_TEST_MYSQL (default
# root@tcp(127.0.0.1:3306)/). If none answers there, scripts/mariadb.sh
# starts a private MariaDB (installing it from Debian's packages if needed).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v go >/dev/null || { echo "test.sh: Go is required (https://go.dev/dl/)" >&2; exit 1; }

export CARELOG_TEST_MYSQL
CARELOG_TEST_MYSQL=$(scripts/mariadb.sh)
echo "test.sh: using MariaDB/MySQL at $CARELOG_TEST_MYSQL" >&2

unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [[ -n "$unformatted" ]]; then
  echo "test.sh: gofmt would change: $unformatted" >&2
  exit 1
fi
go build ./...
go vet ./...
go test -count=1 -timeout 20m "$@" ./...
