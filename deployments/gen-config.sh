#!/usr/bin/env bash
# Makes the keys (first run only) and writes the config files of a carelog
# network: one log, three witnesses that are each other's gossip peers, a
# 2-of-3 witness policy, and a monitor.
#
#   deployments/gen-config.sh PROFILE OUT
#
# PROFILE says where the pieces run and so how they reach each other:
#   local       processes on this host (deployments/local/run.sh)
#   compose     containers of deployments/compose/compose.yaml
#   kubernetes  pods of deployments/kubernetes/ (OUT is usually
#               deployments/kubernetes/generated)
#
# OUT gets:
#   keys/             every private and public key, and the database password
#                     (compose, kubernetes). The only copy: back it up. Keys
#                     are made once and never overwritten.
#   log/              public files of the log: submitters.json, policy.txt
#   log-secret/       log.key and log.json (the log's settings, with the DSN)
#   trillian-secret/  trillian.cfg: the Trillian servers' flag file with the
#                     MySQL URI; db.password (compose, kubernetes)
#   w1/ w2/ w3/       witness.json of each witness (its log and its peers)
#   w1-secret/ ...    witness.key of each witness
#   monitor/          monitor.json, with the submitters.json and policy.txt
#                     it reads (relative paths)
# Everything but keys/ and log/submitters.json (the submitter registry, which
# operators edit) is rewritten on every run from the keys and the settings.
#
# Settings (environment):
#   CARELOG_BIN          directory with a built `carelog` CLI (default: built
#                        into a temporary directory with `go build`)
#   CARELOG_ORIGIN       the log's origin (default PROFILE.carelog.example/log);
#                        fixed by the log key once it exists
#   CARELOG_SUBMITTER    the demo submitter's name (default ehr.PROFILE.carelog.example)
#   local only:
#   CARELOG_HOST         address everything listens on (127.0.0.1)
#   CARELOG_LOG_PORT, CARELOG_WITNESS_PORTS ("7381 7382 7383"), CARELOG_MONITOR_PORT
#   CARELOG_MYSQL        DSN of the server without database (root@tcp(127.0.0.1:3306)/)
#   CARELOG_DB           database name (carelog_local)
#   CARELOG_MONITOR_STATE  the monitor's state directory (OUT/state/monitor)
#   kubernetes only:
#   CARELOG_TREE_ID      the Trillian tree made by kubernetes/bootstrap/createtree.yaml
#                        (0: the log creates one; only safe with a single replica)
set -euo pipefail

usage() { sed -n '2,/^set -e/p' "$0" | sed 's/^# \{0,1\}//; /^set -e/d' >&2; exit 2; }
[[ $# -eq 2 ]] || usage
profile=$1
out=$2
case "$profile" in local | compose | kubernetes) ;; *) usage ;; esac

repo=$(cd "$(dirname "$0")/.." && pwd)
say() { echo "gen-config.sh: $*" >&2; }
die() { say "$*"; exit 1; }

mkdir -p "$out"
out=$(cd "$out" && pwd)
umask 077
mkdir -p "$out/keys"

# The carelog CLI makes the keys.
carelog=""
if [[ -n "${CARELOG_BIN:-}" ]]; then
  carelog="$CARELOG_BIN/carelog"
  [[ -x "$carelog" ]] || die "CARELOG_BIN=$CARELOG_BIN has no carelog binary"
fi
clidir=""
trap '[[ -z "$clidir" ]] || rm -rf "$clidir"' EXIT
build_cli() {
  [[ -n "$carelog" ]] && return
  command -v go >/dev/null || die "Go is needed to build the carelog CLI (or set CARELOG_BIN)"
  clidir=$(mktemp -d)
  (cd "$repo" && go build -o "$clidir/carelog" ./cmd/carelog)
  carelog="$clidir/carelog"
}

domain="$profile.carelog.example"
origin_default=${CARELOG_ORIGIN:-$profile.carelog.example/log}
submitter=${CARELOG_SUBMITTER:-ehr.$domain}
witnesses=(w1 w2 w3)

# keygen ROLE NAME PREFIX: makes PREFIX.key and PREFIX.vkey unless they exist.
keygen() {
  local role=$1 name=$2 prefix=$3
  if [[ -f "$prefix.key" ]]; then
    return
  fi
  build_cli
  "$carelog" keygen --role "$role" --name "$name" --out "$prefix" >/dev/null
  say "made the $role key $name ($prefix.key)"
}
keyname() { local v; v=$(cat "$1"); echo "${v%%+*}"; }

keygen log "$origin_default" "$out/keys/log"
origin=$(keyname "$out/keys/log.vkey")
if [[ -n "${CARELOG_ORIGIN:-}" && "$origin" != "$CARELOG_ORIGIN" ]]; then
  die "keys/log.key is the key of origin $origin, not $CARELOG_ORIGIN: a log's key never changes; a new origin needs a new key (move $out/keys/log.* away)"
fi
for w in "${witnesses[@]}"; do
  keygen witness "$w.$domain" "$out/keys/$w"
done
keygen submitter "$submitter" "$out/keys/ehr"
submitter=$(keyname "$out/keys/ehr.vkey")
if [[ "$profile" != local && ! -f "$out/keys/db.password" ]]; then
  # Letters and digits only, so it needs no escaping in a DSN or a flag file.
  LC_ALL=C tr -dc 'A-Za-z0-9' </dev/urandom | head -c 32 >"$out/keys/db.password" || true
  say "made the database password (keys/db.password)"
fi

log_vkey=$(cat "$out/keys/log.vkey")
declare -A cosig name
for w in "${witnesses[@]}"; do
  cosig[$w]=$(cat "$out/keys/$w.cosig.vkey")
  name[$w]=$(keyname "$out/keys/$w.vkey")
done

# Where things are, per profile. *_url: how the others reach it; paths: where
# the files are as the process sees them.
declare -A wurl
case "$profile" in
local)
  host=${CARELOG_HOST:-127.0.0.1}
  read -r -a wports <<<"${CARELOG_WITNESS_PORTS:-7381 7382 7383}"
  [[ ${#wports[@]} -eq 3 ]] || die "CARELOG_WITNESS_PORTS needs three ports"
  log_url="http://$host:${CARELOG_LOG_PORT:-8080}"
  for i in 0 1 2; do wurl[${witnesses[$i]}]="http://$host:${wports[$i]}"; done
  monitor_listen="$host:${CARELOG_MONITOR_PORT:-8480}"
  monitor_state=${CARELOG_MONITOR_STATE:-$out/state/monitor}
  dsn="${CARELOG_MYSQL:-root@tcp(127.0.0.1:3306)/}${CARELOG_DB:-carelog_local}"
  secret_dir="$out/log-secret"
  public_dir="$out/log"
  ;;
compose)
  log_url="http://log:8080"
  for w in "${witnesses[@]}"; do wurl[$w]="http://$w:7380"; done
  monitor_listen=":8480"
  monitor_state=/var/lib/carelog-monitor
  db_host=mariadb:3306
  trillian="trillian-log-server:8090"
  secret_dir=/run/carelog
  public_dir=/etc/carelog
  ;;
kubernetes)
  log_url="http://carelog-log.carelog.svc.cluster.local:8080"
  for w in "${witnesses[@]}"; do wurl[$w]="http://carelog-witness.carelog-$w.svc.cluster.local:7380"; done
  monitor_listen=":8480"
  monitor_state=/var/lib/carelog-monitor
  db_host=mysql.carelog.svc.cluster.local:3306
  trillian="trillian-log-server.carelog.svc.cluster.local:8090"
  secret_dir=/run/carelog
  public_dir=/etc/carelog
  ;;
esac
if [[ "$profile" != local ]]; then
  dsn="carelog:$(cat "$out/keys/db.password")@tcp($db_host)/carelog"
fi

mkdir -p "$out/log" "$out/log-secret" "$out/monitor"

# The submitter registry: written once, then it is the operator's.
if [[ ! -f "$out/log/submitters.json" ]]; then
  not_after=$(date -u -d '+1 year' +%Y-%m-%dT%H:%M:%SZ 2>/dev/null || date -u -v+1y +%Y-%m-%dT%H:%M:%SZ)
  cat >"$out/log/submitters.json" <<EOF
{"submitters": [
  {"name": "$submitter",
   "keys": [{"vkey": "$(cat "$out/keys/ehr.vkey")", "not_after": "$not_after"}]}
]}
EOF
fi

{
  echo "# Witness policy of $origin: two of these three witnesses must cosign."
  for w in "${witnesses[@]}"; do
    echo "witness $w ${cosig[$w]} ${wurl[$w]}"
  done
  echo "group all3 2 ${witnesses[*]}"
  echo "quorum all3"
} >"$out/log/policy.txt"

cp "$out/keys/log.key" "$out/log-secret/log.key"
{
  echo "{"
  echo "  \"key\": \"$secret_dir/log.key\","
  echo "  \"submitters\": \"$public_dir/submitters.json\","
  echo "  \"policy\": \"$public_dir/policy.txt\","
  echo "  \"mysql\": \"$dsn\","
  if [[ "$profile" != local ]]; then
    echo "  \"trillian-log\": \"$trillian\","
  fi
  if [[ "$profile" == kubernetes ]]; then
    # Several replicas must not race to create the tree: pin it.
    echo "  \"tree-id\": ${CARELOG_TREE_ID:-0},"
  fi
  echo "  \"checkpoint-interval\": \"1s\","
  echo "  \"max-merge-delay\": \"1m\""
  echo "}"
} >"$out/log-secret/log.json"

if [[ "$profile" != local ]]; then
  mkdir -p "$out/trillian-secret"
  # Flags of trillian_log_server and trillian_log_signer (--config). Trillian
  # splits the file into words like a shell: no comments in it.
  echo "--mysql_uri=carelog:$(cat "$out/keys/db.password")@tcp($db_host)/carelog" >"$out/trillian-secret/trillian.cfg"
  # For the trillian-schema init step.
  cp "$out/keys/db.password" "$out/trillian-secret/db.password"
fi

for w in "${witnesses[@]}"; do
  mkdir -p "$out/$w" "$out/$w-secret"
  cp "$out/keys/$w.key" "$out/$w-secret/witness.key"
  {
    echo "{"
    echo "  \"logs\": ["
    echo "    {\"origin\": \"$origin\", \"key\": \"$log_vkey\", \"url\": \"$log_url\"}"
    echo "  ],"
    echo "  \"peers\": ["
    sep=""
    for p in "${witnesses[@]}"; do
      [[ "$p" == "$w" ]] && continue
      echo -n "$sep"
      echo -n "    {\"name\": \"${name[$p]}\", \"key\": \"${cosig[$p]}\", \"url\": \"${wurl[$p]}\"}"
      sep=$',\n'
    done
    echo
    echo "  ]"
    echo "}"
  } >"$out/$w/witness.json"
done

cp "$out/log/submitters.json" "$out/log/policy.txt" "$out/monitor/"
{
  echo "{"
  echo "  \"state_dir\": \"$monitor_state\","
  echo "  \"listen\": \"$monitor_listen\","
  echo "  \"logs\": ["
  echo "    {\"url\": \"$log_url\", \"origin\": \"$origin\", \"vkey\": \"$log_vkey\", \"policy_file\": \"policy.txt\"}"
  echo "  ],"
  echo "  \"witnesses\": ["
  sep=""
  for w in "${witnesses[@]}"; do
    echo -n "$sep"
    echo -n "    {\"name\": \"${name[$w]}\", \"vkey\": \"${cosig[$w]}\", \"url\": \"${wurl[$w]}\"}"
    sep=$',\n'
  done
  echo
  echo "  ],"
  echo "  \"submitters_file\": \"submitters.json\","
  echo "  \"merge_delay\": \"1m\","
  echo "  \"stale_after\": \"1h\","
  echo "  \"poll_interval\": \"10s\","
  echo "  \"rules\": {\"emergency\": true, \"key_validity\": true, \"snooping\": {\"max_patients\": 50, \"window\": \"1h\"}}"
  echo "}"
} >"$out/monitor/monitor.json"

# Public files are for everyone to read; secrets stay 0600.
chmod 0755 "$out" "$out/log" "$out/monitor" "${witnesses[@]/#/$out/}"
chmod 0644 "$out/log/"* "$out/monitor/"* "$out"/w?/witness.json "$out/keys/"*.vkey
say "wrote the $profile configuration of $origin to $out"
