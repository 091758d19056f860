#!/usr/bin/env bash
# The knowledge base in one minute, no root, no GPU: three short Chinese
# policy documents with different access lists, two tokens, and the same
# question asked as each. The hr token finds the salary policy; the staff
# token gets only what everyone may read, and no hint that more exists.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
work=$(mktemp -d /tmp/qwen-appliance-kb-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT
go build -o "$work/qa" ./cmd/qwen-appliance
QA=$work/qa
docs=scripts/demo-kb
db=(--db "$work/store/kb/kb.db" --audit-log "$work/audit.log")

step "tokens: hr-bot (roles hr, clearance secret) and staff (no roles, public)"
hr=$("$QA" tokens create --file "$work/tokens.json" --name hr-bot --role user --roles hr --clearance secret --json | sed -n 's/.*"id": "\([0-9a-f]*\)".*/\1/p' | head -1)
staff=$("$QA" tokens create --file "$work/tokens.json" --name staff --role user --json | sed -n 's/.*"id": "\([0-9a-f]*\)".*/\1/p' | head -1)
"$QA" tokens list --file "$work/tokens.json"

step "ingest: salary policy for hr only (secret), leave and expenses for everyone (public)"
"$QA" kb ingest "${db[@]}" "$docs/薪酬制度.md" --allow role:hr --class secret
"$QA" kb ingest "${db[@]}" "$docs/年假制度.md" "$docs/报销制度.html" --allow all --class public
"$QA" kb list --db "$work/store/kb/kb.db"

q='经理的年终奖金有多少？'
step "as hr-bot: $q"
"$QA" kb search "${db[@]}" "$q" --as-token "$hr" --tokens "$work/tokens.json" -k 3
step "as staff: $q"
"$QA" kb search "${db[@]}" "$q" --as-token "$staff" --tokens "$work/tokens.json" -k 3

step "the audit log: kb.* events in the hash chain, a keyed hash of each question, never its text"
grep -c '"kind":"kb.query"' "$work/audit.log"
"$QA" audit verify "$work/audit.log"
