#!/usr/bin/env bash
# A walk through the HTTP API of one node: state, a table, writes, a batch, a read of
# one's own writes, a Snowflake id. Every call must answer 2xx (curl --fail-with-body),
# so the script stops at the first refusal and shows its JSON error.
#
#   API=http://10.0.10.12:8080 TOKEN=change-me-api-token DB=myapp bash examples/api-walkthrough.sh
#
# API defaults to http://127.0.0.1:8080; without TOKEN the node must be on this host;
# DB (default test) is the schema the table is created in.
set -euo pipefail

api=${API:-http://127.0.0.1:8080}
db=${DB:-test}
auth=()
if [ -n "${TOKEN:-}" ]; then
  auth=(-H "Authorization: Bearer $TOKEN")
fi

call() {
  local path=$1 body=${2:-}
  echo "--- $path" >&2
  if [ -n "$body" ]; then
    curl -sS --fail-with-body "${auth[@]}" -H "Content-Type: application/json" -d "$body" "$api$path"
  else
    curl -sS --fail-with-body "${auth[@]}" "$api$path"
  fi
  echo
}

call /health
call /cluster
call /write/ddl "{\"ddl\": \"CREATE TABLE IF NOT EXISTS $db.walkthrough (id BIGINT PRIMARY KEY, item VARCHAR(40), qty INT)\"}"
id=$(call /id | sed -n 's/.*"id":"\([0-9]*\)".*/\1/p')
call /write/insert "{\"table\": \"$db.walkthrough\", \"values\": {\"id\": $id, \"item\": \"bolt\", \"qty\": 10}}"
call /write/update "{\"table\": \"$db.walkthrough\", \"set\": {\"qty\": 12}, \"where_key\": {\"id\": $id}}"
out=$(call /write/batch "{\"operations\": [
  {\"op\": \"upsert\", \"table\": \"$db.walkthrough\", \"values\": {\"id\": 1, \"item\": \"nut\", \"qty\": 5}},
  {\"op\": \"update\", \"table\": \"$db.walkthrough\", \"set\": {\"qty\": 13}, \"where_key\": {\"id\": $id}}]}")
echo "$out"
index=$(echo "$out" | sed -n 's/.*"log_index":\([0-9]*\).*/\1/p')
call /query "{\"sql\": \"SELECT item, qty FROM $db.walkthrough WHERE id = ?\", \"params\": [$id], \"min_index\": $index}"
call /write/delete "{\"table\": \"$db.walkthrough\", \"where_key\": {\"id\": 1}}"
echo "walkthrough done: row $id, log index $index" >&2
