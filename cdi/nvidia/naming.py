"""Device naming strategies: how a GPU or MIG device is named in the spec (as nvidia-ctk does).

| strategy   | full GPU         | MIG device            |
|------------|------------------|-----------------------|
| index      | `0`              | `0:1` (GPU:MIG index) |
| uuid       | `GPU-<uuid>`     | `MIG-<uuid>`          |
| type-index | `gpu0`           | `mig0:1`              |
"""

from __future__ import annotations

from collections.abc import Iterable

from cdi.nvidia.inventory import Gpu, MigDevice

STRATEGIES = ("index", "uuid", "type-index")
DEFAULT_STRATEGIES = ("index", "uuid")


def gpu_name(strategy: str, gpu: Gpu) -> str:
    """The name of a full GPU under `strategy`."""
    if strategy == "index":
        return str(gpu.nvml_index)
    if strategy == "uuid":
        return gpu.uuid
    if strategy == "type-index":
        return f"gpu{gpu.nvml_index}"
    raise ValueError(f"unknown device name strategy {strategy!r}")


def mig_name(strategy: str, gpu: Gpu, mig: MigDevice) -> str:
    """The name of a MIG device of `gpu` under `strategy`."""
    if strategy == "index":
        return f"{gpu.nvml_index}:{mig.mig_index}"
    if strategy == "uuid":
        return mig.uuid
    if strategy == "type-index":
        return f"mig{gpu.nvml_index}:{mig.mig_index}"
    raise ValueError(f"unknown device name strategy {strategy!r}")


def gpu_ids(gpu: Gpu) -> set[str]:
    """Every id `--device-id` accepts for a full GPU: index and UUID."""
    return {str(gpu.nvml_index), gpu.uuid}


def mig_ids(gpu: Gpu, mig: MigDevice) -> set[str]:
    """Every id `--device-id` accepts for a MIG device: `GPU:MIG` index and UUID."""
    return {f"{gpu.nvml_index}:{mig.mig_index}", mig.uuid}


def unique_strategies(strategies: Iterable[str]) -> tuple[str, ...]:
    """Strategies in first-given order without repeats; ValueError names an unknown one."""
    out: list[str] = []
    for strategy in strategies:
        if strategy not in STRATEGIES:
            raise ValueError(
                f"unknown device name strategy {strategy!r} (one of {', '.join(STRATEGIES)})"
            )
        if strategy not in out:
            out.append(strategy)
    return tuple(out)
