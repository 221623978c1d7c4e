"""Node labels as a node-feature-discovery local feature file (`features.d/<file>`).

NFD's local source reads `name=value` lines from files in
/etc/kubernetes/node-feature-discovery/features.d/ and makes them node labels. The names are
those of NVIDIA's GPU feature discovery, so selectors written for it keep working; NFD only
publishes the nvidia.com/ ones when its `extraLabelNs` allows nvidia.com (the GPU Operator's
NFD configuration does).
"""

from __future__ import annotations

from collections import Counter

from device_plugin.node import Node
from device_plugin.resources import GPU_RESOURCE

PREFIX = "nvidia.com/"
# CUDA compute capability major[.minor] -> architecture family, as GPU feature discovery names it
FAMILIES = {
    (3,): "kepler",
    (5,): "maxwell",
    (6,): "pascal",
    (7, 0): "volta",
    (7, 2): "volta",
    (7, 5): "turing",
    (8, 0): "ampere",
    (8, 6): "ampere",
    (8, 7): "ampere",
    (8, 9): "ada-lovelace",
    (9,): "hopper",
    (10,): "blackwell",
    (12,): "blackwell",
}


def family(compute: tuple[int, int]) -> str | None:
    """The architecture family of a compute capability."""
    return FAMILIES.get(compute) or FAMILIES.get(compute[:1])


def labels(node: Node, mig_strategy: str) -> dict[str, str]:
    """The labels for `node` (only what is known: no NVML, no memory or CUDA labels)."""
    inv = node.inventory
    gpus = [g for g in inv.gpus if g.uuid and not g.error]
    out: dict[str, str] = {"gpu.count": str(len(gpus))}
    if gpus:
        product = Counter(g.name for g in gpus).most_common(1)[0][0]
        out["gpu.product"] = product.replace(" ", "-")
    facts = node.facts
    if facts is not None and gpus:
        first = facts.gpus[gpus[0].nvml_index] if gpus[0].nvml_index < len(facts.gpus) else None
        if first is not None and first.memory_mib is not None:
            out["gpu.memory"] = str(first.memory_mib)
        if first is not None and first.compute is not None:
            out["gpu.compute.major"], out["gpu.compute.minor"] = map(str, first.compute)
            arch = family(first.compute)
            if arch:
                out["gpu.family"] = arch
        out["mig.capable"] = str(any(f.mig_capable for f in facts.gpus)).lower()
    if facts is not None and facts.cuda is not None:
        major, minor = facts.cuda
        out["cuda.runtime-version.full"] = f"{major}.{minor}"
        out["cuda.runtime-version.major"] = str(major)
        out["cuda.runtime-version.minor"] = str(minor)
    version = inv.driver_version.split(".")
    out["cuda.driver-version.full"] = inv.driver_version
    for key, part in zip(("major", "minor", "revision"), version, strict=False):
        out[f"cuda.driver-version.{key}"] = part
    out["mig.strategy"] = mig_strategy
    for resource in node.resources:
        if resource.name != GPU_RESOURCE and resource.name.startswith(PREFIX):
            out[f"{resource.name[len(PREFIX) :]}.count"] = str(
                len({d.uuid for d in resource.devices})
            )
    return {PREFIX + key: value for key, value in sorted(out.items())}


def text(node: Node, mig_strategy: str) -> str:
    """The feature file: one `name=value` line per label."""
    head = "# written by gpu-cdi-device-plugin; node-feature-discovery reads it (local source)\n"
    return head + "".join(f"{k}={v}\n" for k, v in labels(node, mig_strategy).items())


def write(node: Node, mig_strategy: str, path: str) -> bool:
    """Write the feature file atomically; False when it already said the same."""
    from cdi.writer import write_text

    return write_text(path, text(node, mig_strategy))
