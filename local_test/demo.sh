#!/usr/bin/env bash
# The README's main command (`make demo`): train on the bundled sample without Docker, print the
# metrics, then serve the trained model, send one pair-scoring and one embedding request, print
# both responses with what they mean, and stop the server. Uses the `python` first on PATH (make
# puts .venv/bin there).
#
# Environment: DEMO_PORT, the loopback port the server listens on (default 8080). The demo checks
# it is free before training, and stops as soon as the server exits.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
export SAGEMAKER_BASE_DIR="$here/test_dir"
export PYTHONPATH="$root/container${PYTHONPATH:+:$PYTHONPATH}"
port="${DEMO_PORT:-8080}"

# A taken port is found now, not after training: serve would fail to bind it.
python - "$port" <<'PY'
import socket
import sys

port = sys.argv[1]
hint = "set DEMO_PORT to a free port, e.g. DEMO_PORT=8081 make demo"
if not port.isdigit() or not 1 <= int(port) <= 65535:
    sys.exit(f"demo: DEMO_PORT={port} is not a port number (1-65535): {hint}")
with socket.socket() as probe:
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds
    try:
        probe.bind(("0.0.0.0", int(port)))
    except OSError as err:
        sys.exit(f"demo: port {port} is not free ({err.strerror}): {hint}")
PY

echo "== train on $SAGEMAKER_BASE_DIR"
rm -f "$SAGEMAKER_BASE_DIR/output/failure" "$SAGEMAKER_BASE_DIR/output/success"
python -m object2vec train | tee "$SAGEMAKER_BASE_DIR/output/train.log" | grep -E "#(quality|throughput)_metric|Saved the model"

echo "== serve on 127.0.0.1:$port (log: $SAGEMAKER_BASE_DIR/output/serve.log)"
python - "$port" "$SAGEMAKER_BASE_DIR/output/serve.log" <<'PY'
import json
import os
import subprocess
import sys
import time
import urllib.request

port, log_path = sys.argv[1], sys.argv[2]
base = f"http://127.0.0.1:{port}"
START_TIMEOUT_S = 120  # one worker importing torch and loading the model, on a busy machine
TOPIC_WIDTH = 25  # local_test/make_sample.py: each of the 8 topics owns 25 of the 200 ids


def wait_until_ready(server: subprocess.Popen) -> None:
    """Until /ping answers 200; stops at once when the server exits (a port taken meanwhile, a bad model)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if server.poll() is not None:
            with open(log_path, errors="replace") as log:
                tail = "".join(log.readlines()[-15:])
            sys.exit(f"demo: serve exited with code {server.returncode} before answering /ping. End of {log_path}:\n{tail}")
        try:
            with urllib.request.urlopen(base + "/ping", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            sys.exit(f"demo: serve did not answer /ping within {START_TIMEOUT_S} s: see {log_path}")
        time.sleep(0.3)


def invoke(payload: dict) -> dict:
    request = urllib.request.Request(
        base + "/invocations",
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        text = response.read().decode()
    print("   response:", text)
    return json.loads(text)


def topics(ids: list[int]) -> str:
    return "/".join(str(topic) for topic in sorted({token // TOPIC_WIDTH for token in ids}))


environment = {**os.environ, "SAGEMAKER_BIND_TO_PORT": port, "MODEL_SERVER_WORKERS": "1"}
with open(log_path, "wb") as log:
    server = subprocess.Popen(["python", "-m", "object2vec", "serve"], env=environment, stdout=log, stderr=log)
try:
    wait_until_ready(server)
    pairs = {"instances": [{"in0": [1, 2, 3, 4], "in1": [5, 6, 7]}, {"in0": [30, 31, 32], "in1": [180, 181, 182]}]}
    print("== pair scoring request:", json.dumps(pairs))
    answer = invoke(pairs)
    print("   scores = [P(class 0), P(class 1)]; in the sample, class 1 means in0 and in1 share a topic")
    print(f"   (each of its 8 topics owns {TOPIC_WIDTH} ids: topic 0 = ids 0-24, topic 1 = 25-49, ...):")
    for instance, prediction in zip(pairs["instances"], answer["predictions"], strict=True):
        same = prediction["scores"][1]
        print(f"   in0 {instance['in0']} (topic {topics(instance['in0'])}), in1 {instance['in1']} "
              f"(topic {topics(instance['in1'])}): P(same topic) = {same:.3f}")
    single = {"instances": [{"in0": [1, 2, 3, 4]}]}
    print("== embedding request:", json.dumps(single))
    answer = invoke(single)
    vector = answer["predictions"][0]["embeddings"]
    print(f"   in0 alone: its {len(vector)}-value embedding (enc_dim) from encoder 0, to compare objects by cosine")
finally:
    print("== stopping the server")
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
PY
