"""The plugin's log lines: one format whichever way a line is written, and write errors."""

from __future__ import annotations

import contextlib
import io
import logging
import re
from collections.abc import Iterator

import pytest

from nri_plugin import log


@pytest.fixture
def handler() -> Iterator[log.StderrHandler]:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    handler = log.setup_logging("info")
    handler.stream = io.StringIO()
    yield handler
    root.handlers[:], root.level = saved


@contextlib.contextmanager
def alone(handler: log.StderrHandler) -> Iterator[None]:
    """Only `handler` on the root logger (pytest adds its own during a test), as in the
    plugin: log.info then takes its fast path."""
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers[:] = [handler]
    try:
        yield
    finally:
        root.handlers[:] = saved


LINE = re.compile(r"time=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} level=(\w+) (.*)\n")


def lines(handler: log.StderrHandler) -> list[tuple[str, str]]:
    text = handler.stream.getvalue()
    found: list[tuple[str, str]] = LINE.findall(text)
    assert len(found) == text.count("\n")  # every line has the format
    return found


def test_fast_and_record_lines_look_the_same(handler: log.StderrHandler) -> None:
    ours = logging.getLogger("gpu_cdi.nri")
    ours.info("msg=one a=1")
    with alone(handler):
        log.info(ours, "msg=two b=2")
    logging.getLogger("other.lib").warning('said "hi"')
    ours.debug("msg=hidden")
    log.info(logging.getLogger("gpu_cdi.quiet"), "msg=three")
    logging.getLogger("gpu_cdi.quiet").setLevel(logging.WARNING)
    log.info(logging.getLogger("gpu_cdi.quiet"), "msg=not-shown")
    assert lines(handler) == [
        ("info", "msg=one a=1"),
        ("info", "msg=two b=2"),
        ("warning", 'msg="said \\"hi\\""'),
        ("info", "msg=three"),
    ]


def test_logfmt_quotes_only_what_needs_it() -> None:
    assert log.logfmt(a="x", b="two words", c="", d='q"', e="k=v", f="back\\slash", g=3) == (
        'a=x b="two words" c="" d="q\\"" e="k=v" f="back\\\\slash" g=3'
    )


def test_a_write_error_is_reported_once_and_ends_the_log(handler: log.StderrHandler) -> None:
    calls: list[None] = []
    handler.on_failure = lambda: calls.append(None)

    class Full(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError(28, "No space left on device")

    handler.stream = Full()
    ours = logging.getLogger("gpu_cdi.nri")
    ours.info("msg=lost")
    handler.write_line("info", "msg=lost too")
    ours.warning("msg=also lost")
    assert len(calls) == 1
    assert handler.failure is not None and handler.failure.errno == 28


def test_deferred_lines_come_out_later_and_in_order(handler: log.StderrHandler) -> None:
    scheduled: list[object] = []
    handler.defer = scheduled.append  # as loop.call_soon would, without running it
    ours = logging.getLogger("gpu_cdi.nri")
    with alone(handler):
        log.info(ours, "msg=first")
        log.info(ours, "msg=second")
    assert lines(handler) == [] and len(scheduled) == 1  # one callback for both
    ours.warning("msg=third")  # a record writes the pending lines first
    assert lines(handler) == [
        ("info", "msg=first"),
        ("info", "msg=second"),
        ("warning", "msg=third"),
    ]
    handler.write_line("info", "msg=fourth")
    handler.flush_pending()
    assert lines(handler)[-1] == ("info", "msg=fourth")
