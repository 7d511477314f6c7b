"""Where the items of a run go: here, on several processes, or on a Ray cluster.

A runner maps a module-level function ``fn(up, item)`` over independent items (the segments of a
video job, :func:`sr_runtime.video.job.run_segment`; the files of a folder,
:func:`sr_runtime.batch.process_file`), each call with an :class:`~sr_runtime.upscaler.Upscaler`.
``map`` yields ``(item, True, result)`` as items finish, or ``(item, False, error)`` when ``fn``
raised an :class:`~sr_runtime.errors.SRError` for that item (the caller decides whether that stops
the job).

- :class:`LocalRunner`: this process and its Upscaler, one item at a time (the default).
- :class:`ProcessRunner`: ``--workers N`` on one machine. Spawned processes (never forked: torch and
  CUDA do not survive a fork), each with its own Upscaler built from the same keyword arguments,
  torch threads split between them, one GPU each on multi-GPU machines.
- :class:`RayRunner`: ``--ray [ADDRESS]``. Actors that each hold an Upscaler (one GPU each where the
  cluster has GPUs, else a share of a node's CPUs), on a local Ray started here (bounded to this
  machine's cores and shut down afterwards) or on an existing cluster. Every node must have this
  package and the model file, and the inputs and the job folder must be on storage all nodes see
  at the same path (NFS, a shared volume).

A worker that dies (killed, out of memory, a crash in a native library) has its items run again on a
fresh worker, up to ``retries`` times.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from sr_runtime.errors import BackendUnavailableError, SRError

__all__ = ["LocalRunner", "ProcessRunner", "RayRunner", "cuda_devices", "default_workers"]

log = logging.getLogger(__name__)

_UP = None
"""The worker process's Upscaler (ProcessRunner)."""


def cuda_devices() -> list[str]:
    """``cuda:N`` for every visible GPU (empty without CUDA)."""
    try:
        import torch
    except ImportError:
        return []
    return [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


def default_workers(device: str | None) -> int:
    """One worker per GPU on a multi-GPU machine (unless a device is named), else one."""
    gpus = cuda_devices()
    if len(gpus) > 1 and device in (None, "cuda"):
        return len(gpus)
    return 1


class LocalRunner:
    """Runs the items in this process with one Upscaler, one at a time (the default)."""

    workers = 1

    def __init__(self, up) -> None:
        self.up = up

    def map(self, fn, items: Iterable, progress: Callable[[Any, int], None] | None = None) -> Iterator[tuple[Any, bool, Any]]:
        """Yields ``(item, True, result)``, or ``(item, False, error)`` for an SRError of that item."""
        for item in items:
            try:
                if progress is not None:
                    result = fn(self.up, item, lambda done, item=item: progress(item, done))
                else:
                    result = fn(self.up, item)
            except SRError as e:
                yield item, False, e
                continue
            yield item, True, result

    def close(self) -> None:
        pass


def _threads_for(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def _limit_threads(threads: int) -> None:
    """Size the math libraries' thread pools of this worker before they start."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    import torch

    torch.set_num_threads(threads)


def _build(kwargs: dict[str, Any], threads: int, device: str | None):
    from sr_runtime.upscaler import Upscaler

    _limit_threads(threads)
    if device is not None:
        kwargs = {**kwargs, "device": device}
    return Upscaler(**kwargs)


def _init_process(kwargs: dict[str, Any], threads: int, devices: list[str], counter) -> None:
    global _UP
    device = None
    if devices:
        with counter.get_lock():
            device = devices[counter.value % len(devices)]
            counter.value += 1
    _UP = _build(kwargs, threads, device)


def _call(up, fn: Callable, item) -> tuple[bool, Any]:
    try:
        return True, fn(up, item)
    except SRError as e:
        return False, e


def _call_in_process(fn: Callable, item) -> tuple[bool, Any]:
    return _call(_UP, fn, item)


def _terminate_workers(pool) -> None:
    """End a ProcessPoolExecutor's worker processes now (``Executor.shutdown`` waits for running items:
    minutes of video after a Ctrl-C). Their segments are not recorded as done, so a resume redoes them."""
    for process in list((getattr(pool, "_processes", None) or {}).values()):  # no public API before 3.14
        if process.is_alive():
            process.terminate()


class ProcessRunner:
    """``workers`` processes on this machine, each with an Upscaler made from ``kwargs``."""

    def __init__(self, kwargs: dict[str, Any], workers: int, *, retries: int = 2) -> None:
        if workers < 1:
            raise SRError(f"--workers must be >= 1, got {workers}")
        self.kwargs, self.workers, self.retries = dict(kwargs), workers, retries
        devices = cuda_devices() if kwargs.get("device") in (None, "cuda") else []
        self.devices = devices if len(devices) > 1 else []
        self.threads = 1 if self.devices else _threads_for(workers)
        log.info(
            "%d worker processes%s, %d torch thread(s) each", workers,
            f" on {', '.join(self.devices[:workers])}" if self.devices else "", self.threads,
        )

    def map(self, fn, items: Iterable, progress=None) -> Iterator[tuple[Any, bool, Any]]:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed
        from concurrent.futures.process import BrokenProcessPool

        pending = list(items)
        deaths = 0
        ctx = multiprocessing.get_context("spawn")
        while pending:
            counter = ctx.Value("i", 0)
            pool = ProcessPoolExecutor(
                max_workers=min(self.workers, len(pending)),
                mp_context=ctx,
                initializer=_init_process,
                initargs=(self.kwargs, self.threads, self.devices, counter),
            )
            lost = []
            try:
                futures = {pool.submit(_call_in_process, fn, item): item for item in pending}
                for future in as_completed(futures):
                    item = futures[future]
                    try:
                        ok, value = future.result()
                    except BrokenProcessPool:
                        lost.append(item)
                        continue
                    yield item, ok, value
            except BaseException:  # Ctrl-C, kill, a failure here: stop the workers, do not wait out their items
                _terminate_workers(pool)
                raise
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
            pending = lost
            if pending:
                deaths += 1
                if deaths > self.retries:
                    raise SRError(
                        f"a worker process died {deaths} times (out of memory, or a crash in a native library); "
                        f"{len(pending)} item(s) not done. Try fewer --workers"
                    )
                log.warning("a worker process died; retrying %d item(s) on new workers", len(pending))

    def close(self) -> None:
        pass


class RayRunner:
    """Ray actors, each with an Upscaler made from ``kwargs``, on a local Ray or the cluster at
    ``address`` (``"auto"``: the one running on this machine; ``ray://host:10001``: a remote one)."""

    def __init__(
        self,
        kwargs: dict[str, Any],
        *,
        address: str | None = None,
        workers: int | None = None,
        retries: int = 2,
        num_cpus: int | None = None,
    ) -> None:
        try:
            import ray
        except ImportError as e:
            raise BackendUnavailableError("--ray needs Ray: pip install 'sr-runtime[ray]'") from e
        self._ray = ray
        self._started = False
        if not ray.is_initialized():
            if address:
                ray.init(address=address, log_to_driver=False)
            else:  # a local Ray on this machine's cores, shut down in close()
                cpus = num_cpus or os.cpu_count() or 1
                ray.init(
                    num_cpus=cpus,
                    include_dashboard=False,
                    log_to_driver=False,
                    object_store_memory=200 * 1024 * 1024,
                    runtime_env={"env_vars": {k: v for k, v in os.environ.items() if k.startswith("SR_RUNTIME_")}},
                )
            self._started = True
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        cpus = int(resources.get("CPU", 1))
        nodes = max(1, sum(1 for n in ray.nodes() if n.get("Alive")))
        self.workers = workers or (gpus if gpus and kwargs.get("device") != "cpu" else nodes)
        self.num_gpus = 1 if gpus and kwargs.get("device") != "cpu" else 0
        per_node = max(1, cpus // nodes)
        self.num_cpus = 1 if self.num_gpus else max(1, min(per_node, cpus // self.workers))
        self.retries = retries
        actor = ray.remote(_Actor).options(
            num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_restarts=retries, max_task_retries=retries
        )
        device = "cuda" if self.num_gpus else kwargs.get("device")
        self._actors = [actor.remote({**kwargs, "device": device}, self.num_cpus) for _ in range(self.workers)]
        log.info(
            "Ray: %d actor(s) with %s each on %d node(s)", self.workers,
            "1 GPU" if self.num_gpus else f"{self.num_cpus} CPU(s)", nodes,
        )

    def map(self, fn, items: Iterable, progress=None) -> Iterator[tuple[Any, bool, Any]]:
        ray = self._ray
        pending = list(items)
        pending.reverse()
        free = list(self._actors)
        running: dict[Any, tuple[Any, Any]] = {}
        while pending or running:
            while pending and free:
                actor = free.pop()
                item = pending.pop()
                running[actor.call.remote(fn, item)] = (actor, item)
            ready, _ = ray.wait(list(running), num_returns=1)
            ref = ready[0]
            actor, item = running.pop(ref)
            free.append(actor)
            try:
                ok, value = ray.get(ref)
            except ray.exceptions.RayActorError as e:
                raise SRError(
                    f"a Ray worker died {self.retries + 1} times on the same item ({e.__class__.__name__}); "
                    "out of memory, or a crash in a native library"
                ) from e
            except ray.exceptions.RayTaskError as e:
                cause = e.cause if isinstance(getattr(e, "cause", None), BaseException) else e
                raise cause from e
            yield item, ok, value

    def close(self) -> None:
        for actor in getattr(self, "_actors", []):
            try:
                self._ray.kill(actor)
            except Exception as e:  # an actor already gone
                log.debug("ray.kill: %s", e)
        self._actors = []
        if self._started:
            self._ray.shutdown()
            self._started = False


class _Actor:
    """A Ray actor holding one Upscaler (decorated with ``ray.remote`` at run time: Ray is optional)."""

    def __init__(self, kwargs: dict[str, Any], threads: int) -> None:
        self.up = _build(kwargs, threads, None)

    def call(self, fn: Callable, item) -> tuple[bool, Any]:
        return _call(self.up, fn, item)
