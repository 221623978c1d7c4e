"""A small Kubernetes CRI client for the e2e tests (pods on the host network, no CNI).

The gRPC stubs are generated at test time with grpcio-tools from the CRI `api.proto` that
Debian's golang-github-kubernetes-cri-api-dev ships (unpacked by tests/e2e/install.sh), and
cached under <repo>/.cache/cri/<hash>/ (hash of the proto, grpcio-tools and protobuf versions).
The generated package is named `gpu_cdi_cri_v1` so its descriptor file name cannot clash with
other generated `api.proto` modules (NRI's) in the same process.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import re
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

import attrs
import grpc

from tests.e2e import paths
from tests.e2e.image import DEFAULT_REF

GEN_PACKAGE = "gpu_cdi_cri_v1"
RPC_TIMEOUT = 30.0
LABEL = "gpu-cdi-e2e"


class CriError(Exception):
    """A CRI call failed; carries the gRPC status code and containerd's message."""

    def __init__(self, method: str, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"CRI {method} failed: {code.name}: {details}")
        self.method = method
        self.code = code
        self.details = details


def _strip_gogo(src: str) -> str:
    # gogoproto options only steer Go code generation; plain protoc cannot resolve them.
    return "\n".join(line for line in src.splitlines() if "gogoproto" not in line) + "\n"


@functools.cache
def load_modules(proto: Path = paths.CRI_PROTO) -> tuple[ModuleType, ModuleType]:
    """Return (api_pb2, api_pb2_grpc) for the CRI proto, generating them once into the cache."""
    if not proto.is_file():
        raise FileNotFoundError(f"CRI proto {proto} missing; {paths.INSTALL_HINT}")
    import google.protobuf
    import grpc_tools
    from grpc_tools import protoc

    src = _strip_gogo(proto.read_text(encoding="utf-8"))
    tools_version = getattr(grpc_tools, "__version__", "") or _dist_version("grpcio-tools")
    key = hashlib.sha256(
        "\0".join([src, tools_version, google.protobuf.__version__]).encode()
    ).hexdigest()[:16]
    root = paths.CACHE / "cri" / key
    if not (root / GEN_PACKAGE / "api_pb2_grpc.py").is_file():
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".gen-", dir=root.parent))
        pkg = tmp / GEN_PACKAGE
        pkg.mkdir()
        (pkg / "__init__.py").write_text("")
        (pkg / "api.proto").write_text(src, encoding="utf-8")
        protos_include = Path(protoc.__file__).parent / "_proto"
        rc = protoc.main(
            [
                "protoc",
                f"-I{tmp}",
                f"-I{protos_include}",
                f"--python_out={tmp}",
                f"--grpc_python_out={tmp}",
                str(pkg / "api.proto"),
            ]
        )
        if rc != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise RuntimeError(f"grpc_tools.protoc failed (rc={rc}) on {proto}")
        try:
            tmp.rename(root)
        except OSError:
            # another session generated the same modules first; theirs are identical
            shutil.rmtree(tmp, ignore_errors=True)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return (
        importlib.import_module(f"{GEN_PACKAGE}.api_pb2"),
        importlib.import_module(f"{GEN_PACKAGE}.api_pb2_grpc"),
    )


def _dist_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


_LOG_LINE = re.compile(r"^(\S+) (stdout|stderr) ([FP]) ?(.*)$")


def parse_cri_log(text: str, stream: str | None = None) -> str:
    """Decode the CRI log format (`<time> <stream> <F|P> <text>`); P lines have no newline."""
    out: list[str] = []
    for raw in text.splitlines():
        m = _LOG_LINE.match(raw)
        if m is None:
            out.append(raw + "\n")
            continue
        if stream is not None and m.group(2) != stream:
            continue
        out.append(m.group(4) + ("\n" if m.group(3) == "F" else ""))
    return "".join(out)


@attrs.frozen
class Run:
    """Outcome of `CriClient.run`: container id, exit code, decoded log and OCI spec."""

    container_id: str
    exit_code: int
    logs: str
    spec: dict[str, Any]


@attrs.define
class _Pod:
    config: Any
    log_dir: Path


class CriClient:
    """CRI RuntimeService client bound to one containerd; tracks what it made for cleanup.

    Use as a context manager (or call `close()`): every container and pod created through this
    client is stopped and removed at the end.
    """

    def __init__(self, address: str, log_root: Path, *, timeout: float = RPC_TIMEOUT) -> None:
        self.pb, grpc_mod = load_modules()
        self.address = address
        self.log_root = Path(log_root)
        self.timeout = timeout
        self.channel = grpc.insecure_channel(
            "unix://" + address, options=[("grpc.max_receive_message_length", 64 << 20)]
        )
        self.runtime = grpc_mod.RuntimeServiceStub(self.channel)
        self.images = grpc_mod.ImageServiceStub(self.channel)
        self._pods: dict[str, _Pod] = {}
        self._containers: dict[str, str] = {}  # container id -> pod id

    # -- plumbing -------------------------------------------------------------------------
    def _call(self, method: str, request: Any, timeout: float | None = None) -> Any:
        try:
            return getattr(self.runtime, method)(request, timeout=timeout or self.timeout)
        except grpc.RpcError as e:
            raise CriError(method, e.code(), e.details() or "") from None

    def __enter__(self) -> CriClient:
        return self

    def __exit__(
        self,
        typ: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def version(self) -> Any:
        """CRI Version: runtime_name, runtime_version, runtime_api_version."""
        return self._call("Version", self.pb.VersionRequest(version="v1"))

    def image_known(self, ref: str) -> bool:
        """Whether CRI's image service resolves `ref` (ImageStatus answers an empty image when
        it does not)."""
        request = self.pb.ImageStatusRequest(image=self.pb.ImageSpec(image=ref))
        try:
            reply = self.images.ImageStatus(request, timeout=self.timeout)
        except grpc.RpcError as e:
            raise CriError("ImageStatus", e.code(), e.details() or "") from None
        return bool(reply.image.id)

    # -- pods -----------------------------------------------------------------------------
    def run_pod(
        self,
        name: str,
        namespace: str = "default",
        annotations: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
        *,
        privileged: bool = False,
    ) -> str:
        """RunPodSandbox on the host network namespace; returns the pod sandbox id.

        `privileged=True` is required for privileged containers in that pod.
        """
        pb = self.pb
        uid = uuid.uuid4().hex
        log_dir = self.log_root / f"{namespace}_{name}_{uid[:12]}"
        log_dir.mkdir(parents=True, exist_ok=True)
        config = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, uid=uid, namespace=namespace, attempt=0),
            # no hostname: a host-network pod shares the host UTS namespace
            log_directory=str(log_dir),
            annotations=dict(annotations or {}),
            labels={LABEL: "1", **(labels or {})},
            linux=pb.LinuxPodSandboxConfig(
                security_context=pb.LinuxSandboxSecurityContext(
                    namespace_options=self._host_ns(), privileged=privileged
                )
            ),
        )
        resp = self._call("RunPodSandbox", pb.RunPodSandboxRequest(config=config))
        self._pods[resp.pod_sandbox_id] = _Pod(config=config, log_dir=log_dir)
        return str(resp.pod_sandbox_id)

    def _host_ns(self) -> Any:
        pb = self.pb
        return pb.NamespaceOption(network=pb.NODE, pid=pb.CONTAINER, ipc=pb.POD)

    def remove_pod(self, pod_id: str) -> None:
        """Stop and remove a pod (and, as CRI does, its containers)."""
        for cid, pid in list(self._containers.items()):
            if pid == pod_id:
                self.remove_container(cid)
        self._call("StopPodSandbox", self.pb.StopPodSandboxRequest(pod_sandbox_id=pod_id))
        self._call("RemovePodSandbox", self.pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id))
        self._pods.pop(pod_id, None)

    # -- containers -----------------------------------------------------------------------
    def container_config(
        self,
        name: str,
        image: str = DEFAULT_REF,
        command: Sequence[str] | None = None,
        *,
        args: Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
        cdi_devices: Iterable[str] = (),
        devices: Iterable[tuple[str, str, str] | Mapping[str, str]] = (),
        mounts: Iterable[tuple[str, str] | tuple[str, str, bool]] = (),
        privileged: bool = False,
    ) -> Any:
        """Build a CRI ContainerConfig (see `create_container` for the arguments)."""
        pb = self.pb
        dev_msgs = []
        for d in devices:
            if isinstance(d, Mapping):
                dev_msgs.append(pb.Device(**d))
            else:
                host, ctr, perms = d
                dev_msgs.append(pb.Device(host_path=host, container_path=ctr, permissions=perms))
        mount_msgs = []
        for m in mounts:
            ro = bool(m[2]) if len(m) > 2 else False  # type: ignore[misc]
            mount_msgs.append(pb.Mount(host_path=m[0], container_path=m[1], readonly=ro))
        cfg = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name=name, attempt=0),
            image=pb.ImageSpec(image=image),
            command=list(command or []),
            args=list(args or []),
            envs=[pb.KeyValue(key=k, value=v) for k, v in (env or {}).items()],
            annotations=dict(annotations or {}),
            labels={LABEL: "1", **(labels or {})},
            log_path=f"{name}.log",
            devices=dev_msgs,
            mounts=mount_msgs,
            linux=pb.LinuxContainerConfig(
                security_context=pb.LinuxContainerSecurityContext(
                    namespace_options=self._host_ns(), privileged=privileged
                )
            ),
        )
        cfg.CDI_devices.extend(pb.CDIDevice(name=n) for n in cdi_devices)
        return cfg

    def create_container(
        self,
        pod_id: str,
        name: str,
        image: str = DEFAULT_REF,
        command: Sequence[str] | None = None,
        *,
        args: Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
        cdi_devices: Iterable[str] = (),
        devices: Iterable[tuple[str, str, str] | Mapping[str, str]] = (),
        mounts: Iterable[tuple[str, str] | tuple[str, str, bool]] = (),
        privileged: bool = False,
    ) -> str:
        """CreateContainer in `pod_id`; returns the container id, raises CriError on failure.

        `cdi_devices`: names for ContainerConfig.CDI_devices (containerd resolves them);
        `devices`: (host_path, container_path, permissions) or a dict of CRI Device fields;
        `mounts`: (host_path, container_path[, readonly]); `annotations`: container (CRI)
        annotations, e.g. `cdi.k8s.io/x: vendor.com/class=dev`. `privileged` needs a pod made
        with `run_pod(..., privileged=True)`.
        """
        cfg = self.container_config(
            name,
            image,
            command,
            args=args,
            env=env,
            annotations=annotations,
            labels=labels,
            cdi_devices=cdi_devices,
            devices=devices,
            mounts=mounts,
            privileged=privileged,
        )
        return self.create_from_config(pod_id, cfg)

    def create_from_config(self, pod_id: str, config: Any) -> str:
        """CreateContainer with a prepared ContainerConfig (used by the latency benchmark)."""
        pod = self._pods.get(pod_id)
        if pod is None:
            raise KeyError(f"pod {pod_id} was not created by this client")
        req = self.pb.CreateContainerRequest(
            pod_sandbox_id=pod_id, config=config, sandbox_config=pod.config
        )
        cid = str(self._call("CreateContainer", req).container_id)
        self._containers[cid] = pod_id
        return cid

    def start(self, container_id: str) -> None:
        """StartContainer (runs the OCI hooks and the process); raises CriError on failure."""
        self._call("StartContainer", self.pb.StartContainerRequest(container_id=container_id))

    def status(self, container_id: str, verbose: bool = False) -> Any:
        """ContainerStatusResponse (status + info map when verbose)."""
        return self._call(
            "ContainerStatus",
            self.pb.ContainerStatusRequest(container_id=container_id, verbose=verbose),
        )

    def wait(self, container_id: str, timeout: float = 30.0) -> int:
        """Wait until the container exited; returns its exit code (TimeoutError otherwise)."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.status(container_id).status
            if st.state == self.pb.CONTAINER_EXITED:
                return int(st.exit_code)
            if time.monotonic() > deadline:
                state = self.pb.ContainerState.Name(st.state)
                raise TimeoutError(f"container {container_id[:12]} still {state} after {timeout}s")
            time.sleep(0.05)

    def log_path(self, container_id: str) -> Path:
        """Path of the container's CRI log file (written by containerd)."""
        pod = self._pods[self._containers[container_id]]
        return Path(self.status(container_id).status.log_path or pod.log_dir)

    def logs(self, container_id: str, stream: str | None = None) -> str:
        """The container's output decoded from its CRI log file ("" if nothing was written)."""
        path = self.log_path(container_id)
        if not path.is_file():
            return ""
        return parse_cri_log(path.read_text(encoding="utf-8", errors="replace"), stream)

    def oci_spec(self, container_id: str) -> dict[str, Any]:
        """The OCI runtime spec containerd generated (ContainerStatus verbose info)."""
        info = self.status(container_id, verbose=True).info
        spec: dict[str, Any] = json.loads(info["info"])["runtimeSpec"]
        return spec

    def stop(self, container_id: str, timeout: int = 0) -> None:
        """StopContainer (SIGKILL after `timeout` seconds)."""
        self._call(
            "StopContainer",
            self.pb.StopContainerRequest(container_id=container_id, timeout=timeout),
        )

    def remove_container(self, container_id: str) -> None:
        """Stop (no grace period) and remove a container."""
        try:
            self.stop(container_id)
        except CriError as e:
            if e.code != grpc.StatusCode.NOT_FOUND:
                raise
        self._call("RemoveContainer", self.pb.RemoveContainerRequest(container_id=container_id))
        self._containers.pop(container_id, None)

    remove = remove_container

    def run(
        self,
        pod_id: str,
        name: str,
        command: Sequence[str],
        *,
        timeout: float = 30.0,
        **kwargs: Any,
    ) -> Run:
        """Create, start and wait for a container; returns exit code, log and OCI spec.

        Keyword arguments are those of `create_container`. The container is left in place
        (removed at `close()`), so its status stays inspectable.
        """
        cid = self.create_container(pod_id, name, command=command, **kwargs)
        spec = self.oci_spec(cid)
        self.start(cid)
        code = self.wait(cid, timeout)
        return Run(container_id=cid, exit_code=code, logs=self.logs(cid), spec=spec)

    def close(self) -> None:
        """Remove every container and pod this client made; close the channel."""
        errors = []
        for cid in list(self._containers):
            try:
                self.remove_container(cid)
            except CriError as e:
                if e.code != grpc.StatusCode.NOT_FOUND:
                    errors.append(str(e))
                self._containers.pop(cid, None)
        for pid in list(self._pods):
            try:
                self.remove_pod(pid)
            except CriError as e:
                if e.code != grpc.StatusCode.NOT_FOUND:
                    errors.append(str(e))
                self._pods.pop(pid, None)
        self.channel.close()
        if errors:
            raise RuntimeError("CRI cleanup failed: " + "; ".join(errors))


def cleanup_by_label(client: CriClient) -> None:
    """Remove every container and pod carrying the harness label (e.g. left by a crash)."""
    pb = client.pb
    sel = {LABEL: "1"}
    cfilter = pb.ContainerFilter(label_selector=sel)
    for c in client._call("ListContainers", pb.ListContainersRequest(filter=cfilter)).containers:
        client._containers.setdefault(c.id, c.pod_sandbox_id)
    pfilter = pb.PodSandboxFilter(label_selector=sel)
    for p in client._call("ListPodSandbox", pb.ListPodSandboxRequest(filter=pfilter)).items:
        client._pods.setdefault(p.id, _Pod(config=None, log_dir=client.log_root))
    client.close()


__all__ = ["CriClient", "CriError", "Run", "cleanup_by_label", "load_modules", "parse_cri_log"]
