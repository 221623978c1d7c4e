"""Discover a node into an Inventory: NVML for GPUs and MIG devices, files for the rest.

Where the node is (run on it, or mounted at /host in a container) is `roots.Roots`."""

from __future__ import annotations

from collections.abc import Sequence

from cdi.nvidia import devices, driver
from cdi.nvidia import rootpath as rp
from cdi.nvidia.inventory import Gpu, Inventory, Node
from cdi.nvidia.roots import Local, RootError, Roots

NVML_LIBRARY = "libnvidia-ml.so.1"


class DiscoveryError(RuntimeError):
    """The host cannot be discovered (no driver, NVML failing); one line saying what to do."""


def _no_driver(roots: Roots, where: str, dirs: Sequence[str]) -> DiscoveryError:
    searched = ", ".join(rp.host(where, d) for d in dirs) or "no library directory found"
    cache = rp.host(where, "/etc/ld.so.cache")
    if roots.mounted:
        place = (
            f"under the driver root {roots.driver_root} of the node mounted at "
            f"{roots.host_root} (searched {searched} and {cache}); is the node's / mounted "
            f"at {roots.host_root}, or is the driver elsewhere on the node (--driver-root)?"
        )
    else:
        place = (
            f"under the driver root {roots.driver_root} (searched {searched} and {cache}); "
            "is the driver installed, or mounted elsewhere (--driver-root)?"
        )
    return DiscoveryError(
        f"{NVML_LIBRARY} was not found {place} Without a driver, build from a saved "
        "inventory: gpu-cdi generate --inventory FILE (examples in specs/inventories/)"
    )


def _locate(roots: Roots) -> Local:
    try:
        return roots.locate()
    except RootError as error:
        raise DiscoveryError(str(error)) from None


def _nvml_library(roots: Roots, root: str, dirs: Sequence[str]) -> str:
    library = driver.find_library(root, dirs, NVML_LIBRARY)
    if library is None:
        raise _no_driver(roots, root, dirs)
    return library


def nvml_library(roots: Roots) -> str:
    """Where the node's libnvidia-ml.so.1 is in this filesystem, to load it (what `discover`
    hands pynvml); DiscoveryError when there is none or a root is missing."""
    root = _locate(roots).driver
    return _nvml_library(roots, root, driver.library_dirs(root, roots.library_search_paths))


def _with_drm(gpu: Gpu, local: Local) -> Gpu:
    if gpu.error or not gpu.pci:
        return gpu
    drm = devices.drm_nodes(local.proc_sys, gpu.pci)
    links = devices.by_path_links(local.dev, gpu.pci, drm)
    return gpu._replace(drm=tuple(drm), by_path=tuple(links))


def discover(roots: Roots | None = None, mode: str = "nvml") -> Inventory:
    """The Inventory of the node `roots` describe (default: this one, driver at /), with every
    path as the node sees it; DiscoveryError when there is no usable driver or a root is
    missing."""
    with rp.one_pass():
        return _discover(roots or Roots(), mode)


def _discover(roots: Roots, mode: str) -> Inventory:
    from cdi.nvidia.nvml import Nvml, NvmlError

    local = _locate(roots)
    root = local.driver
    dirs = driver.library_dirs(root, roots.library_search_paths)
    gpus: list[Gpu] = []
    version = None
    if mode == "nvml":
        library = _nvml_library(roots, root, dirs)
        try:
            # The node's own libnvidia-ml, opened where it is in this filesystem.
            with Nvml(library) as nvml:
                version = nvml.driver_version()
                gpus = [_with_drm(g, local) for g in nvml.gpus(local.proc_sys)]
        except NvmlError as error:
            raise DiscoveryError(str(error)) from None
    else:
        # Management and IMEX specs need no GPU enumeration, only the driver's files.
        version = driver.version_from_files(root, dirs)
        if version is None:
            raise _no_driver(roots, root, dirs)
    nodes: dict[str, Node] = {n.path: n for n in devices.nvidia_nodes(local.dev)}
    for gpu in gpus:
        for path in gpu.drm:
            node = devices.node(local.dev, path)
            if node is not None:
                nodes[path] = node
    libraries, library_dirs = driver.libraries(root, dirs, version)
    files = [
        *driver.binaries(root),
        *driver.graphics_files(root, library_dirs, version),
        *driver.firmware(root, version, devices.firmware_path(local.proc_sys)),
        *driver.ipc(root),
        *driver.configs(root),
    ]
    return Inventory(
        driver_version=version,
        driver_root=roots.driver_root,
        dev_root=roots.dev_root,
        gpus=tuple(gpus),
        nodes=tuple(sorted(nodes.values())),
        libraries=tuple(libraries),
        library_dirs=tuple(library_dirs),
        files=tuple(files),
    )
