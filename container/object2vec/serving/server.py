"""`serve`: nginx in front of gunicorn serving the Flask app, for SageMaker's inference contract.

    serve  (the image's PID 1: small, no torch; supervises the two below)
     ├─ nginx     0.0.0.0:SAGEMAKER_BIND_TO_PORT (default 8080); reads each request whole
     └─ gunicorn  on a unix socket; its sync workers each hold the model

- nginx (serving/nginx.py) keeps slow or stalled clients away from the workers, enforces the body
  limit and client timeouts, and answers its own errors as JSON. Without nginx (not installed, or
  OBJECT2VEC_NGINX=off) gunicorn listens on the port itself and everything works the same, except
  that a client sending slowly holds a worker for as long as it takes (a warning says so).
- Workers default to the cores this container may use (MODEL_SERVER_WORKERS overrides); each sets
  torch to cores // workers threads (at least 1), so workers x threads <= cores.
- Each worker loads the model and runs a smoke inference when it starts (object2vec.serving.wsgi);
  it accepts connections only after that, so /ping answers 200 only from a worker that can
  predict. A model that cannot be loaded stops `serve` with its error (exit 1), no traceback.
- timeout: 60 s for endpoints (InvokeEndpoint's limit), 600 s in batch transform (the default
  InvocationsTimeoutInSeconds); MODEL_SERVER_TIMEOUT overrides. Gunicorn also applies it to a
  worker's start-up, model load included.
- SIGTERM stops gracefully: gunicorn gets it and gives requests in flight GRACEFUL_TIMEOUT_S
  (20 s), nginx gets SIGQUIT and finishes the answers it is passing on, well inside the 30 s before
  SageMaker's SIGKILL; `serve` exits 0. If nginx or gunicorn ends by itself, `serve` stops the
  other and exits 1, saying why. The image starts `serve` with the stop signals blocked; they are
  unblocked once the handlers are in place (object2vec.startup), so none is lost.

torch is imported only in the workers, after gunicorn's fork: the arbiter stays small and no
OpenMP thread pool is forked.
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from object2vec.errors import Object2VecError
from object2vec.serving.settings import ServerSettings
from object2vec.startup import STOP_SIGNALS, unblock_stop_signals
from object2vec.threads import ThreadGovernor, free_cores

logger = logging.getLogger(__name__)

WSGI_MODULE = "object2vec.serving.wsgi"
THREADS_ENV = "OBJECT2VEC_TORCH_THREADS"  # set by serve for the workers
MOST_THREADS_ENV = "OBJECT2VEC_TORCH_THREADS_MOST"  # set by serve: the most a worker's governor may use
APP_LOAD_ERROR = 4  # gunicorn's exit code for "App failed to load" (Arbiter.APP_LOAD_ERROR)
WORKER_BOOT_ERROR = 3  # gunicorn's exit code for "Worker failed to boot"
EXIT_FAILED = 1
KILL_MARGIN_S = 10  # after the graceful timeout, what is still running is killed
POLL_S = 0.1


def gunicorn_options(settings: ServerSettings, bind: str | None = None) -> dict[str, Any]:
    """Every gunicorn setting `serve` uses (also what docker/gunicorn.conf.py loads).

    bind: where gunicorn listens; by default the port, on all interfaces (no nginx in front).
    Behind nginx (a unix socket) gunicorn's own request-line and header limits are lifted: nginx
    bounds them already, and answers in JSON, where gunicorn would answer some requests nginx
    passes (more than 100 headers, a 5 KB URI) with an HTML error."""
    behind_nginx = bind is not None and bind.startswith("unix:")
    limits = {"limit_request_line": 0, "limit_request_fields": 32768, "limit_request_field_size": 1 << 16}
    return {
        **(limits if behind_nginx else {}),
        "bind": [bind or f"0.0.0.0:{settings.port}"],
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


# The signals gunicorn's arbiter stops its workers with (SIGTERM graceful, SIGINT/SIGQUIT quick).
WORKER_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)


def hold_stop_signals_across_forks() -> None:
    """In gunicorn's arbiter: a worker never runs the arbiter's signal handlers.

    A new worker inherits the arbiter's handlers, which only queue a signal for the arbiter: a stop
    that reaches the worker before it installs its own (gunicorn's stop comes right after the
    fork when the signal arrived while it was spawning workers) would be lost, and the stop would
    wait out the whole graceful timeout for that worker. So the stop signals are blocked across
    each fork: the arbiter receives a held one right after, the worker sets the default action
    (a worker stopped before it serves simply ends) and only then unblocks, so a stop sent to it
    meanwhile ends it at once. Its own handlers replace the default once it starts serving."""
    os.register_at_fork(
        before=lambda: signal.pthread_sigmask(signal.SIG_BLOCK, WORKER_STOP_SIGNALS),
        after_in_parent=lambda: signal.pthread_sigmask(signal.SIG_UNBLOCK, WORKER_STOP_SIGNALS),
        after_in_child=_default_stop_then_unblock,
    )


def _default_stop_then_unblock() -> None:
    for signum in WORKER_STOP_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, WORKER_STOP_SIGNALS)


def post_fork(server: Any, worker: Any) -> None:
    """In each worker, before the app loads: bound torch's thread pools (its stop signals already
    have the default action: hold_stop_signals_across_forks)."""
    threads = int(os.environ.get(THREADS_ENV) or 1)
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass


def worker_governor() -> ThreadGovernor | None:
    """In a worker: the governor of its torch threads (as training has), where the worker may use
    more than one core and the user did not set OBJECT2VEC_THREADS; the predictor ticks it."""
    try:
        most = int(os.environ.get(MOST_THREADS_ENV) or 1)
    except ValueError:
        most = 1
    return ThreadGovernor.start(most)


def load_wsgi_app() -> Callable[..., Any]:
    """Import the WSGI seam, which loads the model; runs in each worker. A model that cannot be
    served is said once, without a traceback, and stops gunicorn ("App failed to load")."""
    try:
        return importlib.import_module(WSGI_MODULE).app
    except Object2VecError as err:
        logger.error("The model cannot be served: %s", err)
        raise SystemExit(APP_LOAD_ERROR) from None


def run_gunicorn(settings: ServerSettings, bind: str) -> int:
    """The gunicorn arbiter in this process, until it stops; its exit code."""
    from gunicorn.app.base import BaseApplication
    from gunicorn.errors import HaltServer

    class _Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for name, value in gunicorn_options(settings, bind).items():
                self.cfg.set(name, value)

        def load(self) -> Callable[..., Any]:
            return load_wsgi_app()

    hold_stop_signals_across_forks()
    try:
        _Server(prog="serve").run()
    except HaltServer as halt:  # every worker failed: gunicorn raises again while halting
        return int(halt.exit_status)
    except SystemExit as exit_:  # gunicorn exits through sys.exit: report its code
        code = exit_.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


def serve_main(argv: Sequence[str]) -> int:
    """`python -m object2vec serve` (the image's `serve`): run nginx and gunicorn until stopped."""
    from object2vec.logs import configure_logging
    from object2vec.serving.nginx import find_nginx
    from object2vec.serving.settings import ServingConfig

    supervisor = Supervisor()
    supervisor.listen()  # first: a SIGTERM from now on stops serve (see object2vec.startup)
    configure_logging()
    if argv:
        logger.warning("Ignoring arguments after 'serve': %s", " ".join(argv))
    settings = ServerSettings.from_env(free=free_cores())  # threads per worker: as training sizes them
    config = ServingConfig.from_env(workers=settings.workers)
    os.environ[THREADS_ENV] = str(settings.threads_per_worker)
    os.environ[MOST_THREADS_ENV] = str(settings.most_threads_per_worker)
    # Also bounds OpenMP/MKL pools created before post_fork runs (inherited by the workers).
    os.environ.setdefault("OMP_NUM_THREADS", str(settings.threads_per_worker))
    nginx = find_nginx()
    logger.info(
        "Serving on 0.0.0.0:%d %s with %d worker(s) x %d torch thread(s), timeout %d s, graceful %d s",
        settings.port,
        f"through {nginx}" if nginx else "from gunicorn directly",
        settings.workers,
        settings.threads_per_worker,
        settings.timeout_s,
        settings.graceful_timeout_s,
    )
    if nginx is None:
        logger.warning(
            "nginx is not installed (or OBJECT2VEC_NGINX=off): gunicorn answers clients itself, so a "
            "client that sends its request slowly holds a worker meanwhile; install nginx (Debian: "
            "nginx-light) to serve untrusted clients"
        )
    runtime_dir = Path(tempfile.mkdtemp(prefix="object2vec-serve-"))
    runtime_dir.chmod(0o755)  # nginx's workers run as another user when serve runs as root
    try:
        if supervisor.stopping:  # stopped while starting up: nothing to run
            return 0
        if nginx is None:
            supervisor.start_gunicorn(settings, f"0.0.0.0:{settings.port}")
        else:
            from object2vec.serving.nginx import nginx_config

            upstream = runtime_dir / "gunicorn.sock"
            supervisor.start_gunicorn(settings, f"unix:{upstream}")
            conf = runtime_dir / "nginx.conf"
            conf.write_text(nginx_config(settings, config, upstream, runtime_dir))
            supervisor.start_nginx(nginx, runtime_dir, conf, settings.port)
        return supervisor.wait(settings.graceful_timeout_s + KILL_MARGIN_S)
    finally:
        shutil.rmtree(runtime_dir, ignore_errors=True)


@dataclass
class Child:
    name: str  # "gunicorn" or "nginx"
    stop_signals: dict[int, int]  # the signal serve received -> the one this child stops on
    port: int


class Supervisor:
    """serve's own process: starts nginx and gunicorn, forwards stop signals, reaps every child
    (PID 1 inherits orphans), and stops the other when one ends by itself."""

    def __init__(self) -> None:
        self.children: dict[int, Child] = {}
        self.stopping = False
        self.stop_signal = signal.SIGTERM
        self.failure: str | None = None

    def listen(self) -> None:
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._handle)
        unblock_stop_signals()

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        logger.info("Received %s: stopping", signal.Signals(signum).name)
        self.stop(signum)

    def stop(self, signum: int) -> None:
        self.stopping = True
        self.stop_signal = signum
        for pid, child in list(self.children.items()):
            _kill(pid, child.stop_signals[signum])

    def start_gunicorn(self, settings: ServerSettings, bind: str) -> None:
        # Stop signals are held back across the fork: the child must not run serve's handlers.
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        pid = os.fork()
        if pid == 0:  # the child: gunicorn's arbiter, which installs its own handlers
            code = EXIT_FAILED
            try:
                for signum in STOP_SIGNALS:
                    signal.signal(signum, signal.SIG_DFL)
                unblock_stop_signals()
                code = run_gunicorn(settings, bind)
            except BaseException:  # noqa: BLE001 - reported here: this process ends with os._exit
                logger.exception("gunicorn failed")
            finally:
                logging.shutdown()
                os._exit(code)
        # gunicorn: SIGTERM is graceful, SIGINT quick
        self._started(pid, Child("gunicorn", {signal.SIGTERM: signal.SIGTERM, signal.SIGINT: signal.SIGINT}, 0))
        unblock_stop_signals()

    def start_nginx(self, nginx: str, runtime_dir: Path, conf: Path, port: int) -> None:
        argv = [nginx, "-p", str(runtime_dir), "-c", str(conf), "-e", "stderr"]
        try:
            pid = os.posix_spawn(nginx, argv, os.environ)
        except OSError as err:
            self.failure = f"nginx could not be started ({nginx}: {err}); set OBJECT2VEC_NGINX=off to serve without it"
            logger.error("serve stops: %s", self.failure)
            self.stop(signal.SIGTERM)
            return
        # nginx: SIGQUIT is graceful (finishes the answers in flight), SIGTERM quick
        self._started(pid, Child("nginx", {signal.SIGTERM: signal.SIGQUIT, signal.SIGINT: signal.SIGTERM}, port))

    def _started(self, pid: int, child: Child) -> None:
        self.children[pid] = child
        if self.stopping:  # a signal came while it was starting
            _kill(pid, child.stop_signals[self.stop_signal])

    def wait(self, kill_after_s: int) -> int:
        """Until every child has ended: 0 after a stop signal, 1 when a child ended by itself."""
        deadline: float | None = None
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)  # also reaps orphans re-parented to PID 1
            except ChildProcessError:  # nothing left to wait for
                break
            if pid == 0:
                if self.stopping and deadline is None:
                    deadline = time.monotonic() + kill_after_s
                if deadline is not None and time.monotonic() > deadline:
                    for late in self.children:
                        logger.error("%s did not stop in time: killed", self.children[late].name)
                        _kill(late, signal.SIGKILL)
                    deadline = float("inf")
                time.sleep(POLL_S)
                continue
            child = self.children.pop(pid, None)
            if child is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            if not self.stopping:
                self.failure = _why(child, code)
                logger.error("serve stops: %s", self.failure)
                self.stop(signal.SIGTERM)
        return EXIT_FAILED if self.failure else 0


def _why(child: Child, code: int) -> str:
    if child.name == "gunicorn" and code in (APP_LOAD_ERROR, WORKER_BOOT_ERROR):
        return "the workers could not load the model (the error is above)"
    if child.name == "nginx":
        return f"nginx ended with exit code {code} (its error is above; is port {child.port} in use?)"
    return f"{child.name} ended with exit code {code}"


def _kill(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass
