#!/usr/bin/env bash
# Makes the keys (first run only) and the configs that compose.yaml mounts,
# in deployments/compose/config/ (or CONFIG_DIR). Needs Go, to build the
# carelog CLI that makes the keys (or CARELOG_BIN, a directory holding it).
#
#   deployments/compose/gen-config.sh
#
# config/keys/ is the only copy of the keys and the database password: back
# it up. See deployments/gen-config.sh for the layout and the settings.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
exec "$here/../gen-config.sh" compose "${CONFIG_DIR:-$here/config}"
