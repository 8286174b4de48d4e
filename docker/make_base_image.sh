#!/usr/bin/env bash
# Make a local stand-in for python:3.11-slim from Debian packages, for machines that cannot pull
# from a container registry (our CI and development machines). Used only when no image of that
# name is present, unless --force is given.
#
#   docker/make_base_image.sh [--force] [IMAGE_NAME]      (default IMAGE_NAME: python:3.11-slim)
#
# mmdebstrap builds a minbase Debian bookworm root with python3 (3.11), pip and venv; the host's
# extra CA certificates are added, so that pip inside `docker build` trusts the same TLS setup
# as the host; then the root is piped into `docker import`. The result differs from the official
# image in one way that matters to us: Python lives in /usr/bin, not /usr/local/bin.
# Environment: DEBIAN_MIRROR, DEBIAN_SECURITY_MIRROR (default: the mirrors in the host's apt
# sources, else deb.debian.org), DOCKER (default: docker).
set -euo pipefail

force=0
if [[ "${1:-}" == "--force" ]]; then force=1; shift; fi
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0; fi
image="${1:-python:3.11-slim}"
docker_cmd="${DOCKER:-docker}"

if [[ $force -eq 0 ]] && "$docker_cmd" image inspect "$image" >/dev/null 2>&1; then
    echo "make_base_image: $image is already present; nothing to do (use --force to remake it)"
    exit 0
fi
command -v mmdebstrap >/dev/null || { echo "make_base_image: mmdebstrap is missing (apt-get install mmdebstrap)" >&2; exit 1; }

# The first Debian and Debian-security URIs in the host's apt sources (one-line or deb822 style).
host_uri() {
    local pattern="$1"
    cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | grep -oE 'https?://[^ ]+' | grep -E "$pattern" | head -n 1 || true
}
mirror="${DEBIAN_MIRROR:-$(host_uri '/debian/?$')}"
mirror="${mirror:-http://deb.debian.org/debian}"
security="${DEBIAN_SECURITY_MIRROR:-$(host_uri '/debian-security/?$')}"
security="${security:-http://deb.debian.org/debian-security}"

extra_certs=(/usr/local/share/ca-certificates/*.crt)
[[ -e "${extra_certs[0]}" ]] || extra_certs=()

echo "make_base_image: building $image from $mirror (bookworm, minbase) with ${#extra_certs[@]} extra CA certificate(s)"
start=$SECONDS
# Docs, man pages and translations are left out (as in a slim image); copyright files stay.
mmdebstrap --variant=minbase --format=tar \
    --include=python3,python3-pip,python3-venv,ca-certificates,netbase,tzdata \
    --aptopt='APT::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --customize-hook='mkdir -p "$1/usr/local/share/ca-certificates"' \
    ${extra_certs[@]:+--customize-hook="cp ${extra_certs[*]} \"\$1/usr/local/share/ca-certificates/\""} \
    --customize-hook='chroot "$1" update-ca-certificates --fresh >/dev/null' \
    --customize-hook='rm -f "$1"/usr/lib/python3.*/EXTERNALLY-MANAGED' \
    --customize-hook='ln -sf /usr/bin/python3 "$1/usr/local/bin/python"; ln -sf /usr/bin/pip3 "$1/usr/local/bin/pip"' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin "$1"/var/log/*.log "$1"/tmp/*' \
    bookworm - \
    "deb $mirror bookworm main" "deb $mirror bookworm-updates main" "deb $security bookworm-security main" \
    | "$docker_cmd" import \
        -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        -c 'ENV LANG=C.UTF-8' \
        -c 'CMD ["python3"]' \
        -c 'LABEL org.opencontainers.image.description="Local stand-in for python:3.11-slim (mmdebstrap, Debian bookworm)"' \
        - "$image"
echo "make_base_image: $image ready in $((SECONDS - start)) s"
