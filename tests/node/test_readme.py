"""The README tried as a new user would: its first command, run as written in a fresh copy of
the checkout with no virtualenv, installs the runtime dependencies only (`pip install .`, not
editable), installs the hook and writes a spec whose every hook exists; the output it shows is
the real one. And no command in it calls a program that is not on PATH.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.node.support import (
    PROGRAMS,
    PROJECT,
    hook_paths,
    newcomer_command,
    readme_blocks,
    run_private,
    tracked_copy,
)
from tests.require import need_root, need_tool

pytestmark = pytest.mark.slow
SEP = "=== gpu-cdi readme test ==="
# pip's own lines about this machine's package sources and its own version, not ours
PIP_NOISE = re.compile(r"^(WARNING: |\[notice\] )")


def test_no_command_calls_a_program_that_is_not_on_path() -> None:
    for lang, text in readme_blocks():
        if lang != "sh":
            continue
        for line in text.splitlines():
            first = line.split()[0] if line.split() else ""
            assert first not in PROGRAMS, f"README runs a bare {first}: {line}"


@pytest.fixture
def clone() -> Iterator[Path]:
    """A fresh copy of the checkout outside /tmp (the command gets its own empty /tmp)."""
    top = Path(tempfile.mkdtemp(prefix="gpu-cdi-readme-", dir="/var/tmp"))
    try:
        tracked_copy(top / "gpu-cdi")
        yield top / "gpu-cdi"
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_the_first_command_gives_a_usable_spec_and_the_output_shown(clone: Path) -> None:
    need_root()  # install-hook writes /usr/local/bin (a private, empty one here)
    need_tool("unshare")
    command = newcomer_command()
    after = [
        "cat /tmp/nvidia.yaml",
        ".venv/bin/gpu-cdi validate /tmp/nvidia.yaml",
        # every hook the spec names exists and runs on this machine
        "for hook in $(sed -n 's/^ *path: \\(.*gpu-cdi-hook\\)$/\\1/p' /tmp/nvidia.yaml | sort -u);"
        ' do "$hook" --version; done',
        *(f".venv/bin/{program} --version" for program in PROGRAMS),
        ".venv/bin/pip show -f gpu-cdi | grep -c __editable__ || true",
    ]
    script = "\n".join(
        [f"( {command} ) 2>&1 || exit", *(f"echo '{SEP}'; {line}" for line in after)]
    )
    proc = run_private(clone, script)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out, spec, valid, hooks, *versions, editable = proc.stdout.split(SEP + "\n")

    blocks = readme_blocks()
    first = blocks.index(("sh", command + "\n"))
    shown_output, shown_spec = blocks[first + 1], blocks[first + 2]
    ours = [line for line in out.splitlines() if not PIP_NOISE.match(line)]
    assert shown_output[0] == "" and ours == shown_output[1].splitlines()
    assert shown_spec[0] == "yaml" and spec.startswith(shown_spec[1])
    assert f"`{valid.strip()}`" in Path(clone / "README.md").read_text().replace("\n", " ")

    assert hook_paths(spec) == {"/usr/local/bin/gpu-cdi-hook"}
    assert hooks == f"gpu-cdi-hook {version('gpu-cdi')}\n"
    assert versions == [f"{p} {version('gpu-cdi')}\n" for p in PROGRAMS]
    assert editable.strip() == "0"  # a real install, not a link to the clone


def test_the_device_plugin_listing_shows_real_output() -> None:
    blocks = readme_blocks()
    at = next(i for i, (lang, text) in enumerate(blocks) if "gpu-cdi-device-plugin --list" in text)
    command, (_, shown) = blocks[at][1].strip(), blocks[at + 1]
    assert command.startswith(".venv/bin/gpu-cdi-device-plugin ")
    argv = [str(PROJECT / command.split()[0]), *command.split()[1:]]
    result = subprocess.run(argv, cwd=PROJECT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    printed = result.stdout.splitlines()
    assert printed[0] == shown.splitlines()[0]  # the header
    for line in shown.splitlines():
        assert line in printed
