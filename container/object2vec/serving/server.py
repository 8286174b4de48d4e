"""`serve`: gunicorn serving the Flask app, configured for SageMaker's inference contract.

- Listens on 0.0.0.0:SAGEMAKER_BIND_TO_PORT (default 8080), no nginx in front: gunicorn's sync
  workers answer SageMaker's front end directly.
- Workers default to the cores this container may use (MODEL_SERVER_WORKERS overrides); each sets
  torch to cores // workers threads (at least 1), so workers x threads <= cores.
- Each worker loads the model and runs a smoke inference when it starts (object2vec.serving.wsgi);
  it accepts connections only after that, so /ping answers 200 only from a worker that can
  predict. A worker that cannot load the model stops the server (gunicorn's boot error).
- timeout: 60 s for endpoints (InvokeEndpoint's limit), 600 s in batch transform (the default
  InvocationsTimeoutInSeconds); MODEL_SERVER_TIMEOUT overrides. Gunicorn also applies it to a
  worker's start-up, model load included.
- SIGTERM stops gracefully: requests in flight get GRACEFUL_TIMEOUT_S (20 s), well inside the
  30 s before SageMaker's SIGKILL.

torch is imported only in the workers, after the fork: the arbiter stays small and no OpenMP
thread pool is forked.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
from collections.abc import Callable, Sequence
from typing import Any

from object2vec.serving.settings import ServerSettings
from object2vec.threads import free_cores

logger = logging.getLogger(__name__)

WSGI_MODULE = "object2vec.serving.wsgi"
THREADS_ENV = "OBJECT2VEC_TORCH_THREADS"  # set by serve for the workers


def gunicorn_options(settings: ServerSettings) -> dict[str, Any]:
    """Every gunicorn setting `serve` uses (also what docker/gunicorn.conf.py loads)."""
    return {
        "bind": [f"0.0.0.0:{settings.port}"],
        "workers": settings.workers,
        "worker_class": "sync",  # CPU-bound forwards: one request at a time per worker
        "timeout": settings.timeout_s,
        "graceful_timeout": settings.graceful_timeout_s,
        "keepalive": 5,
        "preload_app": False,  # one model per worker, loaded after the fork
        "post_fork": post_fork,
        "worker_tmp_dir": "/dev/shm" if os.path.isdir("/dev/shm") else None,  # heartbeat off overlayfs
        "control_socket_disable": True,  # no ~/.gunicorn socket: nothing outside the container drives it
        "accesslog": None,  # per-request lines cost latency; errors are logged by the app
        "errorlog": "-",
        "loglevel": "info",
        "proc_name": "object2vec-serve",
    }


def post_fork(server: Any, worker: Any) -> None:
    """In each worker, before the app loads: bound torch's thread pools."""
    # Until the worker installs its own handlers (after this hook), it still has the master's,
    # which only queue the signal for the master: a SIGTERM during the torch import below would
    # be lost and `docker stop` would wait out the graceful timeout. The default action ends a
    # worker stopped this early at once.
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        signal.signal(signum, signal.SIG_DFL)
    threads = int(os.environ.get(THREADS_ENV) or 1)
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass


def load_wsgi_app() -> Callable[..., Any]:
    """Import the WSGI seam, which loads the model; runs in each worker."""
    return importlib.import_module(WSGI_MODULE).app


def serve_main(argv: Sequence[str]) -> int:
    """`python -m object2vec serve` (the image's `serve`): run gunicorn until it is stopped."""
    from gunicorn.app.base import BaseApplication

    from object2vec.cli import configure_logging

    configure_logging()
    if argv:
        logger.warning("Ignoring arguments after 'serve': %s", " ".join(argv))
    settings = ServerSettings.from_env(free=free_cores())  # threads per worker: as training sizes them
    os.environ[THREADS_ENV] = str(settings.threads_per_worker)
    # Also bounds OpenMP/MKL pools created before post_fork runs (inherited by the workers).
    os.environ.setdefault("OMP_NUM_THREADS", str(settings.threads_per_worker))
    logger.info(
        "Serving on 0.0.0.0:%d with %d worker(s) x %d torch thread(s), timeout %d s, graceful %d s",
        settings.port,
        settings.workers,
        settings.threads_per_worker,
        settings.timeout_s,
        settings.graceful_timeout_s,
    )

    class _Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for name, value in gunicorn_options(settings).items():
                self.cfg.set(name, value)

        def load(self) -> Callable[..., Any]:
            return load_wsgi_app()

    try:
        _Server(prog="serve").run()
    except SystemExit as exit_:  # gunicorn exits through sys.exit: report its code
        code = exit_.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0
