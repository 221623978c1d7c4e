"""`gpu-cdi generate`: inventory (discovered or loaded) -> spec -> validated text -> write.

Every user error becomes one `GenerateError` line and exit code 2, before anything is written.
Long-running programs (the device plugin, the NRI plugin) regenerate in process with
`regenerate`: the same steps, without a process start.
"""

# Annotations are evaluated (no `from __future__ import annotations`): a NamedTuple's string
# annotations are each compiled at class creation, on every `gpu-cdi` start.
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple, TextIO

from cdi.nvidia.build import Built, Options
from cdi.nvidia.inventory import Inventory
from cdi.spec import SPEC_FORMATS, ContainerEdits, Spec

if TYPE_CHECKING:
    from cdi.nvidia.roots import Roots


class GenerateError(Exception):
    """A bad request or an impossible one; the message is the whole story, on one line."""


class Generated(NamedTuple):
    """A spec generated in process, and what to tell about it (one line each)."""

    text: str
    notes: tuple[str, ...]  # devices left out, and why
    advice: tuple[str, ...]  # about the cdiVersion: what consumers need, what was left out
    written: bool  # the file at the given path was (re)written


class Target(NamedTuple):
    """Where and how the spec goes: `path` "" is stdout."""

    path: str
    fmt: str
    check: bool = False


def output_target(output: str | None, fmt: str | None, check: bool) -> Target:
    """The output file and format from --output/--format, as nvidia-ctk picks them; no
    --output, or `-`, is stdout."""
    from cdi.errors import WriteError
    from cdi.writer import check_output

    if output is None or output == "-":
        if check:
            raise GenerateError("--check needs --output FILE: the spec to compare with")
        return Target("", fmt or "yaml")
    ext = os.path.splitext(output)[1]
    try:
        check_output(output)  # /dev/null or a directory must not become /dev/null.yaml
        if ext not in SPEC_FORMATS:
            # nvidia-ctk appends the extension; registries ignore files without one.
            output += "." + (fmt or "yaml")
            check_output(output)
    except WriteError as error:
        raise GenerateError(f"--output {error}") from None
    if ext in SPEC_FORMATS and fmt is not None and SPEC_FORMATS[ext] != fmt:
        raise GenerateError(
            f"--format {fmt} conflicts with --output {output}: a {ext} file must hold "
            f"{SPEC_FORMATS[ext].upper()} (CDI registries choose the parser by extension)"
        )
    return Target(output, SPEC_FORMATS[os.path.splitext(output)[1]], check)


def _has_gids(version: str) -> bool:
    """Whether cdiVersion `version` (one the reference knows) can carry additionalGids."""
    from cdi.version import KNOWN_VERSIONS, parse_version, since

    key = parse_version(version)
    return key is not None and key >= KNOWN_VERSIONS[since(ContainerEdits, "additional_gids")]


def build_for_version(
    inventory: Inventory, options: Options, version: str | None, warn: Callable[[str], None]
) -> Built:
    """Build; for a cdiVersion without additionalGids leave them out and say so."""
    from cdi.nvidia.build import BuildError, build

    try:
        built = build(inventory, options)
        if version is not None and built.gids and not _has_gids(version):
            gids = built.gids
            built = build(inventory, options._replace(additional_gids=False))
            warn(
                f"note: cdiVersion {version} has no additionalGids: left out, so containers do not "
                f"get groups {', '.join(map(str, gids))} for the /dev/dri nodes "
                "(run them with those groups, or as root, to use DRM)"
            )
    except BuildError as error:
        raise GenerateError(str(error)) from None
    return built


def render(built: Built, fmt: str, version: str | None) -> str:
    """Spec text at `version` (default: the built one, the minimum), checked by the CDI core's
    rules: the builder cannot vouch for what it was given (NVML's UUIDs, --hook-path)."""
    from cdi.dump import dump_spec
    from cdi.errors import CdiError, quote
    from cdi.validate import validate_spec
    from cdi.writer import with_version

    try:
        spec = built.spec if version is None else with_version(built.spec, version)
        validate_spec(spec, f"spec {quote(spec.kind)}")
    except CdiError as error:
        raise GenerateError(str(error)) from None
    return dump_spec(spec, fmt)


def version_note(built: Built, version: str | None) -> str | None:
    """One line when the spec needs a cdiVersion that older consumers reject."""
    needed = version or built.spec.version
    if built.gids and _has_gids(needed):
        return (
            f"note: this spec needs cdiVersion {needed} (additionalGids for /dev/dri); "
            "podman < 5 and containerd built with a CDI library < 0.7 reject it: "
            "use --cdi-version 0.5.0 for them"
        )
    return None


def relaid(old: str, new: str, fmt: str) -> str | None:
    """`old` laid out as we lay out specs, so a diff against `new` shows only real changes
    (e.g. against a spec nvidia-ctk wrote); None when `old` is not YAML or JSON data."""
    from cdi.codec import decode_spec
    from cdi.dump import dump_spec
    from cdi.errors import CdiError

    try:
        return dump_spec(decode_spec(old, "old"), fmt)
    except (CdiError, TypeError, ValueError):
        return None


def emit(text: str, target: Target, out: TextIO, err: TextIO) -> int:
    """Print, check or write `text` to `target`; returns the exit code."""
    from cdi.errors import WriteError
    from cdi.writer import write_text

    if not target.path:
        out.write(text)
        return 0
    if target.check:
        return check(text, target.path, target.fmt, out, err)
    try:
        written = write_text(target.path, text)
    except WriteError as error:
        raise GenerateError(str(error)) from None
    err.write(f"{target.path}: {'written' if written else 'unchanged, not rewritten'}\n")
    return 0


def check(text: str, path: str, fmt: str, out: TextIO, err: TextIO) -> int:
    """Compare the spec at `path` with `text`: exit code 0 if it holds the same, else 1 and a
    diff on `out`."""
    try:
        with open(path, encoding="utf-8") as stream:
            old = stream.read()
    except FileNotFoundError:
        err.write(f"{path}: missing: this host would write a spec there\n")
        return 1
    except (OSError, UnicodeDecodeError) as error:
        raise GenerateError(f"--check: cannot read {path}: {error}") from None
    if old == text:
        err.write(f"{path}: up to date\n")
        return 0
    ours = relaid(old, text, fmt)
    if ours == text:
        err.write(f"{path}: up to date (same content, laid out differently)\n")
        return 0
    from cdi.writer import unified_diff

    out.write(unified_diff(ours or old, text, f"{path} (on disk)", f"{path} (this host now)"))
    err.write(f"{path}: stale: it differs from what this host gives now (diff above)\n")
    return 1


def refuse_empty(path: str) -> None:
    """GenerateError when the spec file at `path` has devices: a spec without any would take
    them all away (`--allow-empty` replaces it anyway)."""
    from cdi.codec import decode_spec
    from cdi.errors import CdiError
    from cdi.files import read_regular_file

    try:
        old = decode_spec(read_regular_file(path), path)
    except (OSError, CdiError):
        return  # missing, or nothing a registry could use: nothing is lost
    if old.devices:
        raise GenerateError(
            f"the new spec has no devices: not replacing {path}, which has "
            f"{len(old.devices)} (--allow-empty replaces it)"
        )


def conflict_warnings(path: str, spec: Spec) -> list[str]:
    """One line per other spec file beside `path` that defines some of the same devices."""
    directory, name = os.path.split(os.path.abspath(path))
    try:
        others = [e for e in os.listdir(directory) if e != name and e.endswith(tuple(SPEC_FORMATS))]
    except OSError:
        return []
    if not others:
        return []  # the usual case: no registry (nor YAML parser) to load
    from cdi.registry import same_devices

    lines = []
    for other, names in same_devices(path, spec).items():
        shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
        lines.append(
            f"warning: {other} also defines {shown}: CDI registries drop these devices from "
            "both files as conflicts (give one spec another --vendor/--class, or remove one)"
        )
    return lines


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
    allow_empty: bool = False,
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
    text = render(built, target.fmt, version)
    for said in later:
        warn(said)
    replacing = bool(target.path) and not target.check
    if replacing and not built.spec.devices and not allow_empty:
        refuse_empty(target.path)
    code = emit(text, target, out, err)
    if replacing:
        for line in conflict_warnings(target.path, built.spec):
            warn(line)
    advice = version_note(built, version)
    if advice and not target.check:
        warn(advice)
    return code


def regenerate(
    roots: "Roots",
    options: Options,
    path: str | None = None,
    *,
    version: str | None = None,
) -> Generated:
    """Discover the node `roots` describe and build its spec in process, as `gpu-cdi generate`
    does with the same flags; with `path`, also write it there (atomically, and only when it
    changed; the format is the file's: .yaml or .json). GenerateError (one line) when
    anything fails; nothing is written then."""
    from cdi.errors import WriteError
    from cdi.nvidia.discover import DiscoveryError, discover
    from cdi.writer import format_for, write_text

    try:
        inventory = discover(roots, options.mode)
        fmt = format_for(path) if path else "yaml"
    except (DiscoveryError, WriteError) as error:
        raise GenerateError(str(error)) from None
    advice: list[str] = []
    built = build_for_version(inventory, options, version, advice.append)
    text = render(built, fmt, version)
    note = version_note(built, version)
    if note:
        advice.append(note)
    written = False
    if path:
        try:
            written = write_text(path, text)
        except WriteError as error:
            raise GenerateError(str(error)) from None
    return Generated(text, built.notes, tuple(advice), written)
