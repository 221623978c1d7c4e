"""The hook actions; each acts inside the container rootfs only, through `Rootfs`.

What each leaves in the container is what nvidia-cdi-hook 1.20's action of the same name leaves
(bench/hook_parity.py compares the trees), except where docs/hook.md says otherwise.
"""

from __future__ import annotations

from _stat import S_ISDIR

from cdi.hook import sysos as os  # os without its start-up cost (see sysos)
from cdi.hook.errors import HookError
from cdi.hook.rootfs import Rootfs

TYPE_CHECKING = False  # typing would cost ~8 ms of start-up
if TYPE_CHECKING:
    from cdi.hook.ldconfig import LdconfigRun
    from cdi.hook.state import Container

CONF_D = "/etc/ld.so.conf.d"
# nvidia-cdi-hook's names are 00-nvcr-<random>.conf and zz-nvcr-<random>.conf; ours are fixed,
# so a restarted container's hooks replace them instead of adding more.
LDCACHE_CONF = f"{CONF_D}/00-nvcr-gpu-cdi.conf"
SYSTEM_DIRS_CONF = f"{CONF_D}/zz-nvcr-gpu-cdi.conf"
# Sorts before LDCACHE_CONF, so ldconfig lists the compat libcuda before the host driver's.
COMPAT_CONF = f"{CONF_D}/00-compat-gpu-cdi.conf"
COMPAT_DIR = "/usr/local/cuda/compat"
LD_SO_CONF = "/etc/ld.so.conf"
PARAMS = "/proc/driver/nvidia/params"
PROFILE_DIR = "/etc/nvidia/nvidia-application-profiles-rc.d"
PROFILE = f"{PROFILE_DIR}/10-container.conf"
PROFILE_TEXT = (
    '{"profiles":[{"name":"_container_","settings":["EGLVisibleDGPUDevices",0x%x]}],'
    '"rules":[{"pattern":[],"profile":"_container_"}]}'
)
MAX_PROFILE_MINOR = 63  # the setting is a 64-bit mask of /dev/nvidiaN minors


def _system_dirs(root: Rootfs) -> list[str]:
    """The library directories the container's own dynamic loader searches by default.

    The host's ldconfig has the host's built in (a Debian host's ldconfig does not scan
    /usr/lib64 of a RHEL image, nor the reverse), so they go into a drop-in that sorts last.
    """
    arch = os.uname().machine
    debian = root.lookup("/etc/debian_version")
    if debian is not None and not S_ISDIR(debian.st_mode):
        multiarch = {"x86_64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu"}.get(arch)
        triple = [f"/lib/{multiarch}", f"/usr/lib/{multiarch}"] if multiarch else []
        return [*triple, "/lib", "/usr/lib"]
    extra = {"x86_64": ["/lib64", "/usr/lib64", "/libx32", "/usr/libx32"]}
    return ["/lib", "/usr/lib", *extra.get(arch, ["/lib64", "/usr/lib64"])]


def _dir_list(dirs: list[str]) -> bytes:
    return "".join(f"{d}\n" for d in dict.fromkeys(dirs)).encode()


def create_symlinks(
    root: Rootfs,
    container: Container,
    links: list[tuple[str, str]],
    optional: list[tuple[str, str]] | None = None,
) -> None:
    """For each (target, link): `ln -sf target link` inside the rootfs.

    `optional` links are made only when the container has their target as a device node
    (linux.devices of its config.json). They let the DRM by-path links of every GPU sit in the
    one common hook: a container gets exactly the links of the /dev/dri nodes it was given,
    without a hook process per device.
    """
    for target, link in links:
        root.symlink(target, link)
    if not optional:
        return
    present = container.device_paths()
    for target, link in optional:
        if os.path.normpath(os.path.join(os.path.dirname(link), target)) in present:
            root.symlink(target, link)


def update_ldcache(root: Rootfs, folders: list[str], ldconfig_path: str) -> LdconfigRun:
    """Add `folders` to the container's ld.so.conf.d and rebuild its ld.so.cache and links.

    As nvidia-cdi-hook 1.20: an image without /etc/ld.so.conf gets the standard one; folders
    already configured (or searched by default) are not repeated; the container's default
    search directories go into a last drop-in; on musl (Alpine) the folders also go into the
    loader's .path file. Returns the running ldconfig: its `finish()` installs the cache and
    the SONAME links ldconfig calls for (the hook finishes it after its other actions).
    """
    from cdi.hook.ldconf import LdConf
    from cdi.hook.ldconfig import LdconfigRun

    if root.lookup(LD_SO_CONF, follow=False) is None:
        # Minimal images (busybox, distroless) have no ld.so.conf, so ldconfig would never read
        # the drop-ins; this is the line every glibc distribution ships.
        root.write_file(LD_SO_CONF, b"include /etc/ld.so.conf.d/*.conf\n")
    system = _system_dirs(root)
    ours = frozenset(os.path.basename(p) for p in (LDCACHE_CONF, SYSTEM_DIRS_CONF))
    known = set(LdConf(root, LD_SO_CONF, skip=ours).dirs) | set(system)
    added = [f for f in dict.fromkeys(folders) if f not in known]
    if added:
        root.write_file(LDCACHE_CONF, _dir_list(added))
    else:
        root.remove(LDCACHE_CONF)
    root.write_file(SYSTEM_DIRS_CONF, _dir_list(system))
    _musl_path(root, added + system)
    return LdconfigRun(root, ldconfig_path)


def _musl_path(root: Rootfs, dirs: list[str]) -> None:
    """musl's loader reads no ld.so.cache: it searches the directories of its .path file."""
    release = root.lookup("/etc/alpine-release")
    if release is None or S_ISDIR(release.st_mode):
        return
    arch = {"x86_64": "x86_64", "aarch64": "aarch64"}.get(os.uname().machine)
    if arch is None:
        return
    path = f"/etc/ld-musl-{arch}.path"
    root.write_file(path, (root.read_file(path) or b"") + _dir_list(dirs))


def driver_major(version: str) -> int:
    """Major number of a driver version such as 550.163.01."""
    head = version.split(".")[0]
    if not head.isdigit() or not all(p.isdigit() for p in version.split(".")):
        raise HookError(f"enable-cuda-compat: --host-driver-version {version!r} is not N.N[.N]")
    return int(head)


def enable_cuda_compat(root: Rootfs, host_driver_version: str) -> str | None:
    """Use the image's CUDA forward-compat libcuda when it is newer than the host driver.

    As nvidia-cdi-hook: only when the image has an ld.so.cache and exactly one regular file
    libcuda.so.X.Y in the compat directory, whose real path (links resolved, e.g.
    /usr/local/cuda-12.8/compat) goes into the drop-in. Returns that directory, if used.
    """
    host = driver_major(host_driver_version)
    if root.lookup("/etc/ld.so.cache") is None:
        return None
    entries = root.scandir(COMPAT_DIR) or []
    prefix = "libcuda.so."
    libs = [n for n, regular in entries if regular and n.startswith(prefix) and "." in n[11:]]
    if len(libs) != 1:
        return None
    major = libs[0][len(prefix) :].split(".")[0]
    if not major.isdecimal():
        raise root.error(f"{COMPAT_DIR}/{libs[0]}", "no major version in the file name")
    if int(major) <= host:
        return None
    folder = root.realpath(COMPAT_DIR)
    root.write_file(COMPAT_CONF, f"{folder}\n".encode())
    return folder


def disable_device_node_modification(root: Rootfs) -> bool:
    """Show the container a copy of the driver params with `ModifyDeviceFiles: 0`.

    The driver re-creates /dev/nvidia* nodes with its own modes when a process in the container
    opens a device while ModifyDeviceFiles is 1. The copy is mounted read-only over the
    container's /proc/driver/nvidia/params in the container's mount namespace, where OCI runs
    createContainer hooks, so the host's view is unchanged. Without the driver file: no-op.
    """
    data = root.read_file(PARAMS)
    if data is None:
        return False
    lines = data.decode("utf-8", "replace").split("\n")
    changed = False
    for i, line in enumerate(lines):
        key, sep, value = line.partition(":")
        if sep and key.strip() == "ModifyDeviceFiles" and value.strip() != "0":
            lines[i] = f"{key}: 0"
            changed = True
    if not changed:
        return False
    from cdi.hook.mount import mount_file_over

    fd = root.resolve(PARAMS)
    try:
        what = f"{PARAMS} (in rootfs {root.path})"
        mount_file_over(fd, "\n".join(lines).encode(), 0o444, what)
    finally:
        os.close(fd)
    return True


def update_application_profile(root: Rootfs, container: Container) -> int:
    """Tell the driver's EGL and Vulkan which GPUs the container has; returns the mask.

    Writes the application profile that sets EGLVisibleDGPUDevices to the mask of the minors
    of the /dev/nvidiaN nodes the container has (linux.devices), as nvidia-cdi-hook 1.20 does;
    without one (only MIG devices of no GPU, say) nothing is written.
    """
    mask = 0
    for device in container.devices():
        folder, name = os.path.split(device.path)
        number = name[len("nvidia") :]
        if folder != "/dev" or not name.startswith("nvidia") or not number.isdecimal():
            continue
        if device.type not in ("c", "u") or device.minor is None:
            continue
        if 0 <= device.minor <= MAX_PROFILE_MINOR:
            mask |= 1 << device.minor
    if mask:
        root.write_file(PROFILE, (PROFILE_TEXT % mask).encode(), 0o444, dir_mode=0o555)
    return mask


def chmod(root: Rootfs, mode: int, paths: list[str]) -> None:
    """chmod each path inside the rootfs; a path the container lacks is skipped (as
    nvidia-cdi-hook does: /dev/dri exists only in containers given a GPU's DRM nodes)."""
    for path in paths:
        if root.lookup(path) is not None:
            root.chmod(path, mode)
