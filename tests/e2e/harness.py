"""A private containerd (1.7.24 from trixie or 2.1 from sid) with NRI and CDI, for e2e tests.

Each `Containerd` owns one directory, /run/gpu-cdi-e2e/<pid>-<random>/, with a tmpfs mounted
on it (root and state in RAM: no fsync noise in latency numbers, nothing left on disk), so
several test sessions can run side by side. Layout:

    config.toml  containerd.log  containerd.sock(.ttrpc)
    root/ state/ runc/           containerd root, state, runc --root (private)
    nri/nri.sock                 NRI socket for external plugins
    nri/plugins/ nri/conf.d/     pre-installed plugins (<idx>-<name>) and their <idx>-<name>.conf
    cdi/                         the CDI spec dir (cdi_spec_dirs = [this] unless configured)
    pods/                        CRI pod log directories
    images/                      image tarballs built for this instance

containerd, its shims and runc come from tests/e2e/install.sh (GPU_CDI_E2E_PREFIX).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from tests.e2e import image as image_module
from tests.e2e import paths
from tests.e2e.image import DEFAULT_REF, FileContent, build_image_tar

BASE_ROOT = Path(os.environ.get("GPU_CDI_E2E_RUN", "/run/gpu-cdi-e2e"))
CAP_SYS_RESOURCE = 24


class HarnessError(RuntimeError):
    """containerd could not be started or driven; the message ends with its log tail."""


def has_cap_sys_resource() -> bool:
    """Whether this process may raise limits/lower oom_score_adj (absent in some sandboxes)."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return bool((int(line.split()[1], 16) >> CAP_SYS_RESOURCE) & 1)
    return False


@attrs.frozen
class ContainerdConfig:
    """What varies between test setups; every field maps to one containerd config entry."""

    # containerd release line (tests/e2e/paths.CONTAINERD_VERSIONS): "1.7" (trixie's 1.7.24,
    # config version 2) or "2.1" (sid's 2.1.x, config version 3)
    version: str = "1.7"
    enable_cdi: bool = True
    # None: [<instance>/cdi]
    cdi_spec_dirs: tuple[str, ...] | None = None
    nri: bool = True  # [plugins."io.containerd.nri.v1.nri"] disable = not nri
    nri_disable_connections: bool = False
    plugin_registration_timeout: str = "5s"
    plugin_request_timeout: str = "2s"
    # None: true exactly when CAP_SYS_RESOURCE is missing (runc cannot set -998 for the pause)
    restrict_oom_score_adj: bool | None = None
    sandbox_image: str = DEFAULT_REF
    # CRI annotations (globs) containerd copies into the OCI spec (runc runtime options)
    pod_annotations: tuple[str, ...] = ()
    container_annotations: tuple[str, ...] = ()
    log_level: str = "info"
    tmpfs: bool = True  # mount a tmpfs on the instance dir (falls back to disk if not allowed)
    start_timeout: float = 20.0


DISABLED_PLUGINS = (
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.tracing.processor.v1.otlp",
    "io.containerd.internal.v1.tracing",
)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def toml_text(tree: Mapping[str, Any], path: tuple[str, ...] = ()) -> str:
    """TOML for nested dicts of str/int/bool/list values (keys of sub-tables are quoted)."""
    lines = [f"{key} = {_toml_value(v)}" for key, v in tree.items() if not isinstance(v, dict)]
    out = "\n".join(lines) + "\n" if lines else ""
    for key, sub in tree.items():
        if isinstance(sub, dict):
            sub_path = (*path, key)
            header = ".".join(k if k.isidentifier() else _toml_value(k) for k in sub_path)
            out += f"\n[{header}]\n" + toml_text(sub, sub_path)
    return out


def mountpoints_under(base: Path) -> list[str]:
    """Mount points at or below `base`."""
    prefix = str(base).rstrip("/") + "/"
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            mnt = line.split()[4].replace("\\040", " ")
            if mnt == str(base) or mnt.startswith(prefix):
                found.append(mnt)
    return found


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def procs_with_arg(needle: str, *, within: bool = False) -> list[int]:
    """Pids whose argv contains `needle` as one argument (`within`: inside an argument)."""
    found = []
    want = needle.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if want in argv or (within and any(want in arg for arg in argv)):
            found.append(int(entry))
    return found


def _teardown_dir(base: Path, address: str, runc_root: Path) -> None:
    """Kill everything that belongs to an instance dir, unmount it and delete it."""
    for pid in procs_with_arg(str(base / "config.toml")):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    runc = shutil.which("runc") or "runc"
    if runc_root.is_dir():
        for ns in runc_root.iterdir():
            if ns.is_dir():
                for cid in [p.name for p in ns.iterdir() if p.is_dir()]:
                    subprocess.run(
                        [runc, "--root", str(ns), "delete", "--force", cid],
                        capture_output=True,
                        timeout=30,
                    )
    for pid in procs_with_arg(address):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for mnt in sorted(mountpoints_under(base), key=len, reverse=True):
        subprocess.run(["umount", "-l", mnt], capture_output=True)
    shutil.rmtree(base, ignore_errors=True)


def sweep_stale() -> list[Path]:
    """Remove instance dirs left by test sessions that died (their pid prefix is gone)."""
    removed: list[Path] = []
    if not BASE_ROOT.is_dir():
        return removed
    for d in BASE_ROOT.iterdir():
        owner = d.name.split("-", 1)[0]
        if not owner.isdigit() or pid_alive(int(owner)):
            continue
        _teardown_dir(d, str(d / "containerd.sock"), d / "runc")
        removed.append(d)
    return removed


class Containerd:
    """One private containerd process (see the module docstring for its files).

    Attributes: `address` (CRI/containerd gRPC socket), `nri_socket`, `cdi_dir`, `plugin_dir`,
    `conf_dir` (NRI plugin_config_path), `log_path`, `logs_dir` (pod logs), `base`, `config`,
    `root_on_tmpfs`. `start()` also imports the default busybox image (ref `image`) into
    namespace k8s.io. Use as a context manager or call `close()` to remove everything.
    """

    def __init__(self, config: ContainerdConfig | None = None, **overrides: Any) -> None:
        self.config = attrs.evolve(config or ContainerdConfig(), **overrides)
        if msg := paths.missing_message(self.config.version):
            raise HarnessError(msg)
        BASE_ROOT.mkdir(parents=True, exist_ok=True)
        sweep_stale()
        self.base = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=BASE_ROOT))
        self._closed = False
        self.proc: subprocess.Popen[bytes] | None = None
        atexit.register(self.close)
        self.root_on_tmpfs = False
        if self.config.tmpfs:
            r = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "mode=0711", "gpu-cdi-e2e", str(self.base)],
                capture_output=True,
                text=True,
            )
            self.root_on_tmpfs = r.returncode == 0
        self.address = str(self.base / "containerd.sock")
        self.nri_socket = str(self.base / "nri" / "nri.sock")
        self.plugin_dir = self.base / "nri" / "plugins"
        self.conf_dir = self.base / "nri" / "conf.d"
        self.cdi_dir = self.base / "cdi"
        self.logs_dir = self.base / "pods"
        self.images_dir = self.base / "images"
        self.root = self.base / "root"
        self.state = self.base / "state"
        self.runc_root = self.base / "runc"
        self.log_path = self.base / "containerd.log"
        self.config_path = self.base / "config.toml"
        self.image = DEFAULT_REF
        for d in (
            self.plugin_dir,
            self.conf_dir,
            self.cdi_dir,
            self.logs_dir,
            self.images_dir,
            self.root,
            self.state,
            self.runc_root,
            self.base / "opt",
            self.base / "cni" / "bin",
            self.base / "cni" / "net.d",
        ):
            d.mkdir(parents=True, exist_ok=True)
        self._imported: set[str] = set()

    # -- config -----------------------------------------------------------------------------
    def config_tree(self) -> dict[str, Any]:
        """The containerd config for the current `config`, as nested tables.

        Version 2 (containerd 1.7) keeps every CRI setting in `io.containerd.grpc.v1.cri`;
        version 3 (2.x) splits them into `io.containerd.cri.v1.runtime` (CDI, runtimes, CNI)
        and `io.containerd.cri.v1.images` (snapshotter, sandbox image).
        """
        c = self.config
        b = self.base
        v3 = self.release.config_version == 3
        restrict = c.restrict_oom_score_adj
        if restrict is None:
            restrict = not has_cap_sys_resource()
        cni_bin: dict[str, Any] = {"bin_dir": str(b / "cni" / "bin")}
        if v3:  # bin_dir is deprecated there
            cni_bin = {"bin_dirs": [cni_bin["bin_dir"]]}
        runtime: dict[str, Any] = {
            "enable_cdi": c.enable_cdi,
            "cdi_spec_dirs": list(c.cdi_spec_dirs or (str(self.cdi_dir),)),
            # without CAP_SYS_RESOURCE runc cannot give the pause container oom_score_adj -998
            "restrict_oom_score_adj": restrict,
            "cni": {**cni_bin, "conf_dir": str(b / "cni" / "net.d")},
            "containerd": {
                "default_runtime_name": "runc",
                "runtimes": {
                    "runc": {
                        "runtime_type": "io.containerd.runc.v2",
                        "pod_annotations": list(c.pod_annotations),
                        "container_annotations": list(c.container_annotations),
                        "options": {"SystemdCgroup": False, "Root": str(self.runc_root)},
                    }
                },
            },
        }
        plugins: dict[str, Any] = {
            "io.containerd.nri.v1.nri": {
                "disable": not c.nri,
                "disable_connections": c.nri_disable_connections,
                "socket_path": self.nri_socket,
                "plugin_path": str(self.plugin_dir),
                "plugin_config_path": str(self.conf_dir),
                "plugin_registration_timeout": c.plugin_registration_timeout,
                "plugin_request_timeout": c.plugin_request_timeout,
            },
            "io.containerd.internal.v1.opt": {"path": str(b / "opt")},
        }
        if v3:
            plugins["io.containerd.cri.v1.runtime"] = runtime
            plugins["io.containerd.cri.v1.images"] = {
                "snapshotter": "overlayfs",
                "pinned_images": {"sandbox": c.sandbox_image},
            }
        else:
            runtime["containerd"]["snapshotter"] = "overlayfs"
            plugins["io.containerd.grpc.v1.cri"] = {"sandbox_image": c.sandbox_image, **runtime}
        return {
            "version": 3 if v3 else 2,
            "root": str(self.root),
            "state": str(self.state),
            # not needed offline; fewer plugins = faster start
            "disabled_plugins": list(DISABLED_PLUGINS),
            "grpc": {"address": self.address},
            "ttrpc": {"address": self.address + ".ttrpc"},
            "debug": {"level": c.log_level},
            "plugins": plugins,
        }

    def config_toml(self) -> str:
        """The containerd config file text for the current `config`."""
        return toml_text(self.config_tree())

    @property
    def release(self) -> paths.ContainerdRelease:
        """Which containerd this is (binaries, config format), from `config.version`."""
        return paths.containerd_release(self.config.version)

    # -- process ------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """True while the containerd process is alive."""
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        """containerd's pid, or None when not running."""
        return self.proc.pid if self.running and self.proc else None

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_SOCKET", "NRI_"))}
        # the shim binary is looked up on PATH next to containerd; runc comes from the host
        env["PATH"] = f"{self.release.bin}:{env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
        return env

    def log_text(self) -> str:
        """The whole containerd log so far."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        """The last `lines` lines of the containerd log."""
        return "\n".join(self.log_text().splitlines()[-lines:])

    def log_size(self) -> int:
        """Current log size: pass it as `since` to `wait_for_log` to skip older lines."""
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def wait_for_log(self, pattern: str, timeout: float = 10.0, since: int = 0) -> re.Match[str]:
        """Wait until a line after byte offset `since` matches the regex; return the match."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(FileNotFoundError), open(self.log_path, "rb") as f:
                f.seek(since)
                text = f.read().decode("utf-8", errors="replace")
                if m := rx.search(text):
                    return m
            if time.monotonic() > deadline:
                raise HarnessError(
                    f"no containerd log line matching {pattern!r} within {timeout}s; "
                    f"log tail:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def wait_plugin_connected(self, name: str, since: int = 0, timeout: float = 10.0) -> None:
        """Wait until an external NRI plugin `name` (or `<idx>-name`) registered and synced.

        Pass `since=log_size()` taken before starting the plugin to ignore earlier connections.
        """
        self.wait_for_log(
            r'plugin \\"(?:\d+-)?' + re.escape(name) + r'\\" connected', timeout, since
        )

    def _fail(self, why: str) -> HarnessError:
        return HarnessError(f"{why} (log {self.log_path}); last lines:\n{self.log_tail()}")

    def start(self) -> Containerd:
        """Write the config, start containerd, wait for its sockets, import the image."""
        if self._closed:
            raise HarnessError("this Containerd was closed")
        if self.running:
            return self
        self.config_path.write_text(self.config_toml(), encoding="utf-8")
        for sock in (self.address, self.address + ".ttrpc", self.nri_socket):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(sock)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(self.release.bin / "containerd"), "--config", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env(),
                start_new_session=True,
            )
        self._wait_ready()
        if self.image not in self._imported:
            self.import_image(self._default_image_tar())
            self._imported.add(self.image)
        return self

    def _wait_ready(self) -> None:
        want_nri = self.config.nri and not self.config.nri_disable_connections
        deadline = time.monotonic() + self.config.start_timeout
        while True:
            if self.proc is None or self.proc.poll() is not None:
                rc = self.proc.returncode if self.proc else None
                raise self._fail(f"containerd exited during start-up with status {rc}")
            if (
                os.path.exists(self.address)
                and (not want_nri or os.path.exists(self.nri_socket))
                and self.ctr("version", check=False, timeout=5).returncode == 0
            ):
                return
            if time.monotonic() > deadline:
                raise self._fail(f"containerd not ready after {self.config.start_timeout}s")
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the containerd process only: shims and containers keep running (as in real life)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def restart(self, config: ContainerdConfig | None = None, **overrides: Any) -> Containerd:
        """Stop and start again (same root/state: images, pods, containers survive).

        A new `config` or field overrides take effect with this restart.
        """
        self.stop()
        if config is not None or overrides:
            self.config = attrs.evolve(config or self.config, **overrides)
        return self.start()

    # -- tools --------------------------------------------------------------------------------
    def ctr(
        self, *args: str, namespace: str = "k8s.io", check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run `ctr -a <address> -n <namespace> ARGS`; raises HarnessError when check fails."""
        argv = [str(self.release.bin / "ctr"), "-a", self.address, "-n", namespace, *args]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=self._env())
        if check and r.returncode != 0:
            raise self._fail(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()}")
        return r

    def _default_image_tar(self) -> Path:
        # built once per repo cache: busybox content decides the file name
        bb = paths.busybox_path()
        assert bb is not None
        st = bb.stat()
        src = hashlib.sha256(Path(image_module.__file__).read_bytes()).hexdigest()[:12]
        key = f"{st.st_size}-{int(st.st_mtime)}-{src}"
        tar = paths.CACHE / "e2e" / f"busybox-{key}.tar"
        if not tar.is_file():
            build_image_tar(tar, self.image)
        return tar

    def import_image(self, tar: Path) -> None:
        """Import an OCI image tarball into namespace k8s.io (unpacked for overlayfs)."""
        self.ctr("images", "import", "--no-unpack=false", "--snapshotter", "overlayfs", str(tar))

    def build_image(
        self,
        ref: str,
        *,
        extra_files: Mapping[str, FileContent] | None = None,
        symlinks: Mapping[str, str] | None = None,
        dirs: Sequence[str] = (),
        cmd: Sequence[str] = ("/bin/sleep", "2147483647"),
    ) -> str:
        """Build a busybox image with extra files/links/dirs, import it, return `ref`."""
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", ref)
        tar = build_image_tar(
            self.images_dir / f"{safe}.tar",
            ref,
            extra_files=extra_files,
            symlinks=symlinks,
            dirs=dirs,
            cmd=cmd,
        )
        self.import_image(tar)
        self._wait_cri_knows(ref)
        return ref

    def _wait_cri_knows(self, ref: str, timeout: float = 10.0) -> None:
        # CRI keeps its own image store, updated from containerd's image events after `ctr
        # images import` has returned: a CreateContainer right after the import can still get
        # "not found" (seen on 2.1 under load).
        deadline = time.monotonic() + timeout
        with self.cri() as client:
            while not client.image_known(ref):
                if time.monotonic() > deadline:
                    raise self._fail(f"CRI does not know image {ref} {timeout:.0f} s after import")
                time.sleep(0.02)

    def install_plugin(
        self, idx: str, name: str, executable: Path | str, config: str | None = None
    ) -> Path:
        """Pre-install an NRI plugin as <plugin_dir>/<idx>-<name> (+ conf); needs `restart()`.

        `executable` is a file to copy or, when a str starting with "#!", the script text.
        """
        target = self.plugin_dir / f"{idx}-{name}"
        if isinstance(executable, str) and executable.startswith("#!"):
            target.write_text(executable, encoding="utf-8")
        else:
            shutil.copyfile(executable, target)
        target.chmod(0o755)
        if config is not None:
            (self.conf_dir / f"{idx}-{name}.conf").write_text(config, encoding="utf-8")
        return target

    def install_plugin_command(
        self,
        idx: str,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        config: str | None = None,
    ) -> Path:
        """Pre-install a plugin that runs `argv` (absolute program path); needs `restart()`.

        containerd starts pre-installed plugins with only NRI_PLUGIN_NAME, NRI_PLUGIN_IDX and
        NRI_PLUGIN_SOCKET=3 in the environment and discards their output, so this writes a
        /bin/sh wrapper that adds `env` and appends stdout/stderr to `plugin_log(name)`.
        """
        lines = ["#!/bin/sh"]
        lines += [f"export {k}={shlex.quote(v)}" for k, v in (env or {}).items()]
        log = shlex.quote(str(self.plugin_log(name)))
        lines.append(f"exec {shlex.join(argv)} >>{log} 2>&1")
        return self.install_plugin(idx, name, "\n".join(lines) + "\n", config)

    def plugin_log(self, name: str) -> Path:
        """Where the wrapper of `install_plugin_command` sends the plugin's output."""
        return self.base / "nri" / f"{name}.log"

    def cri(self, **kwargs: Any) -> Any:
        """A new `tests.e2e.cri.CriClient` for this containerd (close it, or use `with`)."""
        from tests.e2e.cri import CriClient

        return CriClient(self.address, self.logs_dir, **kwargs)

    # -- cleanup -----------------------------------------------------------------------------
    def shim_pids(self) -> list[int]:
        """Pids of containerd-shim processes serving this instance (matched by -address)."""
        pids = []
        for pid in procs_with_arg(self.address):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"containerd-shim" in f.read().split(b"\0")[0]:
                    pids.append(pid)
        return pids

    def close(self) -> None:
        """Stop containerd, kill its containers and shims, unmount and delete its directory."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        self.stop()
        _teardown_dir(self.base, str(self.base / "containerd.sock"), self.base / "runc")

    def __enter__(self) -> Containerd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def running_containerd(
    config: ContainerdConfig | None = None, **overrides: Any
) -> Iterator[Containerd]:
    """Start a private containerd for the duration of a `with` block."""
    ctd = Containerd(config, **overrides)
    try:
        yield ctd.start()
    finally:
        ctd.close()
