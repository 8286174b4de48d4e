#!/usr/bin/env bash
# Train on local_test/test_dir exactly as SageMaker would: test_dir is mounted as /opt/ml.
#
#   local_test/train_local.sh [IMAGE]        in the image (default $IMAGE or object2vec:latest):
#                                            docker run -v local_test/test_dir:/opt/ml IMAGE train
#   local_test/train_local.sh --no-docker    the same program without Docker (or LOCAL_MODE=python):
#                                            SAGEMAKER_BASE_DIR=local_test/test_dir python -m object2vec train
#
# The model lands in test_dir/model/, and test_dir/output/ gets `success` or `failure`.
# Without Docker it uses the project's .venv python when present, else python3 ($PYTHON overrides).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
mode="${LOCAL_MODE:-docker}"
if [[ "${1:-}" == "--no-docker" ]]; then mode=python; shift; fi
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0; fi
image="${1:-${IMAGE:-object2vec:latest}}"

# A fresh run: no model or status files from the previous one.
find "$here/test_dir/model" -mindepth 1 ! -name .gitkeep -delete
rm -f "$here/test_dir/output/failure" "$here/test_dir/output/success"

if [[ "$mode" == python ]]; then
    python="${PYTHON:-python3}"
    [[ -z "${PYTHON:-}" && -x "$root/.venv/bin/python" ]] && python="$root/.venv/bin/python"
    export SAGEMAKER_BASE_DIR="$here/test_dir"
    export PYTHONPATH="$root/container${PYTHONPATH:+:$PYTHONPATH}"
    exec "$python" -m object2vec train
fi
# exec: Ctrl-C / SIGTERM go to docker run, which passes them to the container (like StopTrainingJob).
# SageMaker runs as root; a non-root caller gets files it owns in test_dir (the image allows both).
user_args=()
[[ "$(id -u)" != 0 ]] && user_args=(--user "$(id -u):$(id -g)")
exec docker run --rm "${user_args[@]}" -v "$here/test_dir:/opt/ml" "$image" train
