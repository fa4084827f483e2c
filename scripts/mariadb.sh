#!/usr/bin/env bash
# Makes sure a MariaDB/MySQL server answers for carelog, and prints the DSN
# (without database name) to use, e.g. root@tcp(127.0.0.1:3306)/
#
#   scripts/mariadb.sh [DSN]
#
# If the server in DSN (default $CARELOG_TEST_MYSQL, else root@tcp(127.0.0.1:3306)/)
# answers, that is it. Otherwise a private MariaDB instance is started in
# $CARELOG_MARIADB_DIR (default .mariadb/ in the repository) on port
# $CARELOG_MARIADB_PORT (default 3307), installing Debian's mariadb-server
# package first if mariadbd is missing. Stop it with: scripts/mariadb.sh stop
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
dir=${CARELOG_MARIADB_DIR:-$here/.mariadb}
port=${CARELOG_MARIADB_PORT:-3307}

say() { echo "mariadb.sh: $*" >&2; }

if [[ "${1:-}" == "stop" ]]; then
  if [[ -f "$dir/mariadbd.pid" ]]; then
    kill "$(cat "$dir/mariadbd.pid")" 2>/dev/null || true
    say "stopped the private MariaDB in $dir"
  fi
  exit 0
fi

dsn=${1:-${CARELOG_TEST_MYSQL:-root@tcp(127.0.0.1:3306)/}}
hostport=$(sed -n 's/.*@tcp(\([^)]*\)).*/\1/p' <<<"$dsn")
host=${hostport%:*}
p=${hostport##*:}

answers() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

if [[ -n "$host" ]] && answers "$host" "$p"; then
  echo "$dsn"
  exit 0
fi
say "no MariaDB/MySQL answers at ${hostport:-?}; starting a private one on 127.0.0.1:$port in $dir"

if answers 127.0.0.1 "$port"; then
  echo "root@tcp(127.0.0.1:$port)/"
  exit 0
fi

find_bin() { command -v "$1" 2>/dev/null || { [[ -x "/usr/sbin/$1" ]] && echo "/usr/sbin/$1"; } || true; }
mariadbd=$(find_bin mariadbd)
if [[ -z "$mariadbd" ]]; then
  say "mariadbd is not installed; installing Debian's mariadb-server package"
  sudo=""
  [[ $(id -u) -ne 0 ]] && sudo="sudo"
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq mariadb-server >&2
  mariadbd=$(find_bin mariadbd)
  [[ -n "$mariadbd" ]] || { say "could not install mariadb-server"; exit 1; }
fi
installdb=$(find_bin mariadb-install-db)

mkdir -p "$dir"
user_opt=()
[[ $(id -u) -eq 0 ]] && user_opt=(--user=root)
if [[ ! -d "$dir/data/mysql" ]]; then
  "$installdb" --no-defaults --datadir="$dir/data" --auth-root-authentication-method=normal \
    --skip-test-db "${user_opt[@]}" >"$dir/install.log" 2>&1 || { cat "$dir/install.log" >&2; exit 1; }
fi
"$mariadbd" --no-defaults --datadir="$dir/data" --port="$port" --bind-address=127.0.0.1 \
  --socket="$dir/mariadb.sock" --pid-file="$dir/mariadbd.pid" --skip-grant-tables \
  --innodb-buffer-pool-size=256M --max-connections=500 "${user_opt[@]}" >"$dir/mariadbd.log" 2>&1 &
for _ in $(seq 1 120); do
  if answers 127.0.0.1 "$port"; then
    echo "root@tcp(127.0.0.1:$port)/"
    exit 0
  fi
  sleep 0.5
done
say "the private MariaDB did not start; see $dir/mariadbd.log"
tail -20 "$dir/mariadbd.log" >&2
exit 1
