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
from nri_plugin import settings as read
from nri_plugin.requests import Request
from nri_plugin.settings import setting

DEFAULT_MANAGEMENT_KINDS = ("management.nvidia.com/gpu",)
RUNTIME_CDI_CHOICES = ("auto", "skip", "inject")


class PolicyError(ValueError):
    """A request the policy refuses; the message names the source, device and rule."""


@attrs.frozen
class Policy:
    """The policy settings (see the module docstring); the defaults allow everything normal."""

    annotation_namespaces: frozenset[str] | None = setting(None, read.optional(read.string_set))
    management_kinds: frozenset[str] = setting(
        frozenset(DEFAULT_MANAGEMENT_KINDS), read.device_kinds
    )
    management_namespaces: frozenset[str] = setting(frozenset(), read.string_set)
    allowed_kinds: frozenset[str] | None = setting(None, read.optional(read.device_kinds))
    env_unprivileged: bool = setting(True, read.boolean)
    runtime_cdi: str = setting("auto", read.choice(RUNTIME_CDI_CHOICES))


def kind_of(name: str) -> str:
    """`vendor/class` of a qualified name (already validated)."""
    return name.partition("=")[0]


def env_counts(policy: Policy, privileged: bool) -> bool:
    """Whether the container's NVIDIA_VISIBLE_DEVICES is a request at all."""
    return privileged or policy.env_unprivileged


def _names(values: Iterable[str]) -> str:
    return read.listing([quote(v) for v in sorted(values)]) or "none"


def check(policy: Policy, namespace: str, requests: Iterable[Request]) -> None:
    """Raise PolicyError for the first request the policy refuses (request order)."""
    allowed = policy.annotation_namespaces
    for request in requests:
        source = request.source
        kind = kind_of(request.name)
        if source.is_annotation and allowed is not None and namespace not in allowed:
            raise PolicyError(
                f"{source} requests {quote(request.name)}, but namespace {quote(namespace)} "
                f"may not request devices by annotation (allowed: {_names(allowed)})"
            )
        if policy.allowed_kinds is not None and kind not in policy.allowed_kinds:
            raise PolicyError(
                f"{source} requests {quote(request.name)}, but kind {quote(kind)} may not be "
                f"requested (allowed kinds: {_names(policy.allowed_kinds)})"
            )
        if kind in policy.management_kinds and namespace not in policy.management_namespaces:
            raise PolicyError(
                f"{source} requests {quote(request.name)}, a management device, but namespace "
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
