#!/usr/bin/env bash
# Serve the model in local_test/test_dir/model as SageMaker would (only /opt/ml/model is given).
#
#   local_test/serve_local.sh [IMAGE]        in the image (default $IMAGE or object2vec:latest):
#                                            docker run -v local_test/test_dir/model:/opt/ml/model IMAGE serve
#   local_test/serve_local.sh --no-docker    the same program without Docker (or LOCAL_MODE=python):
#                                            SAGEMAKER_BASE_DIR=local_test/test_dir python -m object2vec serve
#
# Listens on port $PORT (default 8080; passed as SAGEMAKER_BIND_TO_PORT). The container uses
# --network host, which works with any dockerd on Linux, including one started with --bridge none
# as .ci/run does; DOCKER_NETWORK=bridge publishes the port with -p instead (Docker Desktop).
# Other settings pass through: MODEL_SERVER_WORKERS, MODEL_SERVER_TIMEOUT, SAGEMAKER_BATCH, ...
# Stop it with Ctrl-C. Then try local_test/predict.sh.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
mode="${LOCAL_MODE:-docker}"
if [[ "${1:-}" == "--no-docker" ]]; then mode=python; shift; fi
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0; fi
image="${1:-${IMAGE:-object2vec:latest}}"
port="${PORT:-8080}"
[[ -f "$here/test_dir/model/model_config.json" ]] || { echo "serve_local.sh: no model yet: run local_test/train_local.sh first" >&2; exit 1; }

if [[ "$mode" == python ]]; then
    python="${PYTHON:-python3}"
    [[ -z "${PYTHON:-}" && -x "$root/.venv/bin/python" ]] && python="$root/.venv/bin/python"
    export SAGEMAKER_BASE_DIR="$here/test_dir"
    export PYTHONPATH="$root/container${PYTHONPATH:+:$PYTHONPATH}"
    SAGEMAKER_BIND_TO_PORT="$port" exec "$python" -m object2vec serve
fi
env_args=(-e "SAGEMAKER_BIND_TO_PORT=$port")
for name in MODEL_SERVER_WORKERS MODEL_SERVER_TIMEOUT SAGEMAKER_BATCH SAGEMAKER_BATCH_STRATEGY \
    SAGEMAKER_MAX_PAYLOAD_IN_MB SAGEMAKER_MAX_CONCURRENT_TRANSFORMS; do
    [[ -n "${!name:-}" ]] && env_args+=(-e "$name=${!name}")
done
if [[ "${DOCKER_NETWORK:-host}" == host ]]; then
    net_args=(--network host)
else
    net_args=(--network "$DOCKER_NETWORK" -p "$port:$port")
fi
exec docker run --rm "${net_args[@]}" "${env_args[@]}" -v "$here/test_dir/model:/opt/ml/model:ro" "$image" serve
