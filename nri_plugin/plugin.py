"""The gpu-cdi NRI plugin: CreateContainer -> requests -> policy -> registry -> adjustment.

Delivery modes (docs/nri-plugin.md, "Modes"):
- `resolve`: the plugin resolves the names in its CDI registry and returns the merged edits
  as an adjustment. Works on every NRI runtime (containerd 1.7.0+).
- `native`: the adjustment carries the CDI names; the runtime resolves them. Only runtimes
  that honour NRI's CDI_devices field: containerd >= 1.7.30 (1.7 line) and >= 2.1.
- `auto` picks native only when the runtime will resolve the names: its version carries them
  and its own CDI support is on and reads the plugin's spec dirs (`nri_plugin.runtime_cdi`
  reads containerd's config); else resolve. An explicit `native` on a runtime that evidently
  cannot resolve them fails each request with one line naming the setting to change.

A bad request fails only its container: the handler raises RpcError, which the runtime
returns to the CRI caller; the plugin carries on with the next container.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import attrs

from cdi.errors import CdiError, quote
from cdi.inject import merge_edits
from cdi.registry import Registry, ResolvedDevice, Snapshot
from nri_plugin import adjust as adjust_mod
from nri_plugin import config as config_mod
from nri_plugin.config import Config, ConfigError
from nri_plugin.log import info as log_info
from nri_plugin.log import logfmt
from nri_plugin.metrics import Metrics
from nri_plugin.policy import PolicyError, check, env_counts, runtime_handled
from nri_plugin.protocol import Code, Plugin, RpcError, api
from nri_plugin.protocol.errors import bounded
from nri_plugin.requests import (
    MARKERS,
    VISIBLE_DEVICES,
    Request,
    RequestError,
    container_requests,
    describe_sources,
)
from nri_plugin.runtime_cdi import RuntimeProbe, choose_mode, restricts_annotations
from nri_plugin.settings import listing

log = logging.getLogger("gpu_cdi.nri")

_CACHE_LIMIT = 4096
# Keys the runtime's drop-in config (pre-installed plugins) may set; the others describe how
# the process starts and are fixed by then.
_DROP_IN_KEYS = frozenset({"mode", "env_kind", "void_visible_devices", "policy", "log_level"})


def is_privileged(container: api.Container) -> bool:
    """Whether the container is privileged, from its device cgroup rules.

    NRI 0.6.1 sends no capabilities or privileged flag; containerd gives privileged containers
    one rule allowing every device (no type or numbers), others a deny-all first.
    """
    for rule in container.linux.resources.devices:
        if (
            rule.allow
            and rule.type in ("", "a")
            and not rule.HasField("major")
            and not rule.HasField("minor")
        ):
            return True
    return False


@attrs.frozen
class _Failure:
    code: int
    reason: str  # metrics label


class _Answer(NamedTuple):
    """A cached answer: the response, its wire form, and the end of its log line."""

    response: api.CreateContainerResponse
    encoded: bytes
    tail: str


class _InjectedLine(NamedTuple):
    """What the log line of an injection says, put into words once the answer is out."""

    namespace: str
    pod: str
    container: str
    tail: str

    def text(self) -> str:
        head = logfmt(pod=f"{self.namespace}/{self.pod}", container=self.container)
        return f"msg=injected {head} {self.tail}"


def _answer(adjustment: api.ContainerAdjustment, tail: str = "") -> _Answer:
    response = api.CreateContainerResponse(adjust=adjustment)
    return _Answer(response, response.SerializeToString(), tail)


_VOID = (VISIBLE_DEVICES, "void")
_VOID_ONLY = _answer(api.ContainerAdjustment(env=[api.KeyValue(key=_VOID[0], value=_VOID[1])]))

_BAD_REQUEST = _Failure(Code.INVALID_ARGUMENT, "request")
_DENIED = _Failure(Code.PERMISSION_DENIED, "policy")
_UNKNOWN = _Failure(Code.NOT_FOUND, "unknown_device")
_HOST = _Failure(Code.FAILED_PRECONDITION, "host")
_RUNTIME = _Failure(Code.FAILED_PRECONDITION, "runtime")


class GpuCdiPlugin(Plugin):
    """NRI plugin giving containers the CDI devices they request (see the module docstring)."""

    # A container whose request carries none of these asks for nothing: answered by the stub
    # without decoding the request.
    create_container_markers = MARKERS

    def __init__(
        self,
        config: Config,
        registry: Registry,
        metrics: Metrics | None = None,
        probe: RuntimeProbe | None = None,
    ) -> None:
        self.config = config
        self.registry = registry
        self.metrics = metrics or Metrics(enabled=False)
        self.probe = probe or RuntimeProbe(config.containerd_config, host_root=config.host_root)
        self.mode = "resolve" if config.mode == "auto" else config.mode
        # native mode on a runtime that cannot resolve the names: why each request fails
        self.refusal: str | None = None
        self.runtime = ""
        self._applies_cdi_names = False  # the runtime is known to apply CDI_devices
        # (requests, void) -> answer, valid for one registry snapshot only
        self._cache: dict[tuple[tuple[Request, ...], bool], _Answer] = {}
        # name -> (device node paths, hooks) of the device's own edits
        self._evidence_cache: dict[
            str, tuple[frozenset[str], frozenset[tuple[str, tuple[str, ...]]]]
        ] = {}
        self._snapshot: Snapshot | None = None

    # -- NRI events ------------------------------------------------------------------------

    async def configure(self, request: api.ConfigureRequest) -> int | None:
        """Pick the delivery mode for this runtime; apply the runtime's drop-in config."""
        self.runtime = f"{request.runtime_name} {request.runtime_version}".strip()
        self._cache.clear()  # adjustments depend on the mode
        if request.config.strip():
            self.config = drop_in_config(self.config, request.config)
        kinds = {name.partition("=")[0] for name in self._current_snapshot().devices}
        choice = choose_mode(
            self.config.mode,
            request.runtime_name,
            request.runtime_version,
            self.config.spec_dirs,
            self.probe,
            restricts_annotations(self.config.policy, kinds),
        )
        self.mode, self.refusal = choice.mode, choice.refusal
        # the runtime applies the CDI names we hand it (and appends the specs' env after ours)
        self._applies_cdi_names = choice.refusal is None and self.mode == "native"
        level = logging.INFO if choice.refusal is None else logging.ERROR
        log.log(
            level,
            "%s",
            logfmt(msg="configured", runtime=self.runtime, mode=self.mode, why=choice.why),
        )
        for warning in choice.warnings:
            log.warning("%s", logfmt(msg="policy bypass", warning=warning))
        return None

    def create_container(self, pod: api.PodSandbox, container: api.Container) -> bytes | None:
        """The encoded response for one container: its adjustment (None: nothing requested).

        A plain `def`: it never waits, so the stub answers inline on the event loop.
        """
        if not self.metrics.enabled:
            answer = self._answer(pod, container)
        else:
            start = time.perf_counter()
            try:
                answer = self._answer(pod, container)
            finally:
                self.metrics.observe(time.perf_counter() - start)
        return None if answer is None else answer.encoded

    # -- the work --------------------------------------------------------------------------

    def adjust(
        self, pod: api.PodSandbox, container: api.Container
    ) -> api.CreateContainerResponse | None:
        """The response create_container encodes (for tests and benchmarks).

        The response is shared between containers asking for the same devices: callers
        must not modify it.
        """
        answer = self._answer(pod, container)
        return None if answer is None else answer.response

    def _answer(self, pod: api.PodSandbox, container: api.Container) -> _Answer | None:
        config = self.config
        policy = config.policy
        name = container.name
        try:
            requests = container_requests(
                name,
                container.annotations,
                pod.annotations,
                container.env,
                # (privileged or not only matters when unprivileged env requests are off)
                use_env=policy.env_unprivileged or env_counts(policy, is_privileged(container)),
                env_kind=config.env_kind,
            )
        except RequestError as error:
            raise self._fail(_BAD_REQUEST, pod, container, str(error)) from None
        if not requests:
            return None
        if self.metrics.enabled:
            for source in {r.source.key for r in requests}:
                self.metrics.request(source.split("/", 1)[0])
        namespace = pod.namespace
        try:
            check(policy, namespace, requests)
        except PolicyError as error:
            raise self._fail(_DENIED, pod, container, str(error)) from None

        snapshot = self._current_snapshot()
        devices = snapshot.devices
        for request in requests:
            if request.name not in devices:
                missing = [r for r in requests if r.name not in devices]
                raise self._fail(_UNKNOWN, pod, container, self._unknown(missing, snapshot))
        # container cdi.k8s.io/ annotations come first in precedence: any there is the first
        if policy.runtime_cdi != "inject" and requests[0].source.is_cdi_annotation:
            cdi_names = [r.name for r in requests if r.source.is_cdi_annotation]
            present = self._injected_by_runtime(container, cdi_names, devices)
            handled = runtime_handled(policy, requests, present)
            if handled:
                log.debug(
                    "%s",
                    logfmt(
                        msg="left to the runtime's CDI support",
                        pod=f"{pod.namespace}/{pod.name}",
                        container=container.name,
                        devices=",".join(sorted(handled)),
                    ),
                )
                requests = tuple(r for r in requests if r.name not in handled)
                if not requests:
                    # the runtime injected everything; a legacy hook must still stay away
                    return _VOID_ONLY if config.void_visible_devices else None

        if self.refusal is not None and self.mode == "native":
            raise self._fail(_RUNTIME, pod, container, self.refusal)
        void = config.void_visible_devices
        key = (requests, void)  # requests (immutable, hash cached) rather than names: no copy
        answer = self._cache.get(key)
        if answer is None:
            names = tuple(r.name for r in requests)
            extra = (_VOID,) if void else ()
            try:
                edits = merge_edits([devices[name] for name in names])
                if self.mode == "native":
                    if self._applies_cdi_names and any(
                        item.startswith(VISIBLE_DEVICES + "=") for item in edits.env
                    ):
                        # The runtime appends the specs' env after applying ours (as for its
                        # own CDI requests): the spec's value comes last, where a legacy hook
                        # reads it, and ours would only repeat it.
                        extra = ()
                    adjustment = adjust_mod.native_adjustment(names, extra)
                else:
                    adjustment = adjust_mod.resolved_adjustment(edits, extra, config.host_root)
            except (CdiError, adjust_mod.AdjustError) as error:
                raise self._fail(_HOST, pod, container, str(error)) from None
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            tail = logfmt(
                mode=self.mode, source=describe_sources(requests), devices=",".join(names)
            )
            answer = self._cache[key] = _answer(adjustment, tail)

        self.metrics.injected(self.mode, len(requests))
        if log.isEnabledFor(logging.INFO):
            log_info(log, _InjectedLine(namespace, pod.name, name, answer.tail).text)
        return answer

    def _current_snapshot(self) -> Snapshot:
        snapshot = self.registry.snapshot
        if snapshot is not self._snapshot:
            # a refresh happened: every cached adjustment may be stale
            self._cache.clear()
            self._evidence_cache.clear()
            self._snapshot = snapshot
        return snapshot

    def _injected_by_runtime(
        self, container: api.Container, names: Sequence[str], devices: Mapping[str, ResolvedDevice]
    ) -> set[str]:
        """Those of `names` the runtime's CDI support (which runs before NRI) evidently
        injected: the container already has all of the device's own device nodes and hooks.

        Hooks matter for privileged containers, which get every host device node anyway.
        """
        present = {device.path for device in container.linux.devices}
        if not present:
            return set()
        hooks = {
            (hook.path, tuple(hook.args))
            for stage in adjust_mod.HOOK_FIELDS.values()
            for hook in getattr(container.hooks, stage)
        }
        found = set()
        for name in names:
            paths, own_hooks = self._evidence(name, devices[name])
            if paths and paths <= present and own_hooks <= hooks:
                found.add(name)
        return found

    def _evidence(
        self, name: str, resolved: ResolvedDevice
    ) -> tuple[frozenset[str], frozenset[tuple[str, tuple[str, ...]]]]:
        evidence = self._evidence_cache.get(name)
        if evidence is None:
            edits = resolved.device.container_edits
            evidence = self._evidence_cache[name] = (
                frozenset(node.path for node in edits.device_nodes),
                frozenset((hook.path, tuple(hook.args)) for hook in edits.hooks),
            )
        return evidence

    def _unknown(self, missing: Sequence[Request], snapshot: Snapshot) -> str:
        first = missing[0]
        kind = first.name.partition("=")[0]
        known = sorted(
            name.partition("=")[2] for name in snapshot.devices if name.startswith(kind + "=")
        )
        text = (
            f"{first.source} requests unknown CDI device {quote(first.name)} "
            f"(spec dirs {', '.join(self.registry.spec_dirs)}; "
            + (f"known {kind} devices: {listing(known)})" if known else f"no {kind} devices)")
        )
        if len(missing) > 1:
            text += "; also unknown: " + listing(
                [f"{quote(r.name)} ({r.source})" for r in missing[1:]]
            )
        if snapshot.errors:
            errors = next(iter(snapshot.errors.values()))
            text += f"; {len(snapshot.errors)} spec file(s) failed to load, e.g. {errors[0]}"
        return text

    def _fail(
        self, failure: _Failure, pod: api.PodSandbox, container: api.Container, message: str
    ) -> RpcError:
        self.metrics.error(failure.reason)
        where = f"pod {pod.namespace}/{pod.name} container {container.name}"
        error = RpcError(failure.code, f"gpu-cdi: {where}: {message}")
        log.warning(
            "%s",
            logfmt(
                msg="refused",
                pod=f"{pod.namespace}/{pod.name}",
                container=container.name,
                reason=failure.reason,
                error=bounded(message),
            ),
        )
        return error


def log_refresh(snapshot: Snapshot) -> None:
    """Registry refresh callback: the device count, and every spec file that failed."""
    log.info(
        "%s",
        logfmt(msg="CDI specs loaded", devices=len(snapshot.devices), files=len(snapshot.specs)),
    )
    for path, errors in snapshot.errors.items():
        for error in errors:
            log.warning("%s", logfmt(msg="CDI spec error", path=path, error=error))


def drop_in_config(config: Config, text: str) -> Config:
    """`config` with the runtime's drop-in config for this plugin applied (some keys only)."""
    source = "NRI plugin config from the runtime"
    try:
        data = config_mod.parse(text, source)
        if isinstance(data, dict):
            fixed = sorted(str(key) for key in data if key not in _DROP_IN_KEYS)
            if fixed:
                raise ConfigError(
                    f"{source}: {fixed[0]}: cannot be set here, only on the command line or in "
                    f"the config file (settable here: {', '.join(sorted(_DROP_IN_KEYS))})"
                )
        updated = config_mod.from_mapping(data, source, config)
    except ConfigError as error:
        raise RpcError(Code.INVALID_ARGUMENT, str(error)) from None
    if updated.log_level != config.log_level:
        logging.getLogger().setLevel(updated.log_level.upper())
    return updated
