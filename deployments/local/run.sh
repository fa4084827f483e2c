#!/usr/bin/env bash
# Runs a carelog network on this host as separate processes, against
# MariaDB/MySQL, from config files: the log, three witnesses (2-of-3 policy,
# gossiping with each other) and a monitor.
#
#   deployments/local/run.sh up        build, make keys (first run), write configs,
#                                      ensure MariaDB, start everything, wait for health
#   deployments/local/run.sh down      stop what `up` started (and the private MariaDB, if it started one)
#   deployments/local/run.sh status    what runs, and its health
#   deployments/local/run.sh reset     down, then drop the database and delete all state and keys
#   deployments/local/run.sh configs   only make the keys and write the configs
#   deployments/local/run.sh commands  print each process's command line (one argument a line)
#
# Everything lives in CARELOG_LOCAL_DIR (default deployments/local/.state):
# bin/, config/ (see deployments/gen-config.sh), data/ (witness and monitor
# state), logs/, run/ (pid files), mariadb/ (a private MariaDB, if needed).
#
# Settings (environment):
#   CARELOG_MYSQL          DSN of a MariaDB/MySQL server, without database
#                          (default root@tcp(127.0.0.1:3306)/). If nothing answers
#                          there, scripts/mariadb.sh starts a private MariaDB in
#                          mariadb/ on CARELOG_MARIADB_PORT (default 3308),
#                          installing Debian's mariadb-server first if needed.
#   CARELOG_DB             database name (carelog_local)
#   CARELOG_HOST           listen address (127.0.0.1)
#   CARELOG_LOG_PORT (8080), CARELOG_GRPC_PORT (8081),
#   CARELOG_WITNESS_PORTS ("7381 7382 7383"), CARELOG_MONITOR_PORT (8480)
#   CARELOG_BIN            use the binaries in this directory instead of building
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
state=${CARELOG_LOCAL_DIR:-$here/.state}
mkdir -p "$state"
state=$(cd "$state" && pwd)
bin=${CARELOG_BIN:-$state/bin}
config=$state/config

export CARELOG_HOST=${CARELOG_HOST:-127.0.0.1}
export CARELOG_LOG_PORT=${CARELOG_LOG_PORT:-8080}
export CARELOG_GRPC_PORT=${CARELOG_GRPC_PORT:-8081}
export CARELOG_WITNESS_PORTS=${CARELOG_WITNESS_PORTS:-7381 7382 7383}
export CARELOG_MONITOR_PORT=${CARELOG_MONITOR_PORT:-8480}
export CARELOG_DB=${CARELOG_DB:-carelog_local}
export CARELOG_MONITOR_STATE=$state/data/monitor
read -r -a wports <<<"$CARELOG_WITNESS_PORTS"
# Start order; `down` stops in reverse.
components=(w1 w2 w3 log monitor)

say() { echo "run.sh: $*" >&2; }
die() { say "$*"; exit 1; }

log_url="http://$CARELOG_HOST:$CARELOG_LOG_PORT"
url_of() {
  case "$1" in
  log) echo "$log_url" ;;
  monitor) echo "http://$CARELOG_HOST:$CARELOG_MONITOR_PORT" ;;
  w1) echo "http://$CARELOG_HOST:${wports[0]}" ;;
  w2) echo "http://$CARELOG_HOST:${wports[1]}" ;;
  w3) echo "http://$CARELOG_HOST:${wports[2]}" ;;
  esac
}
# The path that answers 200 when the component is up.
health_path() {
  case "$1" in
  monitor) echo /status ;;
  *) echo /healthz ;;
  esac
}

# cmdline NAME: the process's argv, one argument a line.
cmdline() {
  case "$1" in
  log)
    printf '%s\n' "$bin/carelog-log" \
      --config "$config/log-secret/log.json" \
      --listen "$CARELOG_HOST:$CARELOG_LOG_PORT" \
      --grpc-listen "$CARELOG_HOST:$CARELOG_GRPC_PORT"
    ;;
  w1 | w2 | w3)
    local i=${1#w}
    printf '%s\n' "$bin/carelog-witness" \
      -key "$config/$1-secret/witness.key" \
      -config "$config/$1/witness.json" \
      -state "$state/data/$1" \
      -listen "$CARELOG_HOST:${wports[$((i - 1))]}" \
      -gossip-interval 10s \
      -pull-interval 10s \
      -log-json
    ;;
  monitor)
    printf '%s\n' "$bin/carelog-monitor" -config "$config/monitor/monitor.json"
    ;;
  esac
}

build() {
  if [[ "$bin" != "$state/bin" ]]; then
    return # CARELOG_BIN: prebuilt
  fi
  command -v go >/dev/null || die "Go is needed to build carelog (https://go.dev/dl/)"
  say "building the binaries into $bin"
  (cd "$repo" && go build -o "$bin/" ./cmd/carelog-log ./cmd/carelog-witness ./cmd/carelog-monitor ./cmd/carelog)
}

pid_alive() { # NAME: prints the pid if NAME's process runs
  local f="$state/run/$1.pid" pid
  [[ -f "$f" ]] || return 1
  pid=$(cat "$f")
  # Only a process that runs our binary counts: pids are reused.
  if kill -0 "$pid" 2>/dev/null && ps -p "$pid" -o args= | grep -q "^$bin/carelog"; then
    echo "$pid"
    return 0
  fi
  return 1
}

answers() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

http_code() { curl -s -o /dev/null -m 3 -w '%{http_code}' "$1" 2>/dev/null || true; }

ensure_mariadb() {
  local server
  mkdir -p "$state/mariadb"
  server=$(CARELOG_MARIADB_DIR="$state/mariadb" CARELOG_MARIADB_PORT="${CARELOG_MARIADB_PORT:-3308}" \
    "$repo/scripts/mariadb.sh" "${CARELOG_MYSQL:-root@tcp(127.0.0.1:3306)/}")
  if [[ -f "$state/mariadb/mariadbd.pid" ]] && kill -0 "$(cat "$state/mariadb/mariadbd.pid")" 2>/dev/null; then
    say "using the private MariaDB in $state/mariadb ($server)"
  else
    say "using MariaDB/MySQL at $server"
  fi
  export CARELOG_MYSQL=$server
}

write_configs() {
  if [[ -x "$bin/carelog" ]]; then
    CARELOG_BIN=$bin "$repo/deployments/gen-config.sh" local "$config"
  else
    CARELOG_BIN="" "$repo/deployments/gen-config.sh" local "$config"
  fi
}

start() { # NAME
  local name=$1 args
  mapfile -t args < <(cmdline "$name")
  mkdir -p "$state/run" "$state/logs" "$state/data"
  [[ "$name" == w? ]] && mkdir -p "$state/data/$name"
  [[ "$name" == monitor ]] && mkdir -p "$CARELOG_MONITOR_STATE"
  nohup "${args[@]}" >>"$state/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$state/run/$name.pid"
}

wait_healthy() { # NAME: waits for the health path, up to two minutes
  local name=$1 url code
  url="$(url_of "$name")$(health_path "$name")"
  for _ in $(seq 1 240); do
    if ! pid_alive "$name" >/dev/null; then
      say "$name exited; the end of $state/logs/$name.log:"
      tail -20 "$state/logs/$name.log" >&2
      return 1
    fi
    code=$(http_code "$url")
    if [[ "$code" == 200 ]]; then
      return 0
    fi
    sleep 0.5
  done
  say "$name is not healthy after two minutes ($url answers ${code:-nothing}); see $state/logs/$name.log"
  return 1
}

up() {
  command -v curl >/dev/null || die "curl is needed to check the components' health"
  local running=()
  for c in "${components[@]}"; do
    pid_alive "$c" >/dev/null && running+=("$c")
  done
  if [[ ${#running[@]} -gt 0 ]]; then
    die "already running: ${running[*]} (run.sh status; run.sh down)"
  fi
  for c in "${components[@]}"; do
    local hp=${CARELOG_HOST}
    local port
    port=$(url_of "$c")
    port=${port##*:}
    if answers "$hp" "$port"; then
      die "port $port ($c) is taken; choose others with CARELOG_*_PORT(S)"
    fi
  done
  build
  ensure_mariadb
  write_configs
  for c in "${components[@]}"; do
    say "starting $c"
    start "$c"
    # The log pushes to the witnesses and the monitor reads the log: wait
    # for each before the next.
    wait_healthy "$c" || die "$c did not come up; stop the rest with: $0 down"
  done
  cat <<EOF

carelog is up (state in $state):
  log       $log_url   (gRPC $CARELOG_HOST:$CARELOG_GRPC_PORT)   origin $(cut -d+ -f1 "$config/keys/log.vkey")
  witnesses $(url_of w1)  $(url_of w2)  $(url_of w3)
  monitor   $(url_of monitor)/status
  logs      $state/logs/

Try it:
  $bin/carelog simulate --log $log_url --key $config/keys/ehr.key \\
      --log-key $config/keys/log.vkey --policy $config/log/policy.txt --count 100
  $bin/carelog checkpoint --log $log_url --log-key $config/keys/log.vkey --policy $config/log/policy.txt
  curl $(url_of monitor)/alerts
Stop it with: $0 down
EOF
}

stop() { # NAME
  local name=$1 pid
  pid=$(pid_alive "$name") || { rm -f "$state/run/$name.pid"; return 0; }
  kill -TERM "$pid"
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.25
  done
  if kill -0 "$pid" 2>/dev/null; then
    say "$name ($pid) ignores SIGTERM; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$state/run/$name.pid"
  say "stopped $name"
}

down() {
  local i
  for ((i = ${#components[@]} - 1; i >= 0; i--)); do
    stop "${components[$i]}"
  done
  if [[ -f "$state/mariadb/mariadbd.pid" ]]; then
    CARELOG_MARIADB_DIR="$state/mariadb" "$repo/scripts/mariadb.sh" stop
    rm -f "$state/mariadb/mariadbd.pid"
  fi
}

status() {
  local c pid code
  for c in "${components[@]}"; do
    if pid=$(pid_alive "$c"); then
      code=$(http_code "$(url_of "$c")$(health_path "$c")")
      printf '%-8s running (pid %s)  %s%s -> %s\n' "$c" "$pid" "$(url_of "$c")" "$(health_path "$c")" "${code:-no answer}"
    else
      printf '%-8s stopped\n' "$c"
    fi
  done
}

reset() {
  down
  if command -v mariadb >/dev/null && [[ -f "$config/log-secret/log.json" ]]; then
    # Drop the log's database so that the next `up` starts a new log, as the
    # new keys require. Only the database this script configured.
    local dsn user pass=() hostport host port
    dsn=$(sed -n 's/.*"mysql": "\(.*\)",*/\1/p' "$config/log-secret/log.json")
    user=${dsn%%@*}
    [[ "$user" == *:* ]] && pass=("-p${user#*:}")
    hostport=$(sed -n 's/.*@tcp(\([^)]*\)).*/\1/p' <<<"$dsn")
    host=${hostport%:*}
    port=${hostport##*:}
    if [[ -n "$host" ]] && answers "$host" "$port"; then
      mariadb -h "$host" -P "$port" -u "${user%%:*}" "${pass[@]}" -e "DROP DATABASE IF EXISTS \`$CARELOG_DB\`" &&
        say "dropped database $CARELOG_DB at $hostport"
    fi
  fi
  rm -rf "$state"
  say "deleted $state"
}

case "${1:-}" in
up) up ;;
down) down ;;
status) status ;;
reset) reset ;;
configs)
  write_configs
  ;;
commands)
  for c in "${components[@]}"; do
    echo "== $c"
    cmdline "$c"
  done
  ;;
*)
  sed -n '2,/^set -e/p' "$0" | sed 's/^# \{0,1\}//; /^set -e/d' >&2
  exit 2
  ;;
esac
