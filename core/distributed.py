"""The processes of one run: a run launched by `accelerate launch` or `torchrun` (the launch
bundle, cpt_studio.core.launch) is the same worker started once per device, told its place by
the environment (RANK, WORLD_SIZE, LOCAL_RANK). Without them there is one process and every
function here is a no-op.

    start(device)                      # join the process group (before the Trainer does)
    if is_main(): write_the_file()     # the run folder is written by the main process only
    stop = broadcast(stop_file.exists() if is_main() else None)   # every rank acts alike
    with main_first(): prepare_data()  # the main process first (it fills the caches)
    nll, tokens = all_sum([nll, tokens])

The rule behind it: a decision taken from a file or from numbers (a stop request, the
guard's rollback) is taken on the main process and broadcast, so that no rank can differ
from the others and hang a collective operation.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import torch

T = TypeVar("T")


def world_size() -> int:
    """Processes of the run (1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's global rank, 0 .. world_size() - 1 (0 is the main process)."""
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def _active() -> bool:
    if world_size() == 1:
        return False
    import torch  # here: the worker records even a broken torch install as a failed run

    return torch.distributed.is_available() and torch.distributed.is_initialized()


def start(device: str) -> None:
    """Join the launcher's process group (gloo on CPU, NCCL on CUDA) through accelerate's
    PartialState: the Trainer's arguments find the same state later. Nothing with one process."""
    if world_size() > 1 and not _active():
        from accelerate import PartialState

        PartialState(cpu=device == "cpu")


def broadcast(value: T) -> T:
    """The main process's `value` on every rank (any picklable object; small ones: a flag, a
    guard decision). Every rank must call it at the same point."""
    if not _active():
        return value
    import torch

    holder = [value if is_main() else None]
    torch.distributed.broadcast_object_list(holder, src=0)
    return holder[0]


def barrier() -> None:
    """Wait until every rank has come here."""
    if _active():
        import torch

        torch.distributed.barrier()


def all_sum(values: list[float], device: torch.device | str = "cpu") -> list[float]:
    """The element-wise sum of `values` over every rank, in float64 (a sum of nats and token
    counts: the held-out evaluation's shards). On CUDA, `device` must be this rank's GPU."""
    if not _active():
        return list(values)
    import torch

    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
    return tensor.tolist()


@contextmanager
def main_first() -> Iterator[None]:
    """The main process runs the block first, the other ranks after it has finished (they
    then find what it wrote: the token store, the Fisher cache), and all leave together."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()
    barrier()


def shard(count: int) -> range:
    """The indices of `count` items this rank takes: rank, rank + world, ... (all of them
    with one process)."""
    return range(rank(), count, world_size()) if _active() else range(count)


def rank_label() -> str:
    """'' with one process, else 'rank 1 of 2 ' (for log lines)."""
    return f"rank {rank()} of {world_size()} " if world_size() > 1 else ""



def broadcast_tensors(tensors: dict[str, torch.Tensor]) -> None:
    """Overwrite each of `tensors` (in name order) with the main process's, in place; every
    rank passes tensors of the same names, shapes and dtypes (e.g. EWC's Fisher, computed once
    on the main process: the other ranks pass zeros of its shapes)."""
    if not _active():
        return
    import torch

    for name in sorted(tensors):
        torch.distributed.broadcast(tensors[name], src=0)


def strategy() -> str | None:
    """The strategy this process was launched with (accelerate tells it through its
    environment), or None for one process."""
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true":
        return "fsdp"
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
        return "deepspeed"
    return "ddp" if world_size() > 1 else None


def unsupported(config, strategy_name: str | None) -> list[str]:
    """What `config` (a RunConfig) asks for that `strategy_name` cannot do yet, each in a
    sentence saying what to change; [] when the run can go ahead."""
    if strategy_name not in ("fsdp", "deepspeed"):
        return []
    problems = []
    if config.ewc.enabled:
        problems.append(f"ewc: the EWC penalty is not supported yet with {strategy_name}: each "
                        "process holds only a shard of the weights or gradients it reads and adds "
                        "to; launch with --strategy ddp, or turn EWC off")
    if config.benchmarks.probes_during_training and config.benchmarks.probes:
        problems.append(f"benchmarks: live knowledge probes are not supported yet with {strategy_name} "
                        "(they run on the main process alone, and sharded weights need every process); "
                        "launch with --strategy ddp, or score the probes after the run")
    return problems
