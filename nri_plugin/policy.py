"""Who may have which devices: pure decisions over requests, with specific error messages.

Rules (docs/nri-plugin.md, "Policy"):

- annotation requests only from namespaces in `annotation_namespaces` (None: every namespace);
- devices of a management kind (e.g. `management.nvidia.com/gpu`) only for pods in
  `management_namespaces`, whatever the source;
- only kinds in `allowed_kinds` (None: every kind);
- `NVIDIA_VISIBLE_DEVICES` counts for unprivileged containers only with `env_unprivileged`;
- `cdi.k8s.io/` requests are skipped when the runtime injects them itself
  (`runtime_cdi = "skip"`), or, with `"auto"`, when the runtime evidently already did.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

import attrs

from cdi.errors import quote
from nri_plugin.requests import Request

DEFAULT_MANAGEMENT_KINDS = ("management.nvidia.com/gpu",)
RUNTIME_CDI_CHOICES = ("auto", "skip", "inject")


class PolicyError(ValueError):
    """A request the policy refuses; the message names the source, device and rule."""


@attrs.frozen
class Policy:
    """The policy settings (see the module docstring); the defaults allow everything normal."""

    annotation_namespaces: frozenset[str] | None = None
    management_kinds: frozenset[str] = frozenset(DEFAULT_MANAGEMENT_KINDS)
    management_namespaces: frozenset[str] = frozenset()
    allowed_kinds: frozenset[str] | None = None
    env_unprivileged: bool = True
    runtime_cdi: str = "auto"


def kind_of(name: str) -> str:
    """`vendor/class` of a qualified name (already validated)."""
    return name.partition("=")[0]


def env_counts(policy: Policy, privileged: bool) -> bool:
    """Whether the container's NVIDIA_VISIBLE_DEVICES is a request at all."""
    return privileged or policy.env_unprivileged


def _names(values: Iterable[str]) -> str:
    return ", ".join(quote(v) for v in sorted(values)) or "none"


def check(policy: Policy, namespace: str, requests: Iterable[Request]) -> None:
    """Raise PolicyError for the first request the policy refuses (request order)."""
    for request in requests:
        source = request.source
        kind = kind_of(request.name)
        name = quote(request.name)
        allowed = policy.annotation_namespaces
        if source.is_annotation and allowed is not None and namespace not in allowed:
            raise PolicyError(
                f"{source} requests {name}, but namespace {quote(namespace)} may not "
                f"request devices by annotation (allowed: {_names(allowed)})"
            )
        if policy.allowed_kinds is not None and kind not in policy.allowed_kinds:
            raise PolicyError(
                f"{source} requests {name}, but kind {quote(kind)} may not be requested "
                f"(allowed kinds: {_names(policy.allowed_kinds)})"
            )
        if kind in policy.management_kinds and namespace not in policy.management_namespaces:
            raise PolicyError(
                f"{source} requests {name}, a management device, but namespace "
                f"{quote(namespace)} is not allowed management devices (allowed: "
                f"{_names(policy.management_namespaces)})"
            )


def runtime_handled(
    policy: Policy, requests: Iterable[Request], already_injected: Collection[str] = ()
) -> frozenset[str]:
    """Names of `cdi.k8s.io/` requests to leave to the runtime's own CDI support.

    `already_injected` are names whose device nodes the container already has (evidence that
    the runtime injected them before NRI ran); it matters only with `runtime_cdi = "auto"`.
    """
    if policy.runtime_cdi == "inject":
        return frozenset()
    cdi = [r.name for r in requests if r.source.is_cdi_annotation]
    if policy.runtime_cdi == "skip":
        return frozenset(cdi)
    return frozenset(name for name in cdi if name in already_injected)
