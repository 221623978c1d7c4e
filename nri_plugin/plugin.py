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

import attrs

from cdi.errors import CdiError, quote
from cdi.inject import merge_edits
from cdi.registry import Registry, ResolvedDevice, Snapshot
from nri_plugin import adjust as adjust_mod
from nri_plugin import config as config_mod
from nri_plugin.config import Config, ConfigError
from nri_plugin.metrics import Metrics
from nri_plugin.policy import PolicyError, check, env_counts, runtime_handled
from nri_plugin.protocol import Code, Plugin, RpcError, api
from nri_plugin.requests import Request, RequestError, container_requests
from nri_plugin.runtime_cdi import RuntimeProbe, choose_mode, restricts_annotations

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


def _logfmt(**fields: object) -> str:
    parts = []
    for key, value in fields.items():
        text = str(value)
        if not text or any(c in text for c in ' "=\\'):
            text = quote(text)
        parts.append(f"{key}={text}")
    return " ".join(parts)


@attrs.frozen
class _Failure:
    code: int
    reason: str  # metrics label


_VOID_ONLY = api.CreateContainerResponse(
    adjust=api.ContainerAdjustment(env=[api.KeyValue(key="NVIDIA_VISIBLE_DEVICES", value="void")])
)

_BAD_REQUEST = _Failure(Code.INVALID_ARGUMENT, "request")
_DENIED = _Failure(Code.PERMISSION_DENIED, "policy")
_UNKNOWN = _Failure(Code.NOT_FOUND, "unknown_device")
_HOST = _Failure(Code.FAILED_PRECONDITION, "host")
_RUNTIME = _Failure(Code.FAILED_PRECONDITION, "runtime")


class GpuCdiPlugin(Plugin):
    """NRI plugin giving containers the CDI devices they request (see the module docstring)."""

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
        # (names, void) -> (response, log tail), valid for one registry snapshot only
        self._cache: dict[
            tuple[tuple[str, ...], bool], tuple[api.CreateContainerResponse, str]
        ] = {}
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
        level = logging.INFO if choice.refusal is None else logging.ERROR
        log.log(
            level,
            "%s",
            _logfmt(msg="configured", runtime=self.runtime, mode=self.mode, why=choice.why),
        )
        for warning in choice.warnings:
            log.warning("%s", _logfmt(msg="policy bypass", warning=warning))
        return None

    async def create_container(
        self, pod: api.PodSandbox, container: api.Container
    ) -> api.CreateContainerResponse | None:
        """The response for one container: its adjustment (None: nothing requested)."""
        start = time.perf_counter()
        try:
            return self.adjust(pod, container)
        finally:
            self.metrics.observe(time.perf_counter() - start)

    # -- the work --------------------------------------------------------------------------

    def adjust(
        self, pod: api.PodSandbox, container: api.Container
    ) -> api.CreateContainerResponse | None:
        """Synchronous core of create_container (also what the benchmark times).

        The response is shared between containers asking for the same devices: callers
        must not modify it.
        """
        config = self.config
        policy = config.policy
        try:
            requests = container_requests(
                container.name,
                container.annotations,
                pod.annotations,
                container.env,
                use_env=env_counts(policy, is_privileged(container)),
                env_kind=config.env_kind,
            )
        except RequestError as error:
            raise self._fail(_BAD_REQUEST, pod, container, str(error)) from None
        if not requests:
            return None
        for source in {r.source.key for r in requests}:
            self.metrics.request(source.split("/", 1)[0])
        try:
            check(policy, pod.namespace, requests)
        except PolicyError as error:
            raise self._fail(_DENIED, pod, container, str(error)) from None

        snapshot = self._current_snapshot()
        devices = snapshot.devices
        missing = [r for r in requests if r.name not in devices]
        if missing:
            raise self._fail(_UNKNOWN, pod, container, self._unknown(missing, snapshot))
        if policy.runtime_cdi != "inject" and any(r.source.is_cdi_annotation for r in requests):
            cdi_names = [r.name for r in requests if r.source.is_cdi_annotation]
            present = self._injected_by_runtime(container, cdi_names, devices)
            handled = runtime_handled(policy, requests, present)
            if handled:
                log.debug(
                    "%s",
                    _logfmt(
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
        names = tuple(r.name for r in requests)
        void = config.void_visible_devices
        key = (names, void)
        cached = self._cache.get(key)
        if cached is None:
            extra = (("NVIDIA_VISIBLE_DEVICES", "void"),) if void else ()
            try:
                if self.mode == "native":
                    adjustment = adjust_mod.native_adjustment(names, extra)
                else:
                    edits = merge_edits([devices[name] for name in names])
                    adjustment = adjust_mod.resolved_adjustment(edits, extra, config.host_root)
            except (CdiError, adjust_mod.AdjustError) as error:
                raise self._fail(_HOST, pod, container, str(error)) from None
            tail = _logfmt(devices=",".join(names))
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            cached = self._cache[key] = (api.CreateContainerResponse(adjust=adjustment), tail)
        response, tail = cached

        self.metrics.injected(self.mode, len(names))
        if log.isEnabledFor(logging.INFO):
            sources = ",".join(str(source) for source in dict.fromkeys(r.source for r in requests))
            head = _logfmt(
                pod=f"{pod.namespace}/{pod.name}",
                container=container.name,
                mode=self.mode,
                source=sources,
            )
            log.info("msg=injected %s %s", head, tail)
        return response

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
        listed = ", ".join(known[:12]) + (", ..." if len(known) > 12 else "")
        text = (
            f"{first.source} requests unknown CDI device {quote(first.name)} "
            f"(spec dirs {', '.join(self.registry.spec_dirs)}; "
            + (f"known {kind} devices: {listed})" if known else f"no {kind} devices)")
        )
        if len(missing) > 1:
            others = ", ".join(f"{quote(r.name)} ({r.source})" for r in missing[1:])
            text += f"; also unknown: {others}"
        if snapshot.errors:
            errors = next(iter(snapshot.errors.values()))
            text += f"; {len(snapshot.errors)} spec file(s) failed to load, e.g. {errors[0]}"
        return text

    def _fail(
        self, failure: _Failure, pod: api.PodSandbox, container: api.Container, message: str
    ) -> RpcError:
        self.metrics.error(failure.reason)
        where = f"pod {pod.namespace}/{pod.name} container {container.name}"
        log.warning(
            "%s",
            _logfmt(
                msg="refused",
                pod=f"{pod.namespace}/{pod.name}",
                container=container.name,
                reason=failure.reason,
                error=message,
            ),
        )
        return RpcError(failure.code, f"gpu-cdi: {where}: {message}")


def log_refresh(snapshot: Snapshot) -> None:
    """Registry refresh callback: the device count, and every spec file that failed."""
    log.info(
        "%s",
        _logfmt(msg="CDI specs loaded", devices=len(snapshot.devices), files=len(snapshot.specs)),
    )
    for path, errors in snapshot.errors.items():
        for error in errors:
            log.warning("%s", _logfmt(msg="CDI spec error", path=path, error=error))


def drop_in_config(config: Config, text: str) -> Config:
    """`config` with the runtime's drop-in config for this plugin applied (some keys only)."""
    source = "NRI plugin config from the runtime"
    try:
        import yaml

        data = yaml.safe_load(text)
    except Exception as error:
        raise RpcError(Code.INVALID_ARGUMENT, f"{source}: not valid YAML: {error}") from None
    if isinstance(data, dict):
        fixed = sorted(str(key) for key in data if key not in _DROP_IN_KEYS)
        if fixed:
            raise RpcError(
                Code.INVALID_ARGUMENT,
                f"{source}: {fixed[0]}: cannot be set here, only on the command line or in "
                f"the config file (settable here: {', '.join(sorted(_DROP_IN_KEYS))})",
            )
    try:
        updated = config_mod.from_mapping(data, source, config)
    except ConfigError as error:
        raise RpcError(Code.INVALID_ARGUMENT, str(error)) from None
    if updated.log_level != config.log_level:
        logging.getLogger().setLevel(updated.log_level.upper())
    return updated
