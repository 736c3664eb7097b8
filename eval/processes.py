"""The processes a run is spread over: this process's rank under `accelerate launch` (one when run plainly), the
barrier between them, and the device; a one-process CPU run takes every core."""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch


@dataclass
class Processes:
    index: int
    count: int
    wait: object  # a barrier callable
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.index == 0


def holding(folder: str | os.PathLike | None):
    """`folder` held by the main process for a command's length (data_gen.files.FolderLock): a second run into it
    is refused. The other processes of a launch work inside the main one's hold; None holds nothing."""
    if folder is None or not processes().is_main:
        return contextlib.nullcontext()
    from data_gen.files import FolderLock
    return FolderLock(folder)


def processes() -> Processes:
    """This process's rank among those `accelerate launch` started (one when run plainly).

    On CPUs `cpu=True` lets `--multi_gpu` launches run gloo. A DeepSpeed launch must not pass it
    (DeepSpeed sets up its own CPU backend), and accelerate then reports one process on CPUs,
    so the rank is read from torch.distributed, which DeepSpeed has initialised.
    """
    from accelerate import PartialState
    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    state = PartialState(cpu=not torch.cuda.is_available() and not deepspeed)
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return Processes(dist.get_rank(), dist.get_world_size(), dist.barrier, state.device)
    if state.device.type == "cpu" and state.num_processes == 1:
        use_every_core()
    return Processes(state.process_index, state.num_processes, state.wait_for_everyone, state.device)


def use_every_core() -> None:
    """A one-process CPU run under `accelerate launch` gets OMP_NUM_THREADS from the launcher: the physical cores
    (one on a 2-vCPU machine, which halved the organism's recipe) when the user set none; then it runs on every core
    it may use. A count the user set before launching is kept."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    launched = "ACCELERATE_MIXED_PRECISION" in os.environ  # set by `accelerate launch` for its processes
    if launched and user_thread_count() is None and torch.get_num_threads() < cores:
        torch.set_num_threads(cores)


def user_thread_count() -> str | None:
    """OMP_NUM_THREADS as the user set it. The launcher overwrites the variable for its processes, so under
    `accelerate launch` it is read from the launcher's own environment."""
    try:
        import psutil
        return psutil.Process(os.getppid()).environ().get("OMP_NUM_THREADS")
    except Exception:  # no psutil, or the parent's environment is not readable: trust this process's
        return os.environ.get("OMP_NUM_THREADS")
