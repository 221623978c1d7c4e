"""The kernel's view of MIG capabilities: /proc/driver/nvidia-caps/mig-minors."""

from __future__ import annotations

from pathlib import Path

from cdi.nvidia import devices


def test_mig_minors_and_caps(tmp_path: Path) -> None:
    minors = tmp_path / "proc/driver/nvidia-caps/mig-minors"
    minors.parent.mkdir(parents=True)
    minors.write_text(
        "config 1\n"
        "monitor 2\n"
        "  gpu0/gi1/access 21  \n"  # stray whitespace is the kernel's line all the same
        "gpu0/gi1/ci0/access 22\n"
        "gpu0/gi2/access 3x\n"  # not a number: as if missing
        "gpu0/gi2/ci0/access \u00b2\n"  # a digit int() cannot read: as if missing
        "gpu0/gi2/ci0/access\n"
        "\n"
        "gpu1/gi1/access 30\n"
        "gpu1/gi1/access 031\n"  # the last line of a name counts
        "gpu1/gi1/ci0/access 32"  # no final newline
    )
    table = devices.mig_minors(str(tmp_path))
    assert devices.mig_caps(table, 0, 1, 0) == (
        "/dev/nvidia-caps/nvidia-cap21",
        "/dev/nvidia-caps/nvidia-cap22",
    )
    assert devices.mig_caps(table, 1, 1, 0) == (
        "/dev/nvidia-caps/nvidia-cap31",
        "/dev/nvidia-caps/nvidia-cap32",
    )
    assert devices.mig_caps(table, 0, 2, 0) == ()
    assert devices.mig_caps(table, 2, 1, 0) == ()
    assert devices.mig_caps(devices.mig_minors(str(tmp_path / "none")), 0, 1, 0) == ()
