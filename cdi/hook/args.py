"""The hook command line: one or more chained `ACTION [--flag value]...` groups.

A token equal to an action name starts the next group unless it is the value of the flag just
before it. Parsed by hand: importing argparse costs ~1.5 ms of start-up on every container start,
and argparse has no notion of chained subcommands anyway. Everything is checked before any
action runs, so a typo never leaves a container half-prepared.
"""

from __future__ import annotations

from cdi.hook.errors import UsageError

# typing costs ~8 ms of start-up (it imports re): the annotations need it for checking only.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from cdi.hook.rootfs import Rootfs
    from cdi.hook.state import Container

    Bound = Callable[[Rootfs, Container], object]

PROG = "gpu-cdi-hook"
DEFAULT_LDCONFIG = "/sbin/ldconfig"

# action -> {flag: repeatable}
FLAGS: dict[str, dict[str, bool]] = {
    "create-symlinks": {"--link": True, "--link-if-target": True},
    "update-ldcache": {"--folder": True, "--ldconfig-path": False},
    "enable-cuda-compat": {"--host-driver-version": False},
    "disable-device-node-modification": {},
    "update-application-profile": {},
    "chmod": {"--mode": False, "--path": True},
}

USAGE = f"""usage: {PROG} ACTION [--flag VALUE]... [ACTION [--flag VALUE]...]...
Runs as an OCI createContainer hook: reads the container state on stdin and acts inside the
container's rootfs. Several actions may follow each other in one call; they run in order.
actions:
  create-symlinks --link TARGET::LINK ...           ln -sf TARGET LINK
                  --link-if-target TARGET::LINK ... the same, only if TARGET is one of the
                                                    container's device nodes (DRM by-path links)
  update-ldcache --folder DIR ... [--ldconfig-path P]  add DIRs to ld.so.conf.d, run ldconfig
  enable-cuda-compat --host-driver-version V        use /usr/local/cuda/compat if newer
  disable-device-node-modification                  ModifyDeviceFiles: 0 for the container
  update-application-profile                        EGL/Vulkan see only the container's GPUs
  chmod --mode MODE --path PATH ...                 chmod inside the rootfs (if present)
"""


class Step:
    """One parsed action: its name and its flag values (each flag's values in order)."""

    __slots__ = ("action", "options")

    def __init__(self, action: str, options: dict[str, list[str]]) -> None:
        self.action = action
        self.options = options


def split_steps(argv: list[str]) -> list[Step]:
    """Split the argument list into action groups; checks names and flags, not values."""
    if not argv:
        raise UsageError(f"no action given (expected one of: {', '.join(FLAGS)})")
    steps: list[Step] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        i += 1
        if token in FLAGS:
            steps.append(Step(token, {}))
            continue
        if not steps:
            raise UsageError(f"unknown action {token!r} (expected one of: {', '.join(FLAGS)})")
        step = steps[-1]
        if not token.startswith("--"):
            raise UsageError(
                f"{step.action}: unexpected argument {token!r} "
                f"(not a flag, and not an action: {', '.join(FLAGS)})"
            )
        flag, eq, value = token.partition("=")
        known = FLAGS[step.action]
        if flag not in known:
            allowed = ", ".join(known) or "none"
            raise UsageError(f"{step.action}: unknown flag {flag} (allowed: {allowed})")
        if not eq:
            if i >= len(argv):
                raise UsageError(f"{step.action}: flag {flag} needs a value")
            value = argv[i]
            i += 1
        values = step.options.setdefault(flag, [])
        if values and not known[flag]:
            raise UsageError(f"{step.action}: flag {flag} given more than once")
        values.append(value)
    return steps


def _abs(step: Step, flag: str, value: str) -> str:
    if not value.startswith("/") or "\0" in value:
        raise UsageError(f"{step.action}: {flag} {value!r} is not an absolute container path")
    return value


def _one(step: Step, flag: str) -> str:
    values = step.options.get(flag)
    if not values:
        raise UsageError(f"{step.action}: flag {flag} is required")
    return values[0]


def _link(step: Step, flag: str, value: str) -> tuple[str, str]:
    target, sep, link = value.partition("::")
    if not sep or not target or not link or "\0" in target:
        raise UsageError(f"{step.action}: {flag} {value!r} is not TARGET::LINK")
    return target, _abs(step, flag, link)


def _mode(step: Step, value: str) -> int:
    try:
        mode = int(value, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o7777:
        raise UsageError(f"{step.action}: --mode {value!r} is not an octal mode such as 755")
    return mode


def bind(step: Step) -> tuple[str, Bound]:
    """Check the values of one step and return (action name, callable taking the rootfs)."""
    from cdi.hook import actions

    opts = step.options
    name = step.action
    if name == "create-symlinks":
        links = [_link(step, "--link", v) for v in opts.get("--link", [])]
        flag = "--link-if-target"
        optional = [_link(step, flag, v) for v in opts.get(flag, [])]
        return name, lambda root, c: actions.create_symlinks(root, c, links, optional)
    if name == "update-ldcache":
        folders = [_abs(step, "--folder", v) for v in opts.get("--folder", [])]
        ldconfig = opts.get("--ldconfig-path", [DEFAULT_LDCONFIG])[0]
        if not ldconfig.startswith("/") or "\0" in ldconfig:
            raise UsageError(f"{name}: --ldconfig-path {ldconfig!r} is not an absolute host path")
        return name, lambda root, c: actions.update_ldcache(root, folders, ldconfig)
    if name == "enable-cuda-compat":
        version = _one(step, "--host-driver-version")
        try:
            actions.driver_major(version)
        except Exception as err:
            raise UsageError(str(err)) from None
        return name, lambda root, c: actions.enable_cuda_compat(root, version)
    if name == "disable-device-node-modification":
        return name, lambda root, c: actions.disable_device_node_modification(root)
    if name == "update-application-profile":
        return name, actions.update_application_profile
    if name == "chmod":
        mode = _mode(step, _one(step, "--mode"))
        paths = [_abs(step, "--path", v) for v in opts.get("--path", [])]
        if not paths:
            raise UsageError(f"{name}: flag --path is required")
        return name, lambda root, c: actions.chmod(root, mode, paths)
    raise UsageError(f"unknown action {name!r}")  # unreachable: split_steps checked it


def parse(argv: list[str]) -> list[tuple[str, Bound]]:
    """Parse and check the whole command line."""
    return [bind(step) for step in split_steps(argv)]
