"""What the kernel says about a process the benchmarks started: resident memory, CPU time."""

from __future__ import annotations

import os


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """Resident set of a process (VmRSS now, VmHWM its peak), MB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
