# Object2Vec for SageMaker: one image, run as `docker run IMAGE train` and `docker run IMAGE serve`.
#
# Build with docker/build.sh (it hands the CPU torch wheel to the build and tags the image), or:
#   docker build --network host -t object2vec:latest .
# Build arguments:
#   BASE_IMAGE       default python:3.11-slim. For GPU instances use a CUDA runtime image that is
#                    nvidia-docker compatible (CUDA toolkit, no driver), e.g.
#                    nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04; Python is installed when missing.
#   TORCH_WHEEL      a torch wheel's file name in docker/wheels/ (build.sh fills it); if empty, torch
#                    is installed from TORCH_INDEX_URL.
#   TORCH_VERSION    default 2.13.0 (as pinned in requirements.txt).
#   TORCH_INDEX_URL  default https://download.pytorch.org/whl/cpu (the CPU build; a plain
#                    `pip install torch` would fetch the CUDA build, several GB). For GPU:
#                    https://download.pytorch.org/whl/cu126 together with a CUDA BASE_IMAGE.
ARG BASE_IMAGE=python:3.11-slim

# ---- base: Python 3 with venv, whatever BASE_IMAGE is ---------------------------------------
FROM ${BASE_IMAGE} AS base
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# python:3.11-slim has Python; a CUDA base image has none. Package versions come from the base's
# own release, so they are not pinned here.
# hadolint ignore=DL3008
RUN if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then \
        apt-get update \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
            python3 python3-venv ca-certificates \
        && rm -rf /var/lib/apt/lists/*; \
    fi

# ---- builder: compile sagemaker-training's C extension and fill /opt/venv -------------------
FROM base AS builder
# gcc and the Python headers only live here (sagemaker-training is an sdist with a C extension).
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends gcc libc6-dev \
    && if [ ! -f "$(python3 -c 'import sysconfig; print(sysconfig.get_path("include"))')/Python.h" ]; then \
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-dev; \
    fi \
    && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PATH=/opt/venv/bin:$PATH
RUN python3 -m venv /opt/venv

# torch first, alone: the largest and slowest layer, reused while requirements.txt changes.
# docker/wheel[s] matches nothing when the folder is absent, so a plain `docker build` works.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_WHEEL=
COPY requirements.txt docker/wheel[s] /tmp/build/
RUN if [ -n "${TORCH_WHEEL}" ]; then \
        pip install "/tmp/build/${TORCH_WHEEL}"; \
    else \
        pip install --index-url "${TORCH_INDEX_URL}" --extra-index-url https://pypi.org/simple \
            "torch==${TORCH_VERSION}"; \
    fi
# The rest of the pinned requirements (torch is already there, maybe at another version).
RUN grep -v -E '^torch([=<>~! ]|$)' /tmp/build/requirements.txt > /tmp/build/requirements-notorch.txt \
    && pip install -r /tmp/build/requirements-notorch.txt \
    && pip check \
    && find /opt/venv -depth -type d -name tests -path '*/site-packages/*/tests' -prune -exec rm -rf {} + \
    && rm -rf /tmp/build

# The algorithm itself, importable from the venv without installing it (a .pth entry).
COPY container/object2vec /opt/object2vec/object2vec
RUN echo /opt/object2vec > "$(python3 -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/object2vec.pth" \
    && python3 -m compileall -q /opt/object2vec

# ---- final image -------------------------------------------------------------------------
FROM base
LABEL org.opencontainers.image.title="object2vec" \
      org.opencontainers.image.description="SageMaker-compatible Object2Vec in PyTorch: train and serve" \
      com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true
# nginx in front of gunicorn (container/object2vec/serving/nginx.py): it reads every request whole,
# so slow clients never hold a model worker. Debian's nginx (the core of nginx-light, about 3 MB);
# policy-rc.d keeps its package scripts from starting the service during the build.
# hadolint ignore=DL3008
RUN printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d \
    && chmod 755 /usr/sbin/policy-rc.d \
    && apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx \
    && rm -f /usr/sbin/policy-rc.d /etc/nginx/sites-enabled/default \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* /var/log/apt /var/log/dpkg.log
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /opt/object2vec /opt/object2vec
COPY docker/program/train docker/program/serve /opt/program/
# /opt/program comes first: sagemaker-training's own `train` console script in /opt/venv/bin must lose.
# Unbuffered output: the #quality_metric lines reach the logs (and SageMaker's regexes) at once.
ENV PATH=/opt/program:/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=TRUE \
    PYTHONDONTWRITEBYTECODE=1 \
    LANG=C.UTF-8
RUN chmod 755 /opt/program/train /opt/program/serve \
    && python -c 'import object2vec, torch, sagemaker_training' \
    && nginx -v \
    && test "$(command -v train)" = /opt/program/train \
    && test "$(command -v serve)" = /opt/program/serve
WORKDIR /opt/program
EXPOSE 8080
# No ENTRYPOINT: SageMaker's `train`/`serve` argument is the command itself (exec form, no shell).
# With no argument (e.g. SDK v3 ModelTrainer without a container entrypoint) the image trains.
CMD ["train"]
