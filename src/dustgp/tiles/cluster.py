"""Running tiles on Dask: a ``distributed.Client`` for whatever the caller gave (:func:`_dask_client`), and one
distance layer's tasks run in parallel, each failed task resubmitted up to a number of times (:func:`_run_layer`).

``distributed`` (the ``dask`` extra) is imported only when a layer runs, so that planning and merging tiles work
without it.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .geometry import Tile, TileError
from .task import TileJob, TilePrediction, TileStars, TileTask

__all__: list[str] = []

logger = logging.getLogger(__name__)


@contextmanager
def _dask_client(client: Any) -> Iterator[Any]:
    """A ``distributed.Client`` for ``client``: None (a new local cluster), an address, a Client or a cluster."""
    from distributed import Client, LocalCluster

    if client is None:
        logger.info("starting a LocalCluster of 2 worker processes, 1 thread each")
        with (
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
            Client(cluster) as own,
        ):
            yield own
    elif isinstance(client, Client):
        yield client
    elif isinstance(client, str) or hasattr(client, "scheduler_address"):  # an address, or a (jobqueue) cluster
        with Client(client) as own:
            yield own
    else:
        raise TypeError(
            "client: expected None, a scheduler address, a distributed.Client or a cluster object "
            f"(LocalCluster, dask-jobqueue), got {type(client).__name__}"
        )


def _run_layer(
    client: Any,
    task: TileTask,
    work: list[tuple[Tile, TileJob, TileStars]],
    retries: int,
    done_before: int,
    n_total: int,
) -> dict[int, tuple[TilePrediction, int]]:
    """Run one distance layer's tasks; resubmit a failed task up to ``retries`` times, then raise naming it."""
    from distributed import as_completed

    token = uuid.uuid4().hex[:8]
    pending: dict[Any, tuple[Tile, TileJob, Any, int]] = {}
    results: dict[int, tuple[TilePrediction, int]] = {}

    def submit(tile: Tile, job: TileJob, stars: Any, attempt: int) -> Any:
        future = client.submit(task, job, stars, key=f"dustgp-tile-{tile.index}-{token}-{attempt}", pure=False)
        pending[future] = (tile, job, stars, attempt)
        return future

    scattered = []
    started = time.perf_counter()
    try:
        for tile, job, stars in work:
            # scattered once per tile, so that a retry does not send the stars again
            stars_future = client.scatter(stars, hash=False)
            scattered.append(stars_future)
            submit(tile, job, stars_future, 0)
        queue = as_completed(list(pending))
        for future in queue:
            tile, job, stars, attempt = pending.pop(future)
            try:
                prediction = future.result()
            except Exception as exc:  # any failure of the task, including a lost worker (KilledWorker)
                if attempt < retries:
                    logger.warning(
                        "%s failed (attempt %d of %d): %r; retrying", tile.name, attempt + 1, retries + 1, exc
                    )
                    queue.add(submit(tile, job, stars, attempt + 1))
                    continue
                raise TileError(f"{tile.name} failed {attempt + 1} time(s); last error: {exc!r}") from exc
            results[tile.index] = (prediction, attempt + 1)
            facts = prediction.info
            logger.info(
                "%d/%d done: %s: %s stars, %s iterations, %.1f s since the layer started",
                done_before + len(results),
                n_total,
                tile.name,
                facts.get("stars", {}).get("used", "?"),
                facts.get("iterations", "?"),
                time.perf_counter() - started,
            )
    finally:
        for future in pending:
            future.cancel()
        for future in scattered:
            future.release()
    return results
