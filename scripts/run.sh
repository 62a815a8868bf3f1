#!/usr/bin/env bash
# Installs what is needed, builds, and starts xapid on its embedded
# defaults: the simulated hypervisor, the embedded SQLite database and a
# state directory under ./run/.  Prints how to connect, then runs in the
# foreground until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
bash scripts/build.sh
STATE=${XAPID_STATE:-$PWD/run}
HTTP_PORT=${XAPID_HTTP_PORT:-8080}
HTTPS_PORT=${XAPID_HTTPS_PORT:-8443}
mkdir -p "$STATE"
if [ ! -f "$STATE/root-password" ]; then
  head -c 12 /dev/urandom | base64 | tr -d '/+=' > "$STATE/root-password"
  chmod 600 "$STATE/root-password"
fi
PW=$(cat "$STATE/root-password")
cat <<MSG
xapid is starting with the sim hypervisor and embedded database ($STATE).
  XML-RPC:  http://127.0.0.1:$HTTP_PORT/      JSON-RPC: http://127.0.0.1:$HTTP_PORT/jsonrpc
  HTTPS:    https://127.0.0.1:$HTTPS_PORT/
  login:    root / $PW
  xe:       build/bin/xe -s 127.0.0.1 -p $HTTP_PORT --nossl -u root -pw $PW vm-list
MSG
exec build/bin/xapid --state-dir "$STATE" --bind 0.0.0.0 \
  --http-port "$HTTP_PORT" --https-port "$HTTPS_PORT" \
  --hypervisor sim --db sqlite --root-password-file "$STATE/root-password"
