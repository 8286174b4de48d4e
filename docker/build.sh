#!/usr/bin/env bash
# Build the Object2Vec image (in the spirit of the scikit example's build_and_push.sh; pushing is
# docker/push_to_ecr.py).
#
#   docker/build.sh [options] [-- extra `docker build` arguments]
#
# Options:
#   -t, --tag NAME[:TAG]    image name (default object2vec:latest; also tagged NAME:<git short sha>)
#   --base-image IMAGE      BASE_IMAGE build argument (default python:3.11-slim). When the default
#                           is not present locally, docker/make_base_image.sh makes it (no registry).
#   --torch-version V       TORCH_VERSION (default: the torch pin in requirements.txt)
#   --torch-index-url URL   TORCH_INDEX_URL (default https://download.pytorch.org/whl/cpu);
#                           e.g. https://download.pytorch.org/whl/cu126 with a CUDA --base-image
#   --torch-wheel FILE      use this torch wheel (copied into docker/wheels/)
#   --no-torch-wheel        do not hand a wheel to the build: install torch from the index inside it
#   --no-cache              pass --no-cache to docker build
#   -h, --help              this text
#
# With the default base image the CPU torch wheel is fetched once with the host's pip
# (`pip download --no-deps`) into docker/wheels/ (git-ignored), and handed to the build.
# Builds use --network host (our dockerd runs with --bridge none).
#
# BuildKit builds when a client can: one with the buildx plugin (Docker Engine/Desktop packages), or
# a client older than 23 (Debian 12's docker.io), which uses the engine's own BuildKit when
# DOCKER_BUILDKIT=1. The first such `docker` on PATH is used. Otherwise the legacy builder builds
# and the builder stage's image (1.9 GB, untagged) is removed afterwards, so no build leaves one.
# Environment: DOCKER (the client to use; no other is tried).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
die() { echo "build.sh: $*" >&2; exit 2; }

default_base=python:3.11-slim
tag=object2vec:latest
base_image=$default_base
torch_version=$(sed -n -E 's/^torch==([^ ;#]+).*/\1/p' requirements.txt | head -n 1)
torch_index_url=https://download.pytorch.org/whl/cpu
torch_wheel=
prefetch=auto
extra=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        -t|--tag) tag="${2:?}"; shift 2 ;;
        --base-image) base_image="${2:?}"; shift 2 ;;
        --torch-version) torch_version="${2:?}"; shift 2 ;;
        --torch-index-url) torch_index_url="${2:?}"; shift 2 ;;
        --torch-wheel) torch_wheel="${2:?}"; shift 2 ;;
        --no-torch-wheel) prefetch=no; shift ;;
        --no-cache) extra+=(--no-cache); shift ;;
        -h|--help) usage; exit 0 ;;
        --) shift; extra+=("$@"); break ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
[[ -n "$torch_version" ]] || die "no torch version: pass --torch-version"
# Whether a client builds with BuildKit: buildx, or the built-in BuildKit client of versions < 23.
with_buildkit() {
    "$1" buildx version >/dev/null 2>&1 && return 0
    local major
    major=$("$1" --version 2>/dev/null | sed -n -E 's/^Docker version ([0-9]+)\..*/\1/p')
    [[ -n "$major" && "$major" -lt 23 ]]
}
if [[ -n "${DOCKER:-}" ]]; then
    clients=("$DOCKER")
else
    mapfile -t clients < <(type -ap docker | while read -r c; do readlink -f "$c"; done | awk '!seen[$0]++')
    [[ ${#clients[@]} -gt 0 ]] || die "no docker client on PATH"
fi
docker_cmd=${clients[0]}
builder=legacy
for client in "${clients[@]}"; do
    if with_buildkit "$client"; then
        docker_cmd=$client
        builder=buildkit
        break
    fi
done
"$docker_cmd" info >/dev/null 2>&1 || die "no Docker engine answers (DOCKER_HOST=${DOCKER_HOST:-unset})"

if [[ "$base_image" == "$default_base" ]]; then
    docker/make_base_image.sh "$base_image"
fi

# The torch wheel handed to the build, as a file name inside docker/wheels/.
wheel_dir=docker/wheels
mkdir -p "$wheel_dir"
wheel_arg=
if [[ -n "$torch_wheel" ]]; then
    [[ -f "$torch_wheel" ]] || die "no such wheel: $torch_wheel"
    if [[ "$(cd "$(dirname "$torch_wheel")" && pwd)" != "$(cd "$wheel_dir" && pwd)" ]]; then
        cp -f "$torch_wheel" "$wheel_dir/"
    fi
    wheel_arg=$(basename "$torch_wheel")
elif [[ "$prefetch" == auto && "$base_image" == "$default_base" && "$(uname -s)" == Linux ]]; then
    # python:3.11-slim: a cp311 wheel for this machine's architecture.
    find_wheel() { compgen -G "$wheel_dir/torch-${torch_version}[-+]*cp311-cp311-*linux*_$(uname -m).whl" | head -n 1 || true; }
    found=$(find_wheel)
    if [[ -z "$found" ]]; then
        pip_python=python3
        [[ -x .venv/bin/python ]] && pip_python=.venv/bin/python
        echo "build.sh: fetching torch==$torch_version (cp311, $torch_index_url) into $wheel_dir"
        "$pip_python" -m pip download --retries 1 --timeout 15 --no-deps --only-binary=:all: --python-version 3.11 \
            --index-url "$torch_index_url" -d "$wheel_dir" "torch==$torch_version" \
            || echo "build.sh: could not fetch the wheel on the host; the build installs torch from the index" >&2
        found=$(find_wheel)
    fi
    [[ -n "$found" ]] && wheel_arg=$(basename "$found")
fi
echo "build.sh: torch ${wheel_arg:-$torch_version from $torch_index_url}"

name="${tag%:*}"
[[ "$tag" == *:* && "${tag##*:}" != */* ]] || { name="$tag"; tag="$tag:latest"; }
tags=(-t "$tag")
names=("$tag")
if sha=$(git rev-parse --short HEAD 2>/dev/null); then
    tags+=(-t "$name:$sha")
    names+=("$name:$sha")
fi

build_args=(
    --network host
    --build-arg "BASE_IMAGE=$base_image"
    --build-arg "TORCH_VERSION=$torch_version"
    --build-arg "TORCH_INDEX_URL=$torch_index_url"
    --build-arg "TORCH_WHEEL=$wheel_arg"
)
start=$SECONDS
if [[ "$builder" == buildkit ]]; then
    echo "build.sh: building with BuildKit ($docker_cmd)"
    DOCKER_BUILDKIT=1 "$docker_cmd" build "${tags[@]}" "${build_args[@]}" "${extra[@]}" .
else
    echo "build.sh: no client here builds with BuildKit (install the buildx plugin); using the legacy builder" >&2
    DOCKER_BUILDKIT=0 "$docker_cmd" build "${tags[@]}" "${build_args[@]}" "${extra[@]}" .
    # The legacy builder keeps the builder stage as an untagged image: all cache hits now, so this
    # only names it. Removed unless something tagged it.
    stage=$(DOCKER_BUILDKIT=0 "$docker_cmd" build -q --target builder "${build_args[@]}" . 2>/dev/null) || stage=
    if [[ -n "$stage" && -z "$("$docker_cmd" image inspect -f '{{join .RepoTags ""}}' "$stage" 2>/dev/null)" ]]; then
        "$docker_cmd" rmi "$stage" >/dev/null && echo "build.sh: removed the builder stage image ${stage#sha256:}"
    fi
fi
size=$("$docker_cmd" image inspect -f '{{.Size}}' "$tag")
echo "build.sh: built ${names[*]} in $((SECONDS - start)) s; size $((size / 1000000)) MB"
