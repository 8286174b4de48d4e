#!/usr/bin/env bash
# The README's main command (`make demo`): train on the bundled sample without Docker, print the
# metrics, then serve the trained model, send one pair-scoring and one embedding request, print
# both responses and stop the server. Uses the `python` first on PATH (make puts .venv/bin there).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
export SAGEMAKER_BASE_DIR="$here/test_dir"
export PYTHONPATH="$root/container${PYTHONPATH:+:$PYTHONPATH}"
port="${DEMO_PORT:-8080}"

echo "== train on $SAGEMAKER_BASE_DIR"
rm -f "$SAGEMAKER_BASE_DIR/output/failure" "$SAGEMAKER_BASE_DIR/output/success"
python -m object2vec train | tee "$SAGEMAKER_BASE_DIR/output/train.log" | grep -E "#(quality|throughput)_metric|Saved the model"

echo "== serve on 127.0.0.1:$port"
SAGEMAKER_BIND_TO_PORT="$port" MODEL_SERVER_WORKERS=1 python -m object2vec serve >"$SAGEMAKER_BASE_DIR/output/serve.log" 2>&1 &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT

python - "$port" <<'PY'
import json
import sys
import time
import urllib.request

base = f"http://127.0.0.1:{sys.argv[1]}"
deadline = time.monotonic() + 60
while True:
    try:
        with urllib.request.urlopen(base + "/ping", timeout=2) as response:
            if response.status == 200:
                break
    except OSError:
        pass
    if time.monotonic() > deadline:
        sys.exit("serve did not answer /ping within 60 s: see local_test/test_dir/output/serve.log")
    time.sleep(0.5)


def invoke(payload: dict) -> str:
    request = urllib.request.Request(
        base + "/invocations",
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read().decode()


pairs = {"instances": [{"in0": [1, 2, 3, 4], "in1": [5, 6, 7]}, {"in0": [30, 31, 32], "in1": [180, 181, 182]}]}
print("== pair scoring request:", json.dumps(pairs))
print("   response:", invoke(pairs))
single = {"instances": [{"in0": [1, 2, 3, 4]}]}
print("== embedding request:", json.dumps(single))
print("   response:", invoke(single))
PY
echo "== stopping the server"
