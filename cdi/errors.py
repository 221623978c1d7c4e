"""Errors of the CDI core. Every message names where (file, device, field), the bad value and
the rule it breaks, so that a user can fix the input without reading our code."""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs the hook start-up time
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


class CdiError(Exception):
    """Base of every error the CDI core raises for bad input or a failed operation."""


class InvalidNameError(CdiError, ValueError):
    """A vendor, class, device name or qualified device name breaks the naming rules."""


class AnnotationError(CdiError, ValueError):
    """A `cdi.k8s.io/` annotation (key or value) or a spec annotation is invalid."""


class SpecError(CdiError, ValueError):
    """A spec could not be parsed or is invalid.

    `source` is the file (or other origin) of the spec, `where` the place inside it (a device,
    a field path), `reason` what is wrong with which value.
    """

    def __init__(self, source: str, reason: str, where: str = "") -> None:
        self.source = source
        self.where = where
        self.reason = reason
        super().__init__(self.message)

    @property
    def message(self) -> str:
        """The full one-line message: `source: where: reason`."""
        return ": ".join(part for part in (self.source, self.where, self.reason) if part)

    def __str__(self) -> str:
        return self.message


class InjectionError(CdiError):
    """Devices could not be injected into an OCI spec; `unresolved` lists unknown names."""

    def __init__(self, message: str, unresolved: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.unresolved = unresolved


class WriteError(CdiError):
    """A spec file could not be written; nothing was left behind."""


def quote(value: str) -> str:
    """`value` in Go-style double quotes (control characters escaped), on one line."""
    # Go-style double quotes read better next to YAML than Python's single-quoted repr.
    body = value.replace("\\", "\\\\").replace('"', '\\"')
    if not body.isprintable():
        body = "".join(char if char.isprintable() else escape_char(char) for char in body)
    return f'"{body}"'


_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def escape_char(char: str) -> str:
    """`char` as a backslash escape: `\\n`, `\\t`, `\\r`, else `\\xHH`, `\\uHHHH` or `\\UHHHHHHHH`
    (the forms Go and YAML double-quoted strings share)."""
    known = _ESCAPES.get(char)
    if known is not None:
        return known
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def describe(value: object, json: bool = False) -> str:
    """A decoded value as an error message shows it: `string "x"`, `integer 5`, `a list`.

    Plain YAML scalars typed as booleans, floats or timestamps (`cdi.yaml11.Yaml11Scalar`) show
    the text as written; `json` words them as JSON does (`number 0.5`, `boolean true`).
    """
    kind = type(value)
    if kind is str:
        return f"string {quote(value)}"  # type: ignore[arg-type]
    if kind is bool:
        return f"boolean {'true' if value else 'false'}"
    if kind is int:
        return f"integer {value}"
    if kind is float:
        return f"number {value!r}"
    if value is None:
        return "null"
    if kind is dict:
        return "a mapping"
    if kind is list or kind is tuple:
        return "a list"
    from cdi.yaml11 import Yaml11Scalar

    if isinstance(value, Yaml11Scalar):
        if value.kind == "float" and value.text.lstrip("+-").replace("_", "").isdigit():
            # Digits beyond 64 bits: YAML 1.1 (go-yaml v2) makes them a float; say what they are.
            return f"{'number' if json else 'integer'} {value.text} (beyond 64 bits)"
        if json:
            return f"{'number' if value.kind == 'float' else value.kind} {value.text}"
        return f"YAML {value.kind} {value.text}"
    return kind.__name__


class _Watched:
    """sys.stdout or sys.stderr, remembering the first failed write or flush, even one the
    caller swallows (argparse does, for --help)."""

    def __init__(self, stream: Any, name: str) -> None:
        self.stream = stream
        self.name = name
        self.error: OSError | None = None

    def write(self, text: str) -> int:
        try:
            return int(self.stream.write(text))
        except OSError as error:
            self.error = self.error or error
            raise

    def flush(self) -> None:
        try:
            self.stream.flush()
        except OSError as error:
            self.error = self.error or error
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def watch_output(prog: str, main: Callable[[], int], code: int) -> int:
    """`main()`, with stdout and stderr watched: when a write to either fails (a full disk, a
    closed pipe), the program ends with one line on stderr (if that still works), e.g.
    `PROG: error: cannot write to stdout: No space left on device`, and exit code `code`,
    never a traceback. Output is flushed before returning."""
    import contextlib
    import os
    import sys

    streams = (sys.stdout, sys.stderr)
    watched = (_Watched(streams[0], "stdout"), _Watched(streams[1], "stderr"))
    sys.stdout, sys.stderr = watched
    try:
        try:
            result = main()
        finally:
            for stream in watched:
                with contextlib.suppress(OSError):
                    stream.flush()
    except (OSError, SystemExit):
        if not any(stream.error for stream in watched):
            raise
    finally:
        sys.stdout, sys.stderr = streams
    failed = [stream for stream in watched if stream.error]
    if not failed:
        return result
    for stream in failed:
        # What is still buffered would fail again in the interpreter's last flush.
        with contextlib.suppress(OSError, ValueError):
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, stream.fileno())
            os.close(null)
    error = watched[0].error
    if error is not None and not watched[1].error:
        with contextlib.suppress(OSError):
            sys.stderr.write(f"{prog}: error: cannot write to stdout: {error.strerror}\n")
            sys.stderr.flush()
    return code
