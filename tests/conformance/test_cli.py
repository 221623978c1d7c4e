"""The `gpu-cdi validate` and `gpu-cdi list` commands give the reference's verdicts (Go, 0.8.0)
on the corpus, apart from the documented deviations, with a clear line per file and no
traceback."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence

import pytest

from tests.conformance import judge
from tests.conformance.corpus_data import scenario_dirs, scenarios, spec_deviations, spec_files


def gpu_cdi(args: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cdi", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_validate_every_corpus_file(reference: judge.Reference) -> None:
    files = [str(p) for p in spec_files()]
    verdicts = reference.validate(files)
    deviations = spec_deviations()
    proc = gpu_cdi(["validate", *files])
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 1  # the corpus has invalid files
    lines = proc.stdout.splitlines()
    ours: dict[str, bool] = {}
    for line in lines:
        status, _, rest = line.partition(" ")
        path = next((f for f in files if rest.startswith(f + ":") or rest == f), None)
        assert status in ("OK", "INVALID") and path is not None, line
        ours[path] = status == "OK"
    assert set(ours) == set(files), "one line per file"
    for path in files:
        name = path.rsplit("/", 1)[1]
        expected = verdicts[path].ok
        if name in deviations:
            expected = deviations[name].ours == "ok"
        assert ours[path] == expected, f"{name}: reference {verdicts[path].error}"


@pytest.mark.parametrize("scenario", scenarios())
def test_list_scenario(reference: judge.Reference, scenario: str) -> None:
    dirs = scenario_dirs(scenario)
    ref = reference.list(dirs)
    proc = gpu_cdi(["list", *(arg for d in dirs for arg in ("--spec-dir", d))])
    assert "Traceback" not in proc.stderr, proc.stderr
    listed = dict(line.split("\t", 1) for line in proc.stdout.splitlines() if line)
    assert listed == {name: d.spec for name, d in ref.devices.items()}
    assert proc.returncode == (1 if ref.errors else 0), proc.stderr
    for path in ref.errors:
        assert path in proc.stderr
