"""Which CDI devices a container asks for: annotations and env -> ordered qualified names.

Sources, in precedence order (docs/nri-plugin.md):

1. `cdi.k8s.io/<key>` annotations of the container (the CDI convention, as kubelet's device
   plugins and CRI clients set them): every key, in sorted key order; each value is a
   comma-separated list of qualified names, checked as strictly as the reference library does.
2. `cdi-devices.nri.io` pod annotations (containerd's device-injector convention; its newer
   `cdi-devices.noderesource.dev` domain too): the first present of `.../container.<name>`,
   `.../pod`, the bare key (new domain before old within each); the value is a YAML list.
3. `nvidia.cdi.k8s.io` pod annotations (NVIDIA toolkit convention): the same lookup; the value
   is comma-separated.
4. The container's `NVIDIA_VISIBLE_DEVICES`, only when no annotation asked for anything (as in
   nvidia-container-runtime, the first non-empty source wins; otherwise a CUDA image's
   `NVIDIA_VISIBLE_DEVICES=all` would add every GPU to a container given one by annotation).

The annotation sources are merged in that order; a device named twice keeps its first source.
Everything here is pure: plain mappings and strings in, `Request`s or `RequestError` out.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence

import attrs
import yaml

from cdi.errors import quote
from cdi.names import ANNOTATION_PREFIX, qualified_name_error

NRI_DEVICE_KEY = "cdi-devices.nri.io"
# device-injector >= 0.10 prefers this domain and keeps nri.io as the fallback
NRI_DEVICE_KEYS = ("cdi-devices.noderesource.dev", NRI_DEVICE_KEY)
NVIDIA_DEVICE_KEY = "nvidia.cdi.k8s.io"
_POD_DOMAINS = (*NRI_DEVICE_KEYS, NVIDIA_DEVICE_KEY)
VISIBLE_DEVICES = "NVIDIA_VISIBLE_DEVICES"
DEFAULT_ENV_KIND = "nvidia.com/gpu"

MARKERS = (
    VISIBLE_DEVICES.encode() + b"=",
    ANNOTATION_PREFIX.rstrip("/").encode(),  # in NVIDIA_DEVICE_KEY too
    NRI_DEVICE_KEY.partition(".")[0].encode() + b".",  # "cdi-devices.": both NRI domains
)
"""Byte strings of which a container that requests anything carries at least one, in an
annotation key or its env: a request (serialized) containing none of them asks for nothing.
Long ones: searching 4 kB for a 3-byte string costs about as much as decoding it."""

# Values of NVIDIA_VISIBLE_DEVICES that request nothing (`void` anywhere in the list wins).
_NOTHING = frozenset({"", "none", "void"})

try:
    _YamlLoader: type = yaml.CSafeLoader
except AttributeError:  # PyYAML built without libyaml
    _YamlLoader = yaml.SafeLoader


class RequestError(ValueError):
    """A device request is malformed; the message names the annotation key or env var."""


@attrs.frozen(cache_hash=True)
class Source:
    """Where a request came from: an annotation key (pod or container) or an env var."""

    kind: str  # "annotation" or "env"
    key: str
    scope: str = "container"  # "container" or "pod": whose annotations held the key

    @property
    def is_annotation(self) -> bool:
        """True for any annotation source."""
        return self.kind == "annotation"

    @property
    def is_cdi_annotation(self) -> bool:
        """True for the `cdi.k8s.io/` convention, which a CDI-enabled runtime handles itself."""
        return self.kind == "annotation" and self.key.startswith(ANNOTATION_PREFIX)

    def __str__(self) -> str:
        if self.kind == "env":
            return f"env {self.key}"
        return f"{self.scope} annotation {quote(self.key)}"


@attrs.frozen(cache_hash=True)
class Request:
    """One requested device (qualified name) and where it was asked for."""

    name: str
    source: Source


def effective_key(
    annotations: Mapping[str, str], domains: str | Sequence[str], container: str
) -> str | None:
    """The first present of `<domain>/container.<name>`, `<domain>/pod`, `<domain>`; with
    several domains, each scope is looked up in every domain before the next scope."""
    if isinstance(domains, str):
        domains = (domains,)
    for key in _lookup_order(tuple(domains), container):
        if key in annotations:
            return key
    return None


@functools.lru_cache(maxsize=1024)
def _lookup_order(domains: tuple[str, ...], container: str) -> tuple[str, ...]:
    suffixes = (f"/container.{container}", "/pod", "")
    return tuple(domain + suffix for suffix in suffixes for domain in domains)


# Names repeat across containers (the same GPUs again and again); validating is the costly part.
_name_error = functools.lru_cache(maxsize=4096)(qualified_name_error)


def _checked(name: str, source: Source) -> Request:
    error = _name_error(name)
    if error is not None:
        raise RequestError(f"{source}: {error}")
    return Request(name, source)


def _comma_list(value: str, source: Source) -> list[Request]:
    # Like the reference's ParseAnnotations: no trimming, and an empty item is an error.
    return [_checked(item, source) for item in value.split(",")]


@functools.lru_cache(maxsize=256)
def _yaml_names(value: str) -> tuple[str, ...] | str:
    """The names of a YAML list value, or a description of what is wrong (cached: pod
    annotations repeat for every container of a pod, and YAML parsing is the slow part)."""
    try:
        data = yaml.load(value, Loader=_YamlLoader)
    except yaml.YAMLError as error:
        return f"not valid YAML ({str(error).splitlines()[0]})"
    if data is None:
        return ()
    if not isinstance(data, list):
        return f"expected a YAML list of CDI device names, got a {type(data).__name__}"
    for item in data:
        if not isinstance(item, str):
            return f"expected a YAML list of CDI device names, found the item {item!r}"
    return tuple(data)


def _yaml_list(value: str, source: Source) -> list[Request]:
    names = _yaml_names(value)
    if isinstance(names, str):
        raise RequestError(f"{source}: {names}")
    return [_checked(name, source) for name in names]


def annotation_requests(
    container_name: str,
    container_annotations: Mapping[str, str],
    pod_annotations: Mapping[str, str],
) -> list[Request]:
    """Requests of every annotation source, in precedence order (duplicates not yet removed)."""
    found: list[Request] = []
    keys = [k for k in container_annotations if k.startswith(ANNOTATION_PREFIX)]
    if keys:
        keys.sort()
        for key in keys:
            found += _comma_list(container_annotations[key], Source("annotation", key))
    # Every key effective_key looks up starts with its domain: a pod with no key starting
    # with one (nearly every pod) needs none of those lookups, each a protobuf map access.
    for key in pod_annotations:
        if key.startswith(_POD_DOMAINS):
            break
    else:
        return found
    nri_key = effective_key(pod_annotations, NRI_DEVICE_KEYS, container_name)
    if nri_key is not None:
        found += _yaml_list(pod_annotations[nri_key], Source("annotation", nri_key, "pod"))
    nvidia_key = effective_key(pod_annotations, NVIDIA_DEVICE_KEY, container_name)
    if nvidia_key is not None:
        found += _comma_list(pod_annotations[nvidia_key], Source("annotation", nvidia_key, "pod"))
    return found


def env_value(env: Sequence[str], name: str = VISIBLE_DEVICES) -> str | None:
    """The value of `name` in a `KEY=VALUE` list (the first one: what getenv returns)."""
    # One search in the joined list instead of a Python loop over (often 100) entries, NUL
    # separating them as in a process's environment. A slice makes every entry a str at
    # once (a protobuf list does it item by item otherwise).
    items = env[:]
    key = name + "="
    text = "\0".join(items)
    if text.startswith(key):
        start = len(key)
    else:
        found = text.find("\0" + key)
        if found < 0:
            return None  # every entry but the first follows a NUL: none starts with `key`
        start = found + 1 + len(key)
    if "\0" in "".join(items):  # an entry holding a NUL fakes a boundary: look entry by entry
        return _env_value_loop(items, name)
    end = text.find("\0", start)
    return text[start:] if end < 0 else text[start:end]


def _env_value_loop(env: Iterable[str], name: str) -> str | None:
    prefix = name + "="
    for item in env:
        if item.startswith(prefix):
            return item[len(prefix) :]
    return None


@functools.lru_cache(maxsize=256)
def env_requests(
    value: str, kind: str = DEFAULT_ENV_KIND, var: str = VISIBLE_DEVICES
) -> tuple[Request, ...]:
    """Devices named by an NVIDIA_VISIBLE_DEVICES value, mapped to `<kind>=<id>`.

    `all` anywhere means only `<kind>=all`; `void` anywhere, `none` and empty mean nothing;
    a fully qualified name passes through unchanged.
    """
    source = Source("env", var)
    items = [item.strip() for item in value.split(",")]
    if "void" in items:
        return ()
    items = [item for item in items if item not in _NOTHING]
    if "all" in items:
        items = ["all"]
    return dedupe(_checked(item if "=" in item else f"{kind}={item}", source) for item in items)


def container_requests(
    container_name: str,
    container_annotations: Mapping[str, str],
    pod_annotations: Mapping[str, str],
    env: Sequence[str] = (),
    *,
    use_env: bool = True,
    env_kind: str = DEFAULT_ENV_KIND,
    env_var: str = VISIBLE_DEVICES,
) -> tuple[Request, ...]:
    """Every device the container requests, ordered by precedence, each name once."""
    found = annotation_requests(container_name, container_annotations, pod_annotations)
    if found:
        return dedupe(found)
    if use_env:
        value = env_value(env, env_var)
        if value is not None:
            return env_requests(value, env_kind, env_var)
    return ()


def dedupe(requests: Iterable[Request]) -> tuple[Request, ...]:
    """The requests with repeated names removed (the first keeps its place and source)."""
    seen: dict[str, Request] = {}
    for request in requests:
        seen.setdefault(request.name, request)
    return tuple(seen.values())


def describe_sources(requests: tuple[Request, ...]) -> str:
    """The distinct sources of `requests`, in order, for a log line."""
    return ",".join(str(source) for source in dict.fromkeys(r.source for r in requests))
