"""The latency helper measures every variant, interleaved, and enters each state per block."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.latency import Variant, format_table, measure_create_latency, percentile
from tests.e2e.paths import REPO


def test_interleaved_measurement_enters_states_per_block(containerd: Any) -> None:
    entered: list[str] = []

    @contextlib.contextmanager
    def attached() -> Iterator[None]:
        entered.append("enter")
        yield
        entered.append("exit")

    variants = [
        Variant("plain"),
        Variant("env", env={"X": "1"}, pod_annotations={"a": "b"}),
        Variant("stateful", state=attached),
    ]
    res = measure_create_latency(containerd, 6, variants, block=4, warmup=1)
    assert {k: len(v) for k, v in res.items()} == {"plain": 6, "env": 6, "stateful": 6}
    assert all(0 < x < 5000 for xs in res.values() for x in xs)
    assert entered == ["enter", "exit", "enter", "exit"]  # 2 rounds of block 4
    table = format_table(res, baseline="plain", block=4)
    assert "| stateful | 6 |" in table


def test_duplicate_variant_names_rejected(containerd: Any) -> None:
    with pytest.raises(ValueError, match="unique"):
        measure_create_latency(containerd, 1, [Variant("a"), Variant("a")])


def test_percentile_nearest_rank() -> None:
    xs = [float(i) for i in range(1, 101)]
    assert percentile(xs, 50) == 50.0
    assert percentile(xs, 99) == 99.0
    assert percentile([3.0], 90) == 3.0


def test_plugin_state_is_attached_during_its_blocks(containerd: Any, tmp_path: Path) -> None:
    """A variant whose state runs a real external NRI plugin sees every create go through it."""
    record = tmp_path / "record.jsonl"

    @contextlib.contextmanager
    def sample_plugin() -> Iterator[None]:
        since = containerd.log_size()
        argv = [sys.executable, "-m", "tests.nri.sample_plugin", "--socket"]
        argv += [containerd.nri_socket, "--name", "latency", "--mode", "adjust"]
        argv += ["--record", str(record)]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, cwd=REPO)
        try:
            containerd.wait_plugin_connected("latency", since=since, timeout=20)
            yield
        finally:
            proc.terminate()
            proc.wait(10)

    variants = [Variant("none"), Variant("plugin", state=sample_plugin)]
    res = measure_create_latency(containerd, 5, variants, block=5, warmup=2)
    assert [len(res["none"]), len(res["plugin"])] == [5, 5]
    seen = record.read_text().splitlines()
    assert len(seen) == 5 + 2  # measured + warm-up creates of the plugin variant only
