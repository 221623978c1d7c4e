"""Errors of the CDI core. Every message names where (file, device, field), the bad value and
the rule it breaks, so that a user can fix the input without reading our code."""

from __future__ import annotations


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
        body = "".join(char if char.isprintable() else _escape(char) for char in body)
    return f'"{body}"'


_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escape(char: str) -> str:
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
        if json:
            return f"{'number' if value.kind == 'float' else value.kind} {value.text}"
        return f"YAML {value.kind} {value.text}"
    return kind.__name__
