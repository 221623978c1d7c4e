"""Spec dirs through the reference cache (Go, 0.8.0) and through cdi.registry.Registry: same
devices from the same files at the same priority, same files with load errors, same devices
dropped for conflicts (with both files blamed)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from cdi.registry import Registry
from tests.conformance import judge
from tests.conformance.corpus_data import SPECS, doc_sections, scenario_dirs, scenarios

SPEC = """\
cdiVersion: "0.3.0"
kind: vendor.example/device
devices:
- name: {name}
  containerEdits:
    env: [X={name}]
"""


def assert_same_registry(reference: judge.Reference, dirs: Sequence[str]) -> judge.Listing:
    """Compare the reference's cache with our Registry on `dirs`; returns the reference's view."""
    ref = reference.list(dirs)
    registry = Registry(list(dirs))
    ours = {}
    for name in registry.devices():
        resolved = registry.resolve(name)
        assert resolved is not None
        ours[name] = (resolved.path, resolved.priority)
    theirs = {name: (d.spec, d.priority) for name, d in ref.devices.items()}
    assert ours == theirs, "devices (name -> source file, priority) differ"

    our_errors = registry.errors()
    assert set(our_errors) == set(ref.errors) | set(ref.dir_errors), (
        f"files with errors differ: ours {sorted(our_errors)}, reference {sorted(ref.errors)}"
    )
    conflicts = ref.conflicts()
    for device, paths in conflicts.items():
        for path in paths:
            messages = our_errors[path]
            assert any(f'"{device}"' in m and "conflicting device" in m for m in messages), (
                f"{path}: no conflict error for {device}: {messages}"
            )
    for path, messages in our_errors.items():
        ours_conflicts = sum("conflicting device" in m for m in messages)
        theirs_conflicts = len(ref.errors.get(path, ())) - len(ref.load_errors().get(path, ()))
        assert ours_conflicts == theirs_conflicts, f"{path}: {messages} vs {ref.errors.get(path)}"
        for message in messages:
            assert path in message, f"the error does not name its file: {message}"
    return ref


@pytest.mark.parametrize("scenario", scenarios())
def test_corpus_scenario(reference: judge.Reference, scenario: str) -> None:
    assert_same_registry(reference, scenario_dirs(scenario))


@pytest.mark.parametrize("scenario", ["priority", "priority-conflict-low", "three-dirs"])
def test_reversed_priority(reference: judge.Reference, scenario: str) -> None:
    assert_same_registry(reference, list(reversed(scenario_dirs(scenario))))


def test_every_scenario_dir_together_with_a_missing_dir(
    reference: judge.Reference, tmp_path: Path
) -> None:
    dirs = [str(tmp_path / "missing")]
    for scenario in scenarios():
        dirs += scenario_dirs(scenario)
    ref = assert_same_registry(reference, dirs)
    assert len(ref.devices) > 10 and ref.conflicts()


def test_scenarios_show_what_they_are_for(reference: judge.Reference) -> None:
    """The corpus scenarios exercise conflicts and priorities (checked on the reference)."""
    same_dir = reference.list(scenario_dirs("conflict-same-dir"))
    assert "vendor.example/device=dev0" in same_dir.conflicts()
    assert "vendor.example/other=dev0" in same_dir.devices
    assert not any(name.startswith("vendor.example/device=from-") for name in same_dir.devices)
    priority = reference.list(scenario_dirs("priority"))
    assert priority.devices["vendor.example/device=dev0"].spec.endswith("1-run/high.yaml")
    low = reference.list(scenario_dirs("priority-conflict-low"))
    assert "vendor.example/device=dev0" not in low.devices
    assert "vendor.example/device=c-only" in low.devices


def _write(path: Path, name: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(SPEC.format(name=name))


def test_symlink_to_a_spec_file(reference: judge.Reference, tmp_path: Path) -> None:
    _write(tmp_path / "outside" / "real.yaml", "linked")
    _write(tmp_path / "etc" / "plain.yaml", "plain")
    os.symlink(tmp_path / "outside" / "real.yaml", tmp_path / "etc" / "link.yaml")
    ref = assert_same_registry(reference, [str(tmp_path / "etc")])
    assert "vendor.example/device=linked" in ref.devices


def test_dangling_symlink(reference: judge.Reference, tmp_path: Path) -> None:
    """0.8.0 reports a dangling `*.yaml` symlink as a load error of that file."""
    _write(tmp_path / "etc" / "plain.yaml", "plain")
    os.symlink(tmp_path / "nowhere.yaml", tmp_path / "etc" / "dangling.yaml")
    assert_same_registry(reference, [str(tmp_path / "etc")])


def test_symlink_to_a_dir_named_like_a_spec(reference: judge.Reference, tmp_path: Path) -> None:
    """A real subdir `x.yaml` is skipped, a symlink `x.yaml` to a dir is a load error in 0.8.0."""
    _write(tmp_path / "etc" / "plain.yaml", "plain")
    _write(tmp_path / "etc" / "subdir.yaml" / "inner.yaml", "inner")
    (tmp_path / "adir").mkdir()
    os.symlink(tmp_path / "adir", tmp_path / "etc" / "dirlink.yaml")
    assert_same_registry(reference, [str(tmp_path / "etc")])


def test_spec_dir_that_is_a_symlink(reference: judge.Reference, tmp_path: Path) -> None:
    """0.8.0 walks a spec dir with filepath.Walk, which does not follow a symlinked root."""
    _write(tmp_path / "real" / "a.yaml", "viasymlink")
    os.symlink(tmp_path / "real", tmp_path / "etc")
    assert_same_registry(reference, [str(tmp_path / "etc")])


def test_same_dir_listed_twice(reference: judge.Reference, tmp_path: Path) -> None:
    """One dir at two priorities: the second listing wins, no conflict."""
    _write(tmp_path / "etc" / "a.yaml", "dev0")
    assert_same_registry(reference, [str(tmp_path / "etc"), str(tmp_path / "etc")])


def test_three_files_one_device(reference: judge.Reference, tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        _write(tmp_path / "etc" / f"{name}.yaml", "dev0")
    _write(tmp_path / "run" / "d.yaml", "dev0")
    assert_same_registry(reference, [str(tmp_path / "etc"), str(tmp_path / "run")])


def test_spec_dir_that_is_a_spec_file(reference: judge.Reference, tmp_path: Path) -> None:
    """filepath.Walk on a file visits the file itself: 0.8.0 loads it as a spec."""
    _write(tmp_path / "a.yaml", "fromfile")
    _write(tmp_path / "etc" / "b.yaml", "fromdir")
    ref = assert_same_registry(reference, [str(tmp_path / "a.yaml"), str(tmp_path / "etc")])
    assert "vendor.example/device=fromfile" in ref.devices


def test_no_spec_dirs(reference: judge.Reference) -> None:
    assert assert_same_registry(reference, []).devices == {}


def test_unclean_dir_paths(reference: judge.Reference, tmp_path: Path) -> None:
    """Dirs given as `a/./b/../etc/` are cleaned; the reported file paths are clean."""
    _write(tmp_path / "etc" / "a.yaml", "dev0")
    ref = assert_same_registry(reference, [f"{tmp_path}/x/../etc/./"])
    assert ref.devices["vendor.example/device=dev0"].spec == str(tmp_path / "etc" / "a.yaml")


def test_a_spec_that_crashes_the_reference_cache(
    reference: judge.Reference, tmp_path: Path
) -> None:
    """A null device-node item panics 0.8.0 while it scans the dir (containerd's CDI refresh
    would go down with it: documented under "Null list items"); our registry reports that
    file and keeps the others."""
    assert "null list items" in doc_sections()
    _write(tmp_path / "etc" / "good.yaml", "good")
    bad = tmp_path / "etc" / "bad.yaml"
    bad.write_text((SPECS / "null-item-device-node.yaml").read_text())
    with pytest.raises(judge.ReferenceFailure, match="panic"):
        reference.list([str(tmp_path / "etc")])
    registry = Registry([str(tmp_path / "etc")])
    assert registry.devices() == ["vendor.example/device=good"]
    assert list(registry.errors()) == [str(bad)]
