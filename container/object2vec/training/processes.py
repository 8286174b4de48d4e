"""Several training processes on one host: start one per local rank, forward SIGTERM, report the first failure."""

from __future__ import annotations

import logging
import os
import queue
import signal
import time
import traceback
from collections.abc import Callable
from typing import Any

from object2vec.environment import TrainingEnvironment
from object2vec.errors import AlgorithmError, from_report, reported
from object2vec.logs import configure_logging
from object2vec.training.signals import StopSignal
from object2vec.training.topology import Topology

logger = logging.getLogger(__name__)

FAILURE_GRACE_SECONDS = 30.0  # after one local process fails, how long the others get to end


ProcessTarget = Callable[[TrainingEnvironment, StopSignal, Topology, int], None]


def run_local_processes(target: ProcessTarget, env: TrainingEnvironment, stop: StopSignal, topology: Topology) -> None:
    """Run `target` in one spawned process per local rank; forward SIGTERM; re-raise the first failure.

    The processes report (kind, message) of their failure; this process raises the same error
    class, so the CLI writes one failure file and one exit code for the host.
    """
    import torch.multiprocessing as mp

    context = mp.get_context("spawn")
    reports = context.Queue()
    processes = [
        context.Process(
            target=_local_process_main,
            args=(target, env, topology, local_rank, reports),
            name=f"object2vec-rank-{local_rank}",
        )
        for local_rank in range(topology.processes_per_host)
    ]
    logger.info("Starting %d training processes on this host (%s)", len(processes), topology.backend)
    for process in processes:
        process.start()
    failures: list[tuple[int, str, str]] = []
    forwarded = False
    first_failure: float | None = None
    with stop.deferred():
        while any(process.is_alive() for process in processes):
            _drain(reports, failures)
            if stop.requested and not forwarded:
                forwarded = True
                _signal_all(processes, signal.SIGTERM)
            if first_failure is None and (failures or any(p.exitcode not in (None, 0) for p in processes)):
                first_failure = time.monotonic()
            if first_failure is not None and time.monotonic() - first_failure > FAILURE_GRACE_SECONDS:
                _signal_all(processes, signal.SIGKILL)
            for process in processes:
                process.join(timeout=0.2)
        _drain(reports, failures)
    if failures:
        _local_rank, kind, message = failures[0]
        raise from_report(kind, message)
    for local_rank, process in enumerate(processes):
        if process.exitcode != 0:
            raise AlgorithmError(f"training process {local_rank} ended with exit code {process.exitcode}")


def _local_process_main(
    target: ProcessTarget, env: TrainingEnvironment, topology: Topology, local_rank: int, reports: Any
) -> None:
    configure_logging()
    stop = StopSignal.install()
    try:
        target(env, stop, topology, local_rank)
    except BaseException as err:  # noqa: BLE001 - reported to the parent, which writes the failure file
        failure = reported(err)
        ours = failure is err
        if not ours:  # an unexpected fault: its traceback is only here
            logger.error("%s", traceback.format_exc().rstrip())
        reports.put((local_rank, type(failure).__name__, str(failure)))
        raise SystemExit(1 if ours else 2) from None


def _drain(reports: Any, failures: list[tuple[int, str, str]]) -> None:
    while True:
        try:
            failures.append(reports.get_nowait())
        except queue.Empty:
            return


def _signal_all(processes: list[Any], signum: int) -> None:
    for process in processes:
        if process.is_alive() and process.pid is not None:
            try:
                os.kill(process.pid, signum)
            except ProcessLookupError:
                pass
