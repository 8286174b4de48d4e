#!/usr/bin/env bash
# Send a request to the server that serve_local.sh started (in Docker or not: it is plain HTTP).
#
#   local_test/predict.sh                      the first 5 records of test_dir's test channel,
#                                              as application/jsonlines (one answer line each)
#   local_test/predict.sh FILE [CONTENT_TYPE]  POST FILE; the content type defaults from its
#                                              extension: .json -> application/json, else
#                                              application/jsonlines
#
# Environment: PORT (default 8080), HOST (default 127.0.0.1), ACCEPT (default: the content type).
# Example JSON body: {"instances": [{"in0": [1, 2], "in1": [3]}]} -> {"predictions": [{"scores": [...]}]}
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0; fi
url="http://${HOST:-127.0.0.1}:${PORT:-8080}/invocations"

if [[ $# -ge 1 ]]; then
    payload="$1"
    case "$payload" in
        *.json) default_type=application/json ;;
        *) default_type=application/jsonlines ;;
    esac
    content_type="${2:-$default_type}"
else
    payload=$(mktemp)
    trap 'rm -f "$payload"' EXIT
    head -n 5 "$here/test_dir/input/data/test/test.jsonl" >"$payload"
    content_type=application/jsonlines
fi
accept="${ACCEPT:-$content_type}"

if command -v curl >/dev/null; then
    curl --fail-with-body -sS --data-binary "@$payload" -H "Content-Type: $content_type" -H "Accept: $accept" "$url"
    [[ "$accept" == application/jsonlines ]] || echo  # JSON Lines answers end with a newline already
else
    python3 - "$url" "$payload" "$content_type" "$accept" <<'PY'
import sys
import urllib.request

url, payload, content_type, accept = sys.argv[1:5]
with open(payload, "rb") as body:
    request = urllib.request.Request(url, data=body.read(), headers={"Content-Type": content_type, "Accept": accept})
with urllib.request.urlopen(request, timeout=70) as response:
    print(response.read().decode(), end="" if accept == "application/jsonlines" else "\n")
PY
fi
