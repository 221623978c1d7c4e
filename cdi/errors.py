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
