"""`gpu-cdi generate`: inventory (discovered or loaded) -> spec data -> validated text -> write.

Every user error becomes one `GenerateError` line and exit code 2, before anything is written.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import NamedTuple, TextIO

from cdi.nvidia.build import Built, Options
from cdi.nvidia.inventory import Inventory

EXTENSIONS = {".yaml": "yaml", ".json": "json"}


class GenerateError(Exception):
    """A bad request or an impossible one; the message is the whole story, on one line."""


class Target(NamedTuple):
    """Where and how the spec goes: `path` "" is stdout."""

    path: str
    fmt: str
    check: bool = False


def output_target(output: str, fmt: str | None, check: bool) -> Target:
    """The output file and format from --output/--format, as nvidia-ctk picks them."""
    if not output:
        if check:
            raise GenerateError("--check needs --output FILE: the spec to compare with")
        return Target("", fmt or "yaml")
    ext = os.path.splitext(output)[1]
    if ext not in EXTENSIONS:
        # nvidia-ctk appends the extension; registries ignore files without one.
        output += "." + (fmt or "yaml")
    elif fmt is not None and EXTENSIONS[ext] != fmt:
        raise GenerateError(
            f"--format {fmt} conflicts with --output {output}: a {ext} file must hold "
            f"{EXTENSIONS[ext].upper()} (CDI registries choose the parser by extension)"
        )
    return Target(output, EXTENSIONS[os.path.splitext(output)[1]], check)


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.lstrip("v").split("."))


def build_for_version(
    inventory: Inventory, options: Options, version: str | None, warn: Callable[[str], None]
) -> Built:
    """Build; for a cdiVersion below 0.7.0 leave additionalGids out and say so."""
    from cdi.nvidia.build import BuildError, build

    try:
        built = build(inventory, options)
        too_old = version is not None and _version_key(version) < (0, 7, 0)
        if too_old and "additionalGids" in built.version_reason:
            edits = [device["containerEdits"] for device in built.data["devices"]]
            gids = sorted({gid for e in edits for gid in e.get("additionalGids", ())})
            built = build(inventory, options._replace(additional_gids=False))
            warn(
                f"note: cdiVersion {version} has no additionalGids: left out, so containers do not "
                f"get groups {', '.join(map(str, gids))} for the /dev/dri nodes "
                "(run them with those groups, or as root, to use DRM)"
            )
    except BuildError as error:
        raise GenerateError(str(error)) from None
    return built


def render(built: Built, fmt: str, version: str | None, source: str) -> str:
    """Validated spec text (the CDI core's checks and writer rules)."""
    from cdi.errors import CdiError
    from cdi.schema import spec_from_data
    from cdi.writer import render_spec

    try:
        spec = spec_from_data(built.data, source)
        return render_spec(spec, fmt=fmt, version=version)
    except CdiError as error:
        raise GenerateError(str(error)) from None


def version_note(built: Built, version: str | None) -> str | None:
    """One line when the spec needs a cdiVersion that older consumers reject."""
    needed = version or built.data["cdiVersion"]
    if "additionalGids" in built.version_reason and _version_key(needed) >= (0, 7, 0):
        return (
            f"note: this spec needs cdiVersion {needed} (additionalGids for /dev/dri); "
            "podman < 5 and containerd built with a CDI library < 0.7 reject it: "
            "use --cdi-version 0.5.0 for them"
        )
    return None


def diff(path: str, old: str, new: str) -> str:
    """A unified diff from the spec on disk to the one this host gives now."""
    import difflib

    lines = difflib.unified_diff(
        old.splitlines(keepends=True),
        new.splitlines(keepends=True),
        fromfile=f"{path} (on disk)",
        tofile=f"{path} (this host now)",
    )
    return "".join(lines)


def relaid(old: str, new: str, fmt: str) -> str | None:
    """`old` laid out as we lay out specs, so a diff against `new` shows only real changes
    (e.g. against a spec nvidia-ctk wrote); None when `old` is not YAML or JSON data."""
    from cdi.dump import dump_spec
    from cdi.errors import CdiError
    from cdi.schema import spec_from_data
    from cdi.yamlload import YamlError, load_yaml

    try:
        return dump_spec(spec_from_data(load_yaml(old), "old"), fmt)
    except (YamlError, CdiError, TypeError, ValueError):
        return None


def emit(text: str, target: Target, out: TextIO, err: TextIO) -> int:
    """Print, check or write `text` to `target`; returns the exit code."""
    from cdi.errors import WriteError
    from cdi.writer import write_atomic

    if not target.path:
        out.write(text)
        return 0
    try:
        with open(target.path, encoding="utf-8") as stream:
            old: str | None = stream.read()
    except FileNotFoundError:
        old = None
    except (OSError, UnicodeDecodeError) as error:
        if target.check:
            raise GenerateError(f"--check: cannot read {target.path}: {error}") from None
        old = None
    if target.check:
        if old is None:
            err.write(f"{target.path}: missing: this host would write a spec there\n")
            return 1
        if old == text:
            err.write(f"{target.path}: up to date\n")
            return 0
        ours = relaid(old, text, target.fmt)
        if ours == text:
            err.write(f"{target.path}: up to date (same content, laid out differently)\n")
            return 0
        out.write(diff(target.path, ours or old, text))
        err.write(f"{target.path}: stale: it differs from what this host gives now (diff above)\n")
        return 1
    if old == text:
        err.write(f"{target.path}: unchanged, not rewritten\n")
        return 0
    try:
        write_atomic(target.path, text.encode())
    except WriteError as error:
        raise GenerateError(str(error)) from None
    err.write(f"{target.path}: written\n")
    return 0


def warn_to(stream: TextIO) -> Callable[[str], None]:
    """A one-line warning printer."""
    return lambda line: print(line, file=stream)


def run(
    inventory: Inventory,
    options: Options,
    target: Target,
    version: str | None,
    strict: bool = False,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """Build, validate and emit; notes and warnings go to `err`, one line each."""
    warn = warn_to(err)
    later: list[str] = []  # said once the spec is known to be valid
    built = build_for_version(inventory, options, version, later.append)
    for note in built.notes:
        warn(f"warning: {note}")
    if strict and built.notes:
        raise GenerateError(
            f"--strict: {len(built.notes)} device(s) would be left out (above); nothing written"
        )
    text = render(built, target.fmt, version, target.path or "spec")
    for said in later:
        warn(said)
    code = emit(text, target, out, err)
    advice = version_note(built, version)
    if advice and not target.check:
        warn(advice)
    return code
