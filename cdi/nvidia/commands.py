"""`gpu-cdi generate` and `gpu-cdi inventory`: flags (named as nvidia-ctk names them) -> run.

Only argparse is imported up front: pynvml, yaml and the CDI core load when a path needs them.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from cdi.node.hookpath import FALLBACK, HOOK_PROGRAM, default_hook_path, missing_warning


def add_discovery_flags(parser: argparse.ArgumentParser, *, saved_inventory: bool = True) -> None:
    """Add the flags that say where the node is; `gpu-cdi generate`, `gpu-cdi inventory` and
    the device plugin share them. Read them back with `inventory_from_args` (or
    `roots_from_args`). `saved_inventory` adds --inventory FILE."""
    parser.add_argument(
        "--driver-root",
        default=None,
        metavar="DIR",
        help="the driver's root on the node, e.g. /run/nvidia/driver (default /)",
    )
    parser.add_argument(
        "--dev-root",
        default=None,
        metavar="DIR",
        help="root of the node's /dev nodes (default: the driver root)",
    )
    parser.add_argument(
        "--host-root",
        default=None,
        metavar="DIR",
        help="where the node's / is mounted in this container, e.g. /host: the driver, /dev, "
        "/proc and /sys are read under it and every path is written as the node sees it "
        "(default /: running on the node)",
    )
    parser.add_argument(
        "--proc-sys-root",
        default=None,
        metavar="DIR",
        help="root of the node's /proc and /sys, where GPUs' DRM nodes and MIG minors are "
        "looked up (default /; for fake or captured hosts)",
    )
    parser.add_argument(
        "--library-search-path",
        action="append",
        default=[],
        metavar="DIR",
        help="extra driver library directory, inside the driver root (repeatable)",
    )
    if saved_inventory:
        parser.add_argument(
            "--inventory",
            default=None,
            metavar="FILE",
            help="a saved inventory (gpu-cdi inventory) instead of discovering this node",
        )


def _add_mode(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--mode",
        "--discovery-mode",
        choices=("nvml", "management", "imex"),
        default="nvml",
        help="what the spec gives containers (default nvml)",
    )


def generate_arguments(g: argparse.ArgumentParser) -> None:
    """The arguments of `gpu-cdi generate`."""
    g.description = (
        "Generate a CDI spec for the NVIDIA GPUs of this host, or of a saved "
        "inventory (--inventory FILE, no driver needed)."
    )
    g.add_argument("--output", metavar="FILE", help="spec file (default or -: stdout)")
    g.add_argument(
        "--format",
        choices=("yaml", "json"),
        default=None,
        help="yaml or json (default: from the --output extension, else yaml)",
    )
    g.add_argument(
        "--device-name-strategy",
        action="append",
        default=[],
        metavar="S",
        help="index, uuid or type-index; repeatable (default index and uuid)",
    )
    g.add_argument(
        "--device-id",
        "--device",
        action="append",
        default=[],
        metavar="ID",
        help="only this GPU index, MIG index (0:1), UUID, 'all' or 'none'",
    )
    g.add_argument("--no-all-device", action="store_true", help="no merged 'all' device")
    g.add_argument(
        "--vendor",
        "--cdi-vendor",
        help="kind vendor (default nvidia.com; management.nvidia.com for --mode management)",
    )
    g.add_argument(
        "--class",
        "--cdi-class",
        dest="cls",
        metavar="CLASS",
        help="kind class (default gpu; imex-channel for --mode imex)",
    )
    g.add_argument(
        "--hook-path",
        "--nvidia-cdi-hook-path",
        default=None,
        metavar="PATH",
        help=f"hook program in the spec (default: the {HOOK_PROGRAM} beside gpu-cdi, else on "
        f"PATH, else {FALLBACK}; see gpu-cdi install-hook)",
    )
    g.add_argument(
        "--disable-hook",
        action="append",
        default=[],
        metavar="NAME",
        help="leave a hook action out (repeatable, or 'all')",
    )
    g.add_argument(
        "--enable-hook",
        action="append",
        default=[],
        metavar="NAME",
        help="turn a hook action on, e.g. chmod (repeatable)",
    )
    g.add_argument(
        "--one-hook-per-action",
        action="store_true",
        help="one hook per action instead of one chained gpu-cdi-hook call",
    )
    g.add_argument(
        "--ldconfig-path",
        default="",
        metavar="PATH",
        help="ldconfig the update-ldcache action runs in containers",
    )
    g.add_argument(
        "--cdi-version",
        default=None,
        metavar="V",
        help="write this cdiVersion, e.g. 0.5.0 for podman 4 (default: the minimum)",
    )
    g.add_argument(
        "--check",
        action="store_true",
        help="compare --output with what this host gives now; exit 1 with a diff",
    )
    g.add_argument(
        "--strict", action="store_true", help="fail if a GPU or MIG device has to be left out"
    )
    g.add_argument(
        "--allow-empty",
        action="store_true",
        help="replace --output with a spec that has no devices even if it has some",
    )
    add_discovery_flags(g)
    _add_mode(g)
    g.set_defaults(func=generate_command)


def inventory_arguments(i: argparse.ArgumentParser) -> None:
    """The arguments of `gpu-cdi inventory`."""
    i.description = (
        "Discover this host and print its inventory; "
        "`gpu-cdi generate --inventory FILE` builds a spec from it."
    )
    i.add_argument("--output", metavar="FILE", help="file (default or -: stdout)")
    add_discovery_flags(i, saved_inventory=False)
    _add_mode(i)
    i.set_defaults(func=inventory_command)


class UsageError(Exception):
    """Conflicting or invalid flags."""


def _split(values: list[str]) -> list[str]:
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def _hooks(disable: list[str], enable: list[str]) -> frozenset[str]:
    from cdi.nvidia.build import DEFAULT_HOOKS, HOOKS

    for name in (*disable, *enable):
        if name not in HOOKS and name != "all":
            raise UsageError(f"unknown hook {name!r} (one of {', '.join(HOOKS)}, or all)")
    if "all" in enable:
        raise UsageError("--enable-hook all is not allowed: name the hooks to enable")
    hooks = set() if "all" in disable else set(DEFAULT_HOOKS) - set(disable)
    return frozenset(hooks | set(enable))


def _no_empty_values(args: argparse.Namespace) -> None:
    """UsageError for a flag given an empty value (an unset shell variable, say): it must not
    quietly mean the default."""
    for flag in ("--output", "--inventory", "--hook-path"):
        if getattr(args, flag[2:].replace("-", "_"), None) == "":
            raise UsageError(f"{flag} '': empty (leave the flag out for its default)")
    for flag in ("--device-id", "--device-name-strategy", "--disable-hook", "--enable-hook"):
        for value in getattr(args, flag[2:].replace("-", "_"), ()):
            if "" in (item.strip() for item in value.split(",")):
                raise UsageError(f"{flag} {value!r}: an empty item")


def _options(args: argparse.Namespace) -> Any:
    from cdi.names import class_error, vendor_error
    from cdi.nvidia import naming
    from cdi.nvidia.build import DEFAULT_KINDS, Options
    from cdi.version import FLOOR_VERSION, KNOWN_VERSIONS, parse_version

    vendor, cls = DEFAULT_KINDS[args.mode]
    vendor = vendor if args.vendor is None else args.vendor
    cls = cls if args.cls is None else args.cls
    for error in (vendor_error(vendor), class_error(cls)):
        if error:
            raise UsageError(error)
    try:
        strategies = naming.unique_strategies(
            _split(args.device_name_strategy) or naming.DEFAULT_STRATEGIES
        )
    except ValueError as error:
        raise UsageError(f"--device-name-strategy: {error}") from None
    ids = tuple(_split(args.device_id)) or ("all",)
    if "none" in ids and len(ids) > 1:
        raise UsageError(f"--device-id none conflicts with --device-id {', '.join(ids)}")
    if args.cdi_version is not None:
        key = parse_version(args.cdi_version)
        if key is None or key < KNOWN_VERSIONS[FLOOR_VERSION]:
            usable = [v for v, k in KNOWN_VERSIONS.items() if k >= KNOWN_VERSIONS[FLOOR_VERSION]]
            raise UsageError(
                f"--cdi-version {args.cdi_version!r}: not a CDI version the reference library "
                f"0.8.0 reads ({', '.join(usable)})"
            )
    return Options(
        vendor=vendor,
        cls=cls,
        mode=args.mode,
        strategies=strategies,
        device_ids=ids,
        all_device=not args.no_all_device and "none" not in ids,
        hook_path=args.hook_path or default_hook_path(),
        hooks=_hooks(_split(args.disable_hook), _split(args.enable_hook)),
        hook_per_action=args.one_hook_per_action,
        ldconfig_path=args.ldconfig_path,
    )


def _absolute(flag: str, value: str | None) -> str | None:
    if value is None:
        return None
    if not value.startswith("/"):
        raise UsageError(f"{flag} {value!r}: must be an absolute path")
    return os.path.normpath(value)


def roots_from_args(args: argparse.Namespace) -> Any:
    """The `cdi.nvidia.roots.Roots` the discovery flags describe; UsageError for a bad path."""
    from cdi.nvidia.roots import Roots

    driver_root = _absolute("--driver-root", args.driver_root) or "/"
    return Roots(
        driver_root=driver_root,
        dev_root=_absolute("--dev-root", args.dev_root) or driver_root,
        host_root=_absolute("--host-root", args.host_root) or "/",
        proc_sys_root=_absolute("--proc-sys-root", args.proc_sys_root) or "/",
        library_search_paths=tuple(
            _absolute("--library-search-path", p) or "" for p in args.library_search_path
        ),
    )


def inventory_from_args(args: argparse.Namespace, mode: str = "nvml") -> Any:
    """The Inventory the discovery flags ask for: the node discovered, or --inventory FILE.

    Raises UsageError (bad or conflicting flags), cdi.nvidia.discover.DiscoveryError (no
    driver, a root missing, NVML failing) or cdi.nvidia.inventory.InventoryError (a bad saved
    inventory): one line each, naming the flag or file.
    """
    if getattr(args, "inventory", None):
        return _saved_inventory(args)
    from cdi.nvidia.discover import discover

    return discover(roots_from_args(args), mode)


def _saved_inventory(args: argparse.Namespace) -> Any:
    from cdi.nvidia import inventory

    if args.host_root is not None or args.proc_sys_root is not None or args.library_search_path:
        raise UsageError(
            "--inventory conflicts with --host-root, --proc-sys-root and "
            "--library-search-path: a saved inventory is not discovered again"
        )
    inv = inventory.load(args.inventory)
    # The roots say where the inventory's files are on the machine the spec is for.
    driver_root = _absolute("--driver-root", args.driver_root)
    dev_root = _absolute("--dev-root", args.dev_root)
    if driver_root is not None:
        inv = inv._replace(driver_root=driver_root, dev_root=dev_root or driver_root)
    elif dev_root is not None:
        inv = inv._replace(dev_root=dev_root)
    return inv


def _fail(command: str, message: str) -> int:
    print(f"gpu-cdi {command}: error: {message}", file=sys.stderr)
    return 2


def generate_command(args: argparse.Namespace) -> int:
    """Run `gpu-cdi generate`."""
    from cdi.nvidia import generate
    from cdi.nvidia.discover import DiscoveryError
    from cdi.nvidia.inventory import InventoryError

    try:
        _no_empty_values(args)
        options = _options(args)
        target = generate.output_target(args.output, args.format, args.check)
        inv = inventory_from_args(args, args.mode)
        version = args.cdi_version.removeprefix("v") if args.cdi_version else None
        missing = None if args.hook_path else missing_warning(options.hook_path, args.host_root)
        if missing:
            print(missing, file=sys.stderr)
        return generate.run(
            inv, options, target, version, strict=args.strict, allow_empty=args.allow_empty
        )
    except (UsageError, generate.GenerateError, DiscoveryError, InventoryError) as error:
        return _fail("generate", str(error))


def inventory_command(args: argparse.Namespace) -> int:
    """Run `gpu-cdi inventory`."""
    from cdi.errors import WriteError
    from cdi.nvidia import inventory
    from cdi.nvidia.discover import DiscoveryError
    from cdi.writer import check_output, write_text

    to_file = args.output not in (None, "-")
    try:
        _no_empty_values(args)
        if to_file:
            check_output(args.output)  # before the work, as generate does
        text = inventory.dump(inventory_from_args(args, args.mode))
        if to_file:
            write_text(args.output, text)
        else:
            sys.stdout.write(text)
    except (UsageError, DiscoveryError, WriteError) as error:
        return _fail("inventory", str(error))
    return 0
