"""gpu-cdi-device-plugin as a process for the tests, its log in a file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
INVENTORIES = PROJECT / "specs" / "inventories"


class Plugin:
    """`python -m device_plugin.cli ARGS` with `env` added; stop() sends SIGTERM."""

    def __init__(
        self, args: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None
    ) -> None:
        self.log_path = log_path
        self.argv = [sys.executable, "-m", "device_plugin.cli", *args]
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=PROJECT,
                env={**os.environ, **(env or {})},
                start_new_session=True,
            )

    def log(self) -> str:
        """Everything it said so far."""
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = 10.0, count: int = 1) -> None:
        """Wait until it said `text` (at least `count` times)."""
        deadline = time.monotonic() + timeout
        while self.log().count(text) < count:
            if self.proc.poll() is not None:
                raise AssertionError(f"plugin exited ({self.proc.returncode}); log:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"plugin never said {text!r}; log:\n{self.log()}")
            time.sleep(0.02)

    def stop(self) -> int:
        """SIGTERM and wait; the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                raise AssertionError(f"plugin ignored SIGTERM; log:\n{self.log()}") from None
        return self.proc.returncode

    def __enter__(self) -> Plugin:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def run(
    args: Sequence[str], env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the plugin to completion (`--list`, bad settings)."""
    return subprocess.run(
        [sys.executable, "-m", "device_plugin.cli", *args],
        capture_output=True,
        text=True,
        cwd=PROJECT,
        env={**os.environ, **(env or {})},
        timeout=60,
        check=False,
    )
