"""A test bed for OCI hook programs: fake host -> CDI spec -> container rootfs -> hooks -> tree.

Used by bench/hook.py (side-by-side timing) and bench/hook_parity.py (do our hooks leave the
same container filesystem as nvidia-cdi-hook's?). Both hook sets run on copies of one container
rootfs, prepared as runc prepares it before `createContainer` hooks: the spec's mounts in place
(copied), its device nodes made with mknod, `config.json` listing them under `linux.devices`,
and the rootfs a mount point (nvidia-cdi-hook pivot_roots into it). All of it happens in a
private mount namespace of this process, so the hooks' mounts vanish with it.

NVIDIA's binaries (nvidia-ctk, nvidia-cdi-hook, nsrun.sh) come from `$GPU_CDI_ANCHORS`, else
the directory of `$NVIDIA_CTK`, else /work/shared/anchors: the spec of the same fake host from
`nvidia-ctk cdi generate`, its hooks run by `nvidia-cdi-hook`. Needs root.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
# NVIDIA's binaries: $GPU_CDI_ANCHORS, else the directory of $NVIDIA_CTK (as
# bench/nvidia_ctk_parity.py takes it), else the shared anchors.
ANCHORS = Path(
    os.environ.get("GPU_CDI_ANCHORS")
    or (os.path.dirname(os.environ["NVIDIA_CTK"]) if os.environ.get("NVIDIA_CTK") else "")
    or "/work/shared/anchors"
)
HOOK_MAIN = ROOT / "cdi" / "hook" / "__main__.py"
LIBDIR = "usr/lib/x86_64-linux-gnu"
# nvidia-cdi-hook leaves these behind in every container (its scratch dirs): not compared.
NVIDIA_SCRATCH = "run/nvidia-ctk-hook"
# Drop-in files both hooks name with a random or own infix: compared by their pattern.
DROP_INS = ("00-nvcr-", "zz-nvcr-", "00-compat-")
# ldconfig's private stat cache (inode, ctime, size -> SONAME): its bytes differ between any two
# runs on two copies of a tree, and only root's ldconfig rewrites it. Compared by presence.
AUX_CACHE = "var/cache/ldconfig/aux-cache"

_CLONE_NEWNS = 0x00020000
_MS_REC, _MS_BIND, _MS_PRIVATE = 0x4000, 0x1000, 0x40000
_MNT_DETACH = 2
_libc = ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def private_mount_namespace() -> None:
    """Move this process into its own mount namespace, nothing propagating back to the host."""
    _check(_libc.unshare(_CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _check(_libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None), "mount --make-rprivate")


def bind_self(path: Path) -> None:
    """Make `path` a mount point (runc's rootfs is one; nvidia-cdi-hook pivot_roots into it)."""
    p = os.fsencode(path)
    _check(_libc.mount(p, p, None, _MS_BIND | _MS_REC, None), f"bind {path}")


def bind(source: Path, target: Path) -> None:
    """Bind-mount `source` over `target` (in this process's private mount namespace)."""
    src, dst = os.fsencode(source), os.fsencode(target)
    _check(_libc.mount(src, dst, None, _MS_BIND | _MS_REC, None), f"bind {source} {target}")


@contextlib.contextmanager
def driver_of(host: Any) -> Iterator[None]:
    """This mount namespace shows the fake host's /proc/driver meanwhile, as nsrun.sh does:
    hooks read the driver's params there (nvidia-cdi-hook from the host's /proc, ours from the
    rootfs's)."""
    target = Path("/proc/driver")
    bind(host.proc_sys_root / "proc/driver", target)
    try:
        yield
    finally:
        unmount(target)


def unmount(path: Path) -> None:
    """Detach `path` and every mount below it (the hooks' overmounts)."""
    _check(_libc.umount2(os.fsencode(path), _MNT_DETACH), f"umount {path}")


# ------------------------------------------------------------------------------------- specs


def run(argv: list[str], env: dict[str, str] | None = None) -> str:
    """stdout of `argv`; exits with its stderr when it fails."""
    proc = subprocess.run(
        argv, capture_output=True, text=True, env={**os.environ, **(env or {})}, check=False
    )
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(argv)}\n{proc.stderr}")
    return proc.stdout


def build_host(topology: str, where: Path) -> Any:
    """A fake host (driver files, /dev, /proc, /sys, fake NVML) built under `where`."""
    from gpu_cdi_fakehost.builder import build_host as build

    return build(topology, where / topology)


def our_spec(
    host: Any, python: str = sys.executable, main: Path = HOOK_MAIN, flags: Iterable[str] = ()
) -> dict[str, Any]:
    """`gpu-cdi generate [flags]` for `host`, hooks in the fast form (`python -I -S
    .../__main__.py`, stdlib only: any python3 of the node runs it)."""
    out = run([sys.executable, "-m", "cdi", *host.generate_argv[1:], *flags], host.env)
    spec: dict[str, Any] = yaml.safe_load(out)
    prefix = [python, "-I", "-S", str(main)]
    for edits in _all_edits(spec):
        for hook in edits.get("hooks", []):
            hook["path"] = python
            hook["args"] = [*prefix, *hook["args"][1:]]
    return spec


def nvidia_spec(host: Any, anchors: Path = ANCHORS, flags: Iterable[str] = ()) -> dict[str, Any]:
    """`nvidia-ctk cdi generate [flags]` for `host`, hooks run by the anchors' nvidia-cdi-hook.

    nvidia-ctk writes the DRM by-path links with the dev root left in the link path
    (`::<devroot>/dev/dri/by-path/...`, a bug with a dev root other than /): stripped here so
    the links land where they do on a real host. Its MIG support needs the anchors' shim while
    the fake NVML lacks four calls: preloaded when nvidia-ctk fails without it.
    """
    ctk = anchors / "nvidia-ctk"
    out = host.root / ".ctk.yaml"
    argv = [str(anchors / "nsrun.sh"), str(host.root), str(ctk), "cdi", "generate"]
    argv += ["--driver-root", str(host.driver_root), "--dev-root", str(host.dev_root)]
    # The fake host's libnvidia-sandboxutils is an empty stand-in (no nvSandboxUtilsInit).
    argv += ["--feature-flag", "disable-nvsandboxutils", "--output", str(out), *flags]
    proc = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **host.env})
    shim = anchors / "libnvml-mig-shim.so"
    if proc.returncode != 0 and shim.exists():
        run(argv, {**host.env, "LD_PRELOAD": str(shim)})
    elif proc.returncode != 0:
        sys.exit(f"nvidia-ctk failed: {proc.stderr}")
    spec: dict[str, Any] = yaml.safe_load(out.read_text())
    dev_root = str(host.dev_root)
    for edits in _all_edits(spec):
        for hook in edits.get("hooks", []):
            hook["path"] = str(anchors / "nvidia-cdi-hook")
            hook["args"] = [
                a.replace("::" + dev_root + "/", "::/") if "::" in a else a for a in hook["args"]
            ]
    return spec


def _all_edits(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [spec.get("containerEdits", {}), *(d["containerEdits"] for d in spec["devices"])]


@dataclass
class Injected:
    """What a runtime gives a container for some CDI devices: nodes, mounts, hooks in order."""

    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    mounts: dict[str, dict[str, Any]] = field(default_factory=dict)
    hooks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def argvs(self) -> list[tuple[str, list[str], list[str]]]:
        """(path, args, env) of each createContainer hook."""
        return [
            (h["path"], h["args"], h.get("env", []))
            for h in self.hooks
            if h["hookName"] == "createContainer"
        ]


def inject(spec: dict[str, Any], names: Iterable[str]) -> Injected:
    """The spec's own edits, then each named device's (the CDI library's order)."""
    out = Injected()
    devices = {d["name"]: d["containerEdits"] for d in spec["devices"]}
    for edits in [spec.get("containerEdits", {}), *(devices[n] for n in names)]:
        for node in edits.get("deviceNodes", []):
            out.nodes.setdefault(node["path"], node)
        for mount in edits.get("mounts", []):
            out.mounts.setdefault(mount["containerPath"], mount)
        out.hooks += edits.get("hooks", [])
    return out


# -------------------------------------------------------------------------- container images


def gcc_lib(work: Path) -> Callable[[Path, str], None]:
    """A function writing a tiny real ELF shared object with a given SONAME (cached)."""
    src = work / "empty.c"
    src.write_text("int gpu_cdi_bed;\n")
    cache: dict[str, bytes] = {}

    def make(path: Path, soname: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if soname not in cache:
            out = work / f"{soname}.so"
            run(["gcc", "-shared", "-fPIC", f"-Wl,-soname,{soname}", "-o", str(out), str(src)])
            cache[soname] = out.read_bytes()
        path.write_bytes(cache[soname])
        path.chmod(0o755)

    return make


def _ldcache(rootfs: Path) -> None:
    run(["ldconfig", "-r", str(rootfs)])


def debian_image(rootfs: Path, lib: Callable[[Path, str], None]) -> None:
    """Debian/Ubuntu-like: multiarch ld.so.conf.d, its own libraries and ld.so.cache."""
    etc = rootfs / "etc"
    (etc / "ld.so.conf.d").mkdir(parents=True)
    (etc / "debian_version").write_text("12.8\n")
    (etc / "ld.so.conf").write_text("include /etc/ld.so.conf.d/*.conf\n\n")
    (etc / "ld.so.conf.d/libc.conf").write_text("/usr/local/lib\n")
    (etc / "ld.so.conf.d/x86_64-linux-gnu.conf").write_text(
        "/usr/local/lib/x86_64-linux-gnu\n/lib/x86_64-linux-gnu\n/usr/lib/x86_64-linux-gnu\n"
    )
    lib(rootfs / LIBDIR / "libz.so.1.2.13", "libz.so.1")
    (rootfs / LIBDIR / "libz.so.1").symlink_to("libz.so.1.2.13")
    (rootfs / "lib").symlink_to("usr/lib")
    (rootfs / "var/cache/ldconfig").mkdir(parents=True, mode=0o700)
    _ldcache(rootfs)
    # An image library whose SONAME link is missing: ldconfig (run as root) makes it.
    lib(rootfs / LIBDIR / "libimage.so.3.0.0", "libimage.so.3")


def busybox_image(rootfs: Path, lib: Callable[[Path, str], None]) -> None:
    """busybox/distroless-like: no ld.so.conf, no ld.so.cache."""
    (rootfs / "etc").mkdir()
    (rootfs / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")


def ubi_image(rootfs: Path, lib: Callable[[Path, str], None]) -> None:
    """RHEL/Fedora-like: libraries in /usr/lib64, no /etc/debian_version."""
    etc = rootfs / "etc"
    (etc / "ld.so.conf.d").mkdir(parents=True)
    (etc / "redhat-release").write_text("Red Hat Enterprise Linux release 9.5\n")
    (etc / "ld.so.conf").write_text("include ld.so.conf.d/*.conf\n")
    lib(rootfs / "usr/lib64/libz.so.1.2.11", "libz.so.1")
    (rootfs / "usr/lib64/libz.so.1").symlink_to("libz.so.1.2.11")
    (rootfs / "lib64").symlink_to("usr/lib64")
    _ldcache(rootfs)


def alpine_image(rootfs: Path, lib: Callable[[Path, str], None]) -> None:
    """Alpine-like (musl): /etc/alpine-release, no ld.so.conf."""
    (rootfs / "etc").mkdir()
    (rootfs / "etc/alpine-release").write_text("3.21.0\n")
    (rootfs / "lib").mkdir()
    (rootfs / "lib/ld-musl-x86_64.so.1").write_bytes(b"\x7fELF musl stand-in")


def compat_image(rootfs: Path, lib: Callable[[Path, str], None]) -> None:
    """A CUDA image shipping forward-compat libcuda newer than any driver here."""
    debian_image(rootfs, lib)
    compat = rootfs / "usr/local/cuda-12.8/compat"
    lib(compat / "libcuda.so.999.10.01", "libcuda.so.1")
    (compat / "libcuda.so.1").symlink_to("libcuda.so.999.10.01")
    (rootfs / "usr/local/cuda").symlink_to("cuda-12.8")


IMAGES: dict[str, Callable[[Path, Callable[[Path, str], None]], None]] = {
    "debian": debian_image,
    "busybox": busybox_image,
    "ubi": ubi_image,
    "alpine": alpine_image,
    "cuda-compat": compat_image,
}


# ------------------------------------------------------------------------------------- bundle


def _oci_device(node: dict[str, Any]) -> dict[str, Any]:
    return {
        "path": node["path"],
        "type": "c",
        "major": node.get("major", 0),
        "minor": node.get("minor", 0),
        "fileMode": node.get("fileMode", 0o666),
        "uid": 0,
        "gid": node.get("gid", 0),
    }


class Bed:
    """One container (image + injected devices) that hook sets are run on, each on a copy."""

    def __init__(self, work: Path, image: str, host: Any, injected: Injected) -> None:
        self.work = work
        self.template = work / "template"
        self.bundle = work / "bundle"
        self.rootfs = self.bundle / "rootfs"
        self.bundle.mkdir(parents=True)
        self.mounted = False
        libdir = work / "libs"
        libdir.mkdir()
        IMAGES[image](self._mkroot(), gcc_lib(libdir))
        for mount in injected.mounts.values():
            self._place(Path(mount["hostPath"]), mount["containerPath"])
        params = host.proc_sys_root / "proc/driver/nvidia/params"
        if params.exists():  # stands in for the container's procfs view of the driver
            self._place(params, "/proc/driver/nvidia/params")
        for node in injected.nodes.values():
            self._mknod(node)
        devices = [_oci_device(n) for n in injected.nodes.values()]
        config = {"ociVersion": "1.2.0", "root": {"path": "rootfs"}, "linux": {"devices": devices}}
        (self.bundle / "config.json").write_text(json.dumps(config))
        state = {"ociVersion": "1.2.0", "id": "bed", "status": "creating", "pid": os.getpid()}
        self.state = json.dumps({**state, "bundle": str(self.bundle)}).encode()
        self.state_file = work / "state.json"
        self.state_file.write_bytes(self.state)

    def _mkroot(self) -> Path:
        self.template.mkdir()
        for name in ("dev", "proc", "sys", "run", "tmp"):
            (self.template / name).mkdir()
        return self.template

    def _place(self, source: Path, container_path: str) -> None:
        dest = self.template / container_path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        mode = os.stat(source).st_mode
        if stat.S_ISSOCK(mode):
            os.mknod(dest, stat.S_IFSOCK | 0o666)
        elif stat.S_ISDIR(mode):
            shutil.copytree(source, dest, symlinks=True)
        else:
            shutil.copy2(source, dest)

    def _mknod(self, node: dict[str, Any]) -> None:
        dest = self.template / node["path"].lstrip("/")
        # 0700: what `chmod --mode 755 --path /dev/dri` (--enable-hook chmod) changes shows.
        dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        dev = os.makedev(node.get("major", 0), node.get("minor", 0))
        os.mknod(dest, stat.S_IFCHR | node.get("fileMode", 0o666), dev)
        os.chown(dest, 0, node.get("gid", 0))

    def fresh(self) -> Path:
        """A new copy of the container rootfs, mounted on itself; returns its path."""
        self.discard()
        run(["cp", "-a", str(self.template), str(self.rootfs)])
        bind_self(self.rootfs)
        self.mounted = True
        return self.rootfs

    def discard(self) -> None:
        """Unmount and remove the current copy, if any."""
        if self.mounted:  # a bind mount of the same fs: os.path.ismount cannot tell
            unmount(self.rootfs)
            self.mounted = False
        if self.rootfs.exists():
            shutil.rmtree(self.rootfs)

    def run_hooks(self, injected: Injected) -> tuple[float, list[float], list[str]]:
        """Run the createContainer hooks in order: (seconds, CPU seconds each (user + system,
        children included), errors)."""
        cpu: list[float] = []
        errors: list[str] = []
        start = time.perf_counter()
        for path, args, env in injected.argvs:
            fd = os.open(self.state_file, os.O_RDONLY)
            err = os.memfd_create("hook-stderr")
            try:
                actions = [(os.POSIX_SPAWN_DUP2, fd, 0), (os.POSIX_SPAWN_DUP2, err, 2)]
                env_map = dict(e.split("=", 1) for e in env)
                pid = os.posix_spawn(path, args, env_map, file_actions=actions)
                _, status, usage = os.wait4(pid, 0)
            finally:
                os.close(fd)
            cpu.append(usage.ru_utime + usage.ru_stime)
            if os.waitstatus_to_exitcode(status) != 0:
                os.lseek(err, 0, os.SEEK_SET)
                errors.append(os.read(err, 4096).decode(errors="replace").strip())
            os.close(err)
        return time.perf_counter() - start, cpu, errors


# --------------------------------------------------------------------------------- snapshots


def _normal_name(rel: str) -> str:
    head, _, name = rel.rpartition("/")
    for prefix in DROP_INS:
        if name.startswith(prefix) and name.endswith(".conf"):
            return f"{head}/{prefix}*.conf"
    return rel


def snapshot(rootfs: Path) -> dict[str, tuple[Any, ...]]:
    """Every entry of the tree: type+mode, owner, device, link target or content digest."""
    tree: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(rootfs):
        rel_dir = os.path.relpath(dirpath, rootfs)
        if rel_dir.startswith(NVIDIA_SCRATCH):
            dirnames[:] = []
            continue
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if rel.startswith(NVIDIA_SCRATCH):
                continue
            st = os.lstat(path)
            extra: Any = None
            if stat.S_ISLNK(st.st_mode):
                extra = os.readlink(path)
            elif rel == AUX_CACHE:
                extra = "(not compared)"
            elif stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    extra = hashlib.sha256(f.read()).hexdigest()[:16]
            elif stat.S_ISCHR(st.st_mode):
                extra = (os.major(st.st_rdev), os.minor(st.st_rdev))
            key = _normal_name(rel)
            if key in tree and key != rel:
                key = rel  # two files of one pattern: compare by real name, will differ
            tree[key] = (stat.filemode(st.st_mode), st.st_uid, st.st_gid, extra)
    return tree


def diff(ours: dict[str, tuple[Any, ...]], theirs: dict[str, tuple[Any, ...]]) -> list[str]:
    """One line per path that differs."""
    lines = []
    for path in sorted(set(ours) | set(theirs)):
        a, b = ours.get(path), theirs.get(path)
        if a != b:
            lines.append(f"{path}: ours {a or 'missing'} | nvidia {b or 'missing'}")
    return lines
