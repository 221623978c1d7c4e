"""The plugin's log: logfmt lines on stderr, and what happens when stderr cannot be written.

A write error on stderr (a full disk behind a redirect, a log reader that went away) must
not leave the plugin running blind: the handler records the first one and calls back, so
the plugin stops and exits with one line and a non-zero status.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Callable

from cdi.errors import quote

_SPECIAL = re.compile(r'[\s"=\\]').search

Message = str | Callable[[], str]
"""A log line's logfmt text, or a function building it when the line is written."""


def logfmt(**fields: object) -> str:
    """`key=value` pairs; values with spaces, quotes, `=` or backslashes (or empty) quoted."""
    parts = []
    for key, value in fields.items():
        text = str(value)
        if not text or _SPECIAL(text):
            text = quote(text)
        parts.append(f"{key}={text}")
    return " ".join(parts)


class Formatter(logging.Formatter):
    """logfmt lines: our records are logfmt already, other libraries' become msg="..."."""

    def __init__(self) -> None:
        super().__init__("%(message)s")
        self._second = -1
        self._stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if not record.name.startswith("gpu_cdi"):
            message = "msg=" + quote(message)
        line = self.line(record.created, record.levelname.lower(), message)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line

    def line(self, created: float, level: str, message: str) -> str:
        """The line of a logfmt `message` logged at `created` (time.time())."""
        second = int(created)
        if second != self._second:  # strftime is most of a record's cost; once a second
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(second))
        return f"time={self._stamp} level={level} {message}"


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to stderr; a write error (OSError) is kept in `failure`, reported once to
    `on_failure`, and ends logging instead of printing a traceback per record.

    With `defer` set (a function that runs a callback later on the thread that logs, e.g.
    through the event loop's call_later), lines from `write_line` are formatted and written
    by that callback, together: a request's answer goes out before its log line is even
    built, and a busy moment costs one write. Lines keep their order with the other records
    (those write the pending ones first).
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self._line_formatter = Formatter()
        self.setFormatter(self._line_formatter)
        self.failure: OSError | None = None
        self.on_failure: Callable[[], None] | None = None
        self.defer: Callable[[Callable[[], None]], object] | None = None
        self._pending: list[tuple[float, str, Message]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if self.failure is None:
            self.flush_pending()
            super().emit(record)

    def write_line(self, level: str, message: Message) -> None:
        """Log one logfmt `message` (or the function building it) without a LogRecord (for
        the per-request lines: the record machinery would cost more than the rest of a
        request)."""
        if self.failure is not None:
            return
        created = time.time()
        if self.defer is None:
            self._write(self._format(created, level, message))
            return
        with self.lock:  # type: ignore[union-attr]
            self._pending.append((created, level, message))
            first = len(self._pending) == 1
        if first:
            self.defer(self.flush_pending)

    def flush_pending(self) -> None:
        """Write the lines `write_line` deferred."""
        if not self._pending:
            return
        with self.lock:  # type: ignore[union-attr]
            pending, self._pending = self._pending, []
        self._write("".join([self._format(*line) for line in pending]))

    def _format(self, created: float, level: str, message: Message) -> str:
        text = message if isinstance(message, str) else message()
        return self._line_formatter.line(created, level, text) + "\n"

    def _write(self, text: str) -> None:
        with self.lock:  # type: ignore[union-attr]
            try:
                self.stream.write(text)
                self.stream.flush()
            except OSError as error:
                self._failed(error)

    def handleError(self, record: logging.LogRecord) -> None:
        error = sys.exc_info()[1]
        if not isinstance(error, OSError):
            super().handleError(record)
            return
        self._failed(error)

    def _failed(self, error: OSError) -> None:
        self.failure = error
        if self.on_failure is not None:
            self.on_failure()


def info(logger: logging.Logger, message: Message) -> None:
    """`logger.info(message)` for a logfmt message, the fast way when the plugin's handler
    is the only one (as set up by setup_logging). `message` may be a function returning it,
    called when the line is written (with a deferring handler: after the request's answer)."""
    if not logger.isEnabledFor(logging.INFO):
        return
    handlers = logging.root.handlers
    if len(handlers) == 1 and type(handlers[0]) is StderrHandler and logger.propagate:
        handlers[0].write_line("info", message)
    else:
        logger.info("%s", message if isinstance(message, str) else message())


def setup_logging(level: str) -> StderrHandler:
    """Log to stderr at `level` (one of config.LOG_LEVELS); returns the handler."""
    # Fields our lines never show; computing them is a good part of every record's cost
    # (_srcfile: the caller's file and line, found by walking the stack; logging's HOWTO
    # "Optimization" names these switches).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = StderrHandler()
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # its debug output (the selector) would drown ours
    logging.getLogger("asyncio").setLevel(max(logging.INFO, root.level))
    return handler
