"""Run a Stub on its own event loop in a background thread, for tests driven synchronously."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from nri_plugin.protocol import Plugin, Stub


class PluginThread:
    """`with PluginThread(plugin, socket_path=...) as pt:` runs `Stub(plugin, ...).run()`."""

    def __init__(self, plugin: Plugin, **stub_options: Any) -> None:
        stub_options.setdefault("name", "test")
        stub_options.setdefault("idx", "50")
        stub_options.setdefault("environ", {})
        self.stub_options = stub_options
        self.plugin = plugin
        self.loop = asyncio.new_event_loop()
        self.stub: Stub | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._started = threading.Event()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def main() -> None:
            self.stub = Stub(self.plugin, **self.stub_options)
            self._started.set()
            await self.stub.run()

        try:
            self.loop.run_until_complete(main())
        except BaseException as exc:  # reported to the test through .error
            self.error = exc
        finally:
            self._started.set()

    def __enter__(self) -> PluginThread:
        self._thread.start()
        self._started.wait(5)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """stop() the stub and wait for run() to return."""
        if self.stub is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.stub.stop)
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "stub did not stop"

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.loop.close()

    def join(self, timeout: float) -> bool:
        """Wait for run() to end by itself; True if it did."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def run_coro(self, coro: Any, timeout: float = 5.0) -> Any:
        """Run a coroutine on the plugin's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)
