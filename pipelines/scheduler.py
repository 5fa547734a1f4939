"""Where Dask graphs run: the local schedulers (threads, processes, sync) or a distributed cluster.

A cluster is used when an address is given (``--scheduler tcp://host:8786``), or when Dask's own
configuration names one (``DASK_SCHEDULER_ADDRESS`` or ``dask.config.set(scheduler_address=...)``).
Tasks are per-patient functions that read from and write to the lake themselves and return small
summaries, so nothing large is gathered to the client. Progress is shown for both.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import dask
from dask.callbacks import Callback
from tqdm.auto import tqdm

from pipelines.exceptions import InputError

log = logging.getLogger("drlake.scheduler")

LOCAL_SCHEDULERS = ("threads", "processes", "sync")


@dataclass(frozen=True)
class SchedulerSpec:
    """Which scheduler runs a stage's graph and with how many workers."""

    scheduler: str = "threads"
    workers: int | None = None
    address: str | None = None

    def __post_init__(self):
        if self.address is None and self.scheduler not in LOCAL_SCHEDULERS:
            if "://" in self.scheduler:
                object.__setattr__(self, "address", self.scheduler)
            else:
                choices = ", ".join(LOCAL_SCHEDULERS)
                raise InputError(
                    f"unknown scheduler {self.scheduler!r}: use one of {choices}"
                    " or a cluster address such as tcp://host:8786"
                )
        if self.workers is not None and self.workers < 1:
            raise InputError(f"--workers must be >= 1, got {self.workers}")

    @property
    def cluster_address(self) -> str | None:
        """Return the distributed scheduler's address, if one is configured."""
        return (
            self.address
            or dask.config.get("scheduler-address", None)
            or os.environ.get("DASK_SCHEDULER_ADDRESS")
        )

    @property
    def n_workers(self) -> int:
        return self.workers or (os.cpu_count() or 1)

    def threads_per_task(self) -> int:
        """Return how many threads a task may use without oversubscribing the machine."""
        if self.cluster_address or self.scheduler == "sync":
            return 1 if self.cluster_address else (os.cpu_count() or 1)
        return max(1, (os.cpu_count() or 1) // self.n_workers)


_THREAD_CAP: dict[str, tuple] = {}  # the last cap applied in this process


def limit_task_threads(n: int) -> None:
    """Cap the threads of BLAS/OpenMP (threadpoolctl), and of torch and SimpleITK where they are
    loaded, inside a task, so that parallel workers do not oversubscribe the cores."""
    n = max(1, int(n))
    # threadpoolctl scans every loaded shared library (about 0.15 s): once per process and cap,
    # and again only when modules were imported since (they may have loaded a new BLAS/OpenMP)
    key = (os.getpid(), n, len(sys.modules))
    if _THREAD_CAP.get("key") != key:
        try:
            from threadpoolctl import threadpool_limits

            threadpool_limits(n)
        except Exception:  # pragma: no cover - a task must not die of a thread cap
            pass
        _THREAD_CAP["key"] = (os.getpid(), n, len(sys.modules))  # after threadpoolctl's import
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    if "SimpleITK" in sys.modules:
        sys.modules["SimpleITK"].ProcessObject.SetGlobalDefaultNumberOfThreads(n)


class _TqdmCallback(Callback):
    """A dask local-scheduler callback that advances a tqdm bar per finished task of interest."""

    def __init__(self, bar: tqdm, keys: set):
        super().__init__()
        self.bar = bar
        self.keys = keys

    def _posttask(self, key, result, dsk, state, worker_id):
        if key in self.keys:
            self.bar.update(1)


def run_tasks(
    tasks: Sequence, spec: SchedulerSpec, desc: str, progress: bool = True,
    on_result: Callable[[object], None] | None = None,
) -> list:
    """Compute dask.delayed tasks on the chosen scheduler; return their results in order."""
    if not tasks:
        return []
    address = spec.cluster_address
    if address:
        return _run_distributed(tasks, address, desc, progress, on_result)
    bar = tqdm(total=len(tasks), desc=desc, unit="task", disable=not progress)
    keys = {t.key for t in tasks}
    kwargs = {"scheduler": spec.scheduler}
    if spec.scheduler != "sync":
        kwargs["num_workers"] = spec.n_workers
    if spec.scheduler == "processes":
        # dask's process pool hands out 6 tasks per batch by default; our tasks are coarse
        # (a patient, an analysis), so a batch of six heavy ones on one worker left the other
        # idle: one task at a time balances them
        kwargs["chunksize"] = 1
    try:
        with _TqdmCallback(bar, keys):
            results = list(dask.compute(*tasks, **kwargs))
    finally:
        bar.close()
    if on_result:
        for r in results:
            on_result(r)
    return results


def _run_distributed(tasks, address, desc, progress, on_result) -> list:
    from distributed import Client, as_completed

    log.info("running %d %s task(s) on the cluster at %s", len(tasks), desc, address)
    with Client(address) as client:
        futures = client.compute(list(tasks))
        index = {f.key: i for i, f in enumerate(futures)}
        results: list = [None] * len(futures)
        with tqdm(total=len(futures), desc=desc, unit="task", disable=not progress) as bar:
            for fut in as_completed(futures):
                res = fut.result()  # re-raises the task's exception here
                results[index[fut.key]] = res
                if on_result:
                    on_result(res)
                bar.update(1)
    return results
