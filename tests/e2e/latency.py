"""CRI CreateContainer latency, interleaved across variants (for bench/nri*.py).

Method (as in the reference measurements): one host-network pod per distinct set of pod
annotations; each sample is one blocking CreateContainer timed with perf_counter, followed by
an untimed RemoveContainer so runtime state stays flat. Drift over a run is larger than the
effects we look for, so variants are interleaved: variants sharing a `state` (e.g. "plugin X
attached", entered as a context manager) alternate per iteration inside one block; blocks of
different states alternate per round (order rotated each round) with a few untimed warm-up
creates after each state change. Run it against a `Containerd` whose root is on tmpfs (the
harness default, `Containerd.root_on_tmpfs`): on disk, bolt-DB fsyncs add ms-scale noise.

    python -m tests.e2e.latency [-n 300]    # no plugin: plain vs CRI CDI device
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

import attrs

from tests.e2e.harness import Containerd


def _frozen_map(value: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((value or {}).items()))


@attrs.frozen
class Variant:
    """One case: what the pod/container carry and which runtime `state` must be active.

    `state` is a zero-argument callable returning a context manager that is entered around the
    variant's blocks (start/stop an NRI plugin, ...); variants whose `state` is the same object
    are measured in the same blocks. None = no special state.
    """

    name: str
    pod_annotations: Mapping[str, str] = attrs.field(factory=dict)
    annotations: Mapping[str, str] = attrs.field(factory=dict)
    env: Mapping[str, str] = attrs.field(factory=dict)
    cdi_devices: Sequence[str] = ()
    state: Callable[[], AbstractContextManager[Any]] | None = attrs.field(default=None, eq=False)


def measure_create_latency(
    containerd: Containerd,
    n: int,
    variants: Sequence[Variant],
    *,
    block: int = 40,
    warmup: int = 4,
    command: Sequence[str] = ("true",),
) -> dict[str, list[float]]:
    """Return {variant name: n CreateContainer latencies in ms}, interleaved (module doc).

    Samples are in measurement order, `block` per round and variant, so a paired comparison
    per round is possible with `paired_delta_p50`.
    """
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise ValueError(f"variant names must be unique: {names}")
    groups: dict[int, list[Variant]] = {}
    for v in variants:
        groups.setdefault(id(v.state), []).append(v)
    ordered = list(groups.values())
    results: dict[str, list[float]] = {v.name: [] for v in variants}
    rounds = math.ceil(n / block)
    with containerd.cri() as cri:
        pods: dict[tuple[tuple[str, str], ...], str] = {}
        configs: dict[str, tuple[str, Any]] = {}
        for v in variants:
            key = _frozen_map(v.pod_annotations)
            if key not in pods:
                pods[key] = cri.run_pod(f"lat-{len(pods)}", annotations=dict(key))
            cfg = cri.container_config(
                "lat",
                command=list(command),
                env=v.env,
                annotations=v.annotations,
                cdi_devices=v.cdi_devices,
            )
            configs[v.name] = (pods[key], cfg)

        def create(v: Variant) -> float:
            pod, cfg = configs[v.name]
            t0 = time.perf_counter()
            cid = cri.create_from_config(pod, cfg)
            dt = (time.perf_counter() - t0) * 1000.0
            cri.remove_container(cid)
            return dt

        for r in range(rounds):
            take = min(block, n - r * block)
            for g in range(len(ordered)):
                group = ordered[(g + r) % len(ordered)]
                state = group[0].state
                with state() if state is not None else contextlib.nullcontext():
                    for v in group:
                        for _ in range(warmup):
                            create(v)
                    for i in range(take):
                        for j in range(len(group)):
                            v = group[(i + j) % len(group)]
                            results[v.name].append(create(v))
    return results


def percentile(samples: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    k = max(0, math.ceil(p / 100.0 * len(ordered)) - 1)
    return ordered[k]


def paired_delta_p50(
    results: Mapping[str, Sequence[float]], case: str, baseline: str, block: int = 40
) -> list[float]:
    """Per-round (p50 of `case` block - p50 of `baseline` block), in ms."""
    a, b = results[case], results[baseline]
    rounds = min(len(a), len(b)) // block
    return [
        statistics.median(a[i * block : (i + 1) * block])
        - statistics.median(b[i * block : (i + 1) * block])
        for i in range(rounds)
    ]


def format_table(
    results: Mapping[str, Sequence[float]], baseline: str | None = None, block: int = 40
) -> str:
    """Markdown table: n, p50/p90/p99 ms, and Δp50 / paired Δp50 vs `baseline`."""
    head = "| case | n | p50 ms | p90 | p99 | Δp50 | paired Δp50 (min..max) |"
    rows = [head, "|---|---|---|---|---|---|---|"]
    base50 = percentile(results[baseline], 50) if baseline else None
    for name, xs in results.items():
        p50, p90, p99 = (percentile(xs, p) for p in (50, 90, 99))
        delta = paired = "-"
        if baseline and name != baseline and base50 is not None:
            delta = f"{p50 - base50:+.2f}"
            d = paired_delta_p50(results, name, baseline, block)
            if d:
                paired = f"{statistics.median(d):+.2f} ({min(d):+.2f}..{max(d):+.2f})"
        rows.append(
            f"| {name} | {len(xs)} | {p50:.2f} | {p90:.2f} | {p99:.2f} | {delta} | {paired} |"
        )
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    """Baseline numbers: plain CreateContainer vs one CDI device resolved by containerd."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("-n", type=int, default=300, help="samples per variant")
    ap.add_argument("--block", type=int, default=40)
    ap.add_argument("--json", help="also write the raw samples here")
    args = ap.parse_args(argv)
    spec = {
        "cdiVersion": "0.5.0",
        "kind": "bench.example.com/dev",
        "devices": [{"name": "0", "containerEdits": {"env": ["BENCH=0"]}}],
    }
    with Containerd() as ctd:
        (ctd.cdi_dir / "bench.json").write_text(json.dumps(spec))
        variants = [
            Variant("plain"),
            Variant("cri-cdi-device", cdi_devices=("bench.example.com/dev=0",)),
        ]
        res = measure_create_latency(ctd, args.n, variants, block=args.block)
        print(f"# containerd root on tmpfs: {ctd.root_on_tmpfs}; NRI on, no plugin")
    print(format_table(res, baseline="plain", block=args.block))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(res, f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
