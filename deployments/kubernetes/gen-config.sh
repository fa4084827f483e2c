#!/usr/bin/env bash
# Makes the keys (first run only) and the configs that kustomization.yaml
# turns into Secrets and ConfigMaps, in deployments/kubernetes/generated/
# (or CONFIG_DIR). Needs Go, to build the carelog CLI that makes the keys
# (or CARELOG_BIN, a directory holding it).
#
#   deployments/kubernetes/gen-config.sh                      # before the tree exists
#   CARELOG_TREE_ID=<id> deployments/kubernetes/gen-config.sh # after bootstrap/createtree.yaml
#
# generated/keys/ is the only copy of the keys and the database password:
# back it up, and keep it out of version control. See deployments/gen-config.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
exec "$here/../gen-config.sh" kubernetes "${CONFIG_DIR:-$here/generated}"
