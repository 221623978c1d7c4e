"""Our sample NRI plugin (tests/nri/sample_plugin.py) as a process attached to a containerd."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def plugin_argv(*args: str) -> list[str]:
    """Command line of the sample plugin."""
    return [sys.executable, "-m", "tests.nri.sample_plugin", *args]


class ExternalPlugin:
    """The sample plugin in adjust mode, connected to an NRI socket; watches its stdout."""

    def __init__(self, socket_path: str, workdir: Path, name: str = "e2e", idx: str = "50") -> None:
        self.record = workdir / f"{name}-record.jsonl"
        self.mount_source = workdir / f"{name}-mount"
        self.mount_source.mkdir(parents=True, exist_ok=True)
        (self.mount_source / "marker").write_text("from the host\n", encoding="utf-8")
        self.stderr_path = workdir / f"{name}-stderr.log"
        self._stderr = open(self.stderr_path, "w", encoding="utf-8")  # noqa: SIM115
        self.proc = subprocess.Popen(
            plugin_argv(
                "--socket", socket_path, "--name", name, "--idx", idx, "--mode", "adjust",
                "--record", str(self.record), "--mount-source", str(self.mount_source),
                "--log-level", "INFO",
            ),
            cwd=REPO,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )  # fmt: skip
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.strip())
                self._cond.notify_all()

    def wait_for(self, line: str, count: int = 1, timeout: float = 20.0) -> None:
        """Until the plugin printed `line` `count` times (e.g. "synchronized")."""
        with self._cond:
            ok = self._cond.wait_for(lambda: self.lines.count(line) >= count, timeout)
        if not ok:
            raise AssertionError(
                f"plugin printed {self.lines} in {timeout}s, wanted {line!r} x{count}; "
                f"stderr: {self.stderr_path.read_text(encoding='utf-8')[-2000:]}"
            )

    def records(self) -> list[dict[str, Any]]:
        """CreateContainer calls the plugin saw."""
        if not self.record.exists():
            return []
        return [json.loads(x) for x in self.record.read_text(encoding="utf-8").splitlines()]

    def stop(self) -> int:
        """SIGTERM, and the exit status."""
        self.proc.terminate()
        try:
            return self.proc.wait(10)
        finally:
            self.proc.kill()
            self._stderr.close()

    def __enter__(self) -> ExternalPlugin:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.stop()
        time.sleep(0.1)  # containerd notices the closed socket and drops the plugin
