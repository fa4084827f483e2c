#!/usr/bin/env bash
# Applies Trillian's MySQL schema (storage.sql of the Trillian module the
# image was built from) to the database, once; or waits until it is there.
# The entrypoint of the trillian-schema image (Dockerfile.trillian).
#
#   trillian-schema [apply|wait]
#
# Environment: DB_HOST (mariadb), DB_PORT (3306), DB_NAME (carelog),
# DB_USER (carelog), DB_PASSWORD_FILE (a file holding the password),
# SCHEMA (/usr/share/trillian/storage.sql), TIMEOUT (seconds to wait for the
# server, 300).
set -euo pipefail

mode=${1:-apply}
host=${DB_HOST:-mariadb}
port=${DB_PORT:-3306}
db=${DB_NAME:-carelog}
user=${DB_USER:-carelog}
schema=${SCHEMA:-/usr/share/trillian/storage.sql}
timeout=${TIMEOUT:-300}
[[ -n "${DB_PASSWORD_FILE:-}" ]] || { echo "trillian-schema: DB_PASSWORD_FILE is required" >&2; exit 2; }

# The password goes in an option file, not on the command line.
opts=$(mktemp)
trap 'rm -f "$opts"' EXIT
printf '[client]\nhost=%s\nport=%s\nuser=%s\npassword=%s\n' "$host" "$port" "$user" "$(cat "$DB_PASSWORD_FILE")" >"$opts"
sql() { mariadb --defaults-extra-file="$opts" --batch --skip-column-names "$db" "$@"; }

# Trillian's seven tables: all there means the schema is applied.
tables() {
  sql -e "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE()
    AND table_name IN ('Trees','TreeControl','Subtree','TreeHead','LeafData','SequencedLeafData','Unsequenced')"
}

deadline=$((SECONDS + timeout))
until n=$(tables 2>/dev/null); do
  ((SECONDS < deadline)) || { echo "trillian-schema: no database at $host:$port after ${timeout}s" >&2; exit 1; }
  sleep 2
done

case "$mode" in
apply)
  if [[ "$n" == 7 ]]; then
    echo "trillian-schema: Trillian's schema is already in $db"
    exit 0
  fi
  if [[ "$n" == 0 ]]; then
    sql <"$schema"
  else
    # storage.sql creates its tables IF NOT EXISTS but its indexes without,
    # so after a half-applied run its CREATE INDEX statements fail as
    # duplicates (error 1061): --force goes on past them, and the count
    # below decides.
    sql --force <"$schema" || true
  fi
  n=$(tables)
  [[ "$n" == 7 ]] || { echo "trillian-schema: applying $schema left $n of Trillian's 7 tables in $db" >&2; exit 1; }
  echo "trillian-schema: applied $schema to $db"
  ;;
wait)
  until [[ "$n" == 7 ]]; do
    ((SECONDS < deadline)) || { echo "trillian-schema: Trillian's schema is not in $db after ${timeout}s" >&2; exit 1; }
    sleep 2
    n=$(tables)
  done
  echo "trillian-schema: Trillian's schema is in $db"
  ;;
*)
  echo "usage: trillian-schema [apply|wait]" >&2
  exit 2
  ;;
esac
