"""Serving settings read from the environment: a read-only snapshot taken when asked for.

Every environment variable `serve` reads is named here. SageMaker sets SAGEMAKER_BIND_TO_PORT
(inference pipelines only) and, in batch transform, SAGEMAKER_BATCH plus whichever of
SAGEMAKER_MAX_PAYLOAD_IN_MB, SAGEMAKER_BATCH_STRATEGY and SAGEMAKER_MAX_CONCURRENT_TRANSFORMS the
user gave CreateTransformJob. The MODEL_SERVER_* knobs follow the scikit bring-your-own example
(the SAGEMAKER_MODEL_SERVER_* spellings of the inference toolkit are read too).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

from object2vec.environment import available_cpus
from object2vec.record_format import JSONLINES
from object2vec.threads import thread_count

logger = logging.getLogger(__name__)

PORT_ENV = "SAGEMAKER_BIND_TO_PORT"
BATCH_ENV = "SAGEMAKER_BATCH"
MAX_PAYLOAD_ENV = "SAGEMAKER_MAX_PAYLOAD_IN_MB"
BATCH_STRATEGY_ENV = "SAGEMAKER_BATCH_STRATEGY"
MAX_CONCURRENT_TRANSFORMS_ENV = "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS"
DEFAULT_ACCEPT_ENV = "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT"
WORKERS_ENVS = ("MODEL_SERVER_WORKERS", "SAGEMAKER_MODEL_SERVER_WORKERS")
TIMEOUT_ENVS = ("MODEL_SERVER_TIMEOUT", "SAGEMAKER_MODEL_SERVER_TIMEOUT")
MAX_INSTANCES_ENV = "OBJECT2VEC_MAX_INSTANCES"
NGINX_ENV = "OBJECT2VEC_NGINX"  # auto (default), off, or the nginx binary: see serving/nginx.py

DEFAULT_PORT = 8080
MIB = 1 << 20
REALTIME_MAX_BODY_MB = 6  # InvokeEndpoint's Body limit is 6291456 bytes = 6 MiB
DEFAULT_MAX_PAYLOAD_MB = 6  # CreateTransformJob's default MaxPayloadInMB
MAX_PAYLOAD_MB = 100  # CreateTransformJob's upper bound; 0 (chunked streaming) is capped here too
BATCH_STRATEGIES = ("MULTI_RECORD", "SINGLE_RECORD")
# The API spells the enum MultiRecord/SingleRecord; both spellings map to the env-var one.
_STRATEGY_ALIASES = {"MULTIRECORD": "MULTI_RECORD", "SINGLERECORD": "SINGLE_RECORD"}
DEFAULT_MAX_INSTANCES = 1_000_000  # far above any 6 MB request; bounds batch memory too
REALTIME_TIMEOUT_S = 60  # InvokeEndpoint: "must respond to requests within 60 seconds"
BATCH_TIMEOUT_S = 600  # ModelClientConfig.InvocationsTimeoutInSeconds default
GRACEFUL_TIMEOUT_S = 20  # SageMaker sends SIGKILL 30 s after SIGTERM
SUPPORTED_ACCEPTS = ("application/json", JSONLINES)


def is_truthy(value: str | None) -> bool:
    """SageMaker sends "true", local mode "True": compare case-insensitively."""
    return (value or "").strip().lower() in ("true", "1", "yes")


@dataclass(frozen=True)
class ServingConfig:
    """What the Flask app needs: request limits and the batch-transform answers."""

    batch: bool = False  # SAGEMAKER_BATCH is truthy: a batch-transform job
    max_body_bytes: int = REALTIME_MAX_BODY_MB * MIB
    max_instances: int = DEFAULT_MAX_INSTANCES
    max_payload_mb: int = DEFAULT_MAX_PAYLOAD_MB  # /execution-parameters MaxPayloadInMB
    batch_strategy: str = "MULTI_RECORD"  # /execution-parameters BatchStrategy
    max_concurrent_transforms: int = 1  # /execution-parameters MaxConcurrentTransforms
    default_accept: str = "application/json"  # for a missing or */* Accept

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, workers: int | None = None) -> ServingConfig:
        env = os.environ if env is None else env
        batch = is_truthy(env.get(BATCH_ENV))
        max_payload_mb = _int_env(env, MAX_PAYLOAD_ENV, DEFAULT_MAX_PAYLOAD_MB, 0, MAX_PAYLOAD_MB)
        # A batch request may be as large as MaxPayloadInMB (0 = streamed: capped at the maximum).
        body_mb = (max_payload_mb or MAX_PAYLOAD_MB) if batch else REALTIME_MAX_BODY_MB
        strategy = env.get(BATCH_STRATEGY_ENV, "").strip().upper()
        strategy = _STRATEGY_ALIASES.get(strategy, strategy)
        if strategy not in BATCH_STRATEGIES:
            if strategy:
                logger.warning("Ignoring %s=%r: use MULTI_RECORD or SINGLE_RECORD", BATCH_STRATEGY_ENV, strategy)
            strategy = "MULTI_RECORD"
        # One request at a time per worker: more concurrent transforms would only queue.
        concurrency = workers if workers is not None else server_workers(env)
        default_accept = env.get(DEFAULT_ACCEPT_ENV, "application/json").split(";")[0].strip().lower()
        if default_accept not in SUPPORTED_ACCEPTS:
            logger.warning("Ignoring %s=%r: use one of %s", DEFAULT_ACCEPT_ENV, default_accept, SUPPORTED_ACCEPTS)
            default_accept = "application/json"
        return cls(
            batch=batch,
            max_body_bytes=body_mb * MIB,
            max_instances=_int_env(env, MAX_INSTANCES_ENV, DEFAULT_MAX_INSTANCES, 1, 10**8),
            max_payload_mb=max_payload_mb,
            batch_strategy=strategy,
            max_concurrent_transforms=_int_env(env, MAX_CONCURRENT_TRANSFORMS_ENV, concurrency, 1, 1024),
            default_accept=default_accept,
        )

    def too_large_message(self) -> str:
        """The 413 message, whether the app or nginx in front of it answers."""
        limit = "MaxPayloadInMB of this batch transform" if self.batch else "the real-time limit"
        return f"the body is larger than {self.max_body_bytes} bytes ({limit}): send fewer instances per request"

    def execution_parameters(self) -> dict[str, int | str]:
        return {
            "MaxConcurrentTransforms": self.max_concurrent_transforms,
            "BatchStrategy": self.batch_strategy,
            "MaxPayloadInMB": self.max_payload_mb,
        }


@dataclass(frozen=True)
class ServerSettings:
    """What gunicorn needs: where to listen, how many workers and threads, and timeouts."""

    port: int
    workers: int
    threads_per_worker: int  # torch intra-op threads at start: workers * threads <= cores
    timeout_s: int  # a request (or a worker's model load) running longer is killed
    graceful_timeout_s: int
    most_threads_per_worker: int = 1  # what a worker's ThreadGovernor may go up to: cores // workers

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, cores: int | None = None, free: float | None = None
    ) -> ServerSettings:
        """`free`: idle cores (threads.free_cores()), shared by the workers; None: all cores count."""
        env = os.environ if env is None else env
        cores = cores or available_cpus()
        workers = server_workers(env, cores)
        default_timeout = BATCH_TIMEOUT_S if is_truthy(env.get(BATCH_ENV)) else REALTIME_TIMEOUT_S
        timeout = _int_env(env, _first_set(env, TIMEOUT_ENVS), default_timeout, 1, 3600)
        return cls(
            port=_int_env(env, PORT_ENV, DEFAULT_PORT, 1, 65535),
            workers=workers,
            threads_per_worker=thread_count(max(1, cores // workers), env, None if free is None else free / workers),
            timeout_s=timeout,
            graceful_timeout_s=min(GRACEFUL_TIMEOUT_S, timeout),
            most_threads_per_worker=max(1, cores // workers),
        )


def server_workers(env: Mapping[str, str], cores: int | None = None) -> int:
    default = cores or available_cpus()
    return _int_env(env, _first_set(env, WORKERS_ENVS), default, 1, 256)


def _first_set(env: Mapping[str, str], names: tuple[str, ...]) -> str:
    return next((name for name in names if env.get(name, "").strip()), names[0])


def _int_env(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = lo - 1
    if not lo <= value <= hi:
        logger.warning("Ignoring %s=%r: must be an integer in [%d, %d]; using %d", name, raw, lo, hi, default)
        return default
    return value
