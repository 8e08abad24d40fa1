"""Computing on a dask.distributed cluster: connecting to one, and showing progress wherever work runs.

Library functions compute through :func:`compute` and :func:`run_tasks`: with a
``dask.distributed.Client`` active (a pipeline job's, a notebook's) the work goes to its cluster
with distributed's progress bar; without one, dask's local scheduler runs it with dask's progress
bar, and tasks run one after another in this process. The pipeline jobs (``pipelines/``) open the
cluster with :func:`cluster`: a ``LocalCluster`` of worker processes by default, or an existing
scheduler by address.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from typing import Any, Callable, Iterator, Sequence

import dask
from tqdm.auto import tqdm

from earthsim.errors import EarthsimError


def current_client():
    """The active ``dask.distributed.Client``, or None when work runs on dask's local scheduler."""
    try:
        from distributed import get_client
    except ImportError:  # pragma: no cover - distributed is a dependency
        return None
    try:
        return get_client()
    except ValueError:  # no client
        return None


def compute(*objects, progress: bool = True):
    """Compute dask collections (or delayed values) together, on the active cluster if there is one; returns the
    results in order (one result for one object)."""
    client = current_client()
    if client is not None:
        futures = client.compute(list(objects))
        if progress:
            from distributed import progress as show_progress

            show_progress(futures, notebook=False)
            print(file=sys.stderr)
        results = client.gather(futures)
    elif progress:
        import dask
        from dask.diagnostics import ProgressBar

        with ProgressBar(dt=0.5):
            results = dask.compute(*objects)
    else:
        import dask

        results = dask.compute(*objects)
    return results[0] if len(objects) == 1 else list(results)


def run_tasks(function: Callable[..., Any], arguments: Sequence[tuple], progress: bool = True,
              description: str = "tasks") -> list:
    """``function(*args)`` for each tuple of ``arguments``, as independent tasks on the active cluster (or one
    after another here without one), with a bar counting finished tasks; returns the results in order.

    ``function`` must be importable by the workers (a library function, not a lambda). The first
    failure is raised as it is, once the tasks already running have been cancelled.
    """
    client = current_client()
    bar = tqdm(total=len(arguments), unit="task", desc=description, disable=not progress)
    try:
        if client is None:
            results = []
            for args in arguments:
                results.append(function(*args))
                bar.update(1)
            return results
        from distributed import as_completed

        futures = [client.submit(function, *args, pure=False) for args in arguments]
        try:
            for future in as_completed(futures):
                future.result()  # raises the task's error here
                bar.update(1)
        except BaseException:
            client.cancel(futures)
            raise
        return [future.result() for future in futures]
    finally:
        bar.close()


def add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every pipeline job shares: where to compute, and whether to show progress."""
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="address of a running dask scheduler (tcp://host:8786); default: start a LocalCluster")
    parser.add_argument("--workers", type=int, default=2,
                        help="worker processes of the LocalCluster (default 2; ignored with --scheduler)")
    parser.add_argument("--threads-per-worker", type=int, default=1,
                        help="threads per LocalCluster worker (default 1; ignored with --scheduler)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")


WORKER_WAIT_SECONDS = 60  # how long a job waits for the first worker of a --scheduler
#: dask's task-based rechunk, not the peer-to-peer one it picks on a distributed cluster: P2P rechunks under
#: earthsim's per-region computations gave wrong values (dask 2026.8; see pipelines/climatology_test.py).
TASK_RECHUNK = {"array.rechunk.method": "tasks"}


@contextlib.contextmanager
def cluster(scheduler: str | None = None, workers: int = 2, threads_per_worker: int = 1,
            quiet: bool = False) -> Iterator[Any]:
    """A ``dask.distributed.Client``: of the scheduler at ``scheduler``, or of a new ``LocalCluster`` of
    ``workers`` processes; prints where its dashboard is. Closed (the LocalCluster shut down) on exit."""
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout="20s")
        except OSError as error:
            raise EarthsimError(f"--scheduler {scheduler}: no dask scheduler answers there ({error})") from None
        local = None
        try:  # tasks given to a scheduler without workers would wait for ever
            client.wait_for_workers(1, timeout=WORKER_WAIT_SECONDS)
        except TimeoutError:
            client.close()
            raise EarthsimError(f"--scheduler {scheduler}: no dask worker joined it within {WORKER_WAIT_SECONDS} s; "
                                "start one with `dask worker ADDRESS`") from None
    else:
        if workers < 1 or threads_per_worker < 1:
            raise EarthsimError(f"--workers and --threads-per-worker must be at least 1, got {workers} and "
                                f"{threads_per_worker}")
        # The workers of a killed job lose their scheduler with it; a task one was running may still finish its
        # region after the kill, with the values a resumed run would write. death_timeout: worker start-up on a
        # loaded machine takes longer than dask's default allows.
        threads = str(threads_per_worker)  # torch and BLAS in each worker use its threads, not every core
        local = LocalCluster(n_workers=workers, threads_per_worker=threads_per_worker, processes=True,
                             dashboard_address=":0", death_timeout=60,
                             env={"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads})
        client = Client(local)
    if not quiet:
        print(f"dask: {len(client.scheduler_info().get('workers', {}))} workers at {client.scheduler.address}; "
              f"dashboard {client.dashboard_link}", file=sys.stderr, flush=True)
    try:
        with dask.config.set(TASK_RECHUNK):
            yield client
    finally:
        client.close()
        if local is not None:
            with _quiet("distributed.nanny"):  # "worker still alive, killing" as a loaded machine shuts down
                local.close()


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def cluster_from_arguments(args: argparse.Namespace):
    """:func:`cluster` as the options of :func:`add_cluster_arguments` ask."""
    return cluster(args.scheduler, args.workers, args.threads_per_worker)
