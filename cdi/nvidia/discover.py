"""Discover a host into an Inventory: NVML for GPUs and MIG devices, files for the rest."""

from __future__ import annotations

from collections.abc import Sequence

from cdi.nvidia import devices, driver
from cdi.nvidia.inventory import Gpu, Inventory, Node

NVML_LIBRARY = "libnvidia-ml.so.1"


class DiscoveryError(RuntimeError):
    """The host cannot be discovered (no driver, NVML failing); one line saying what to do."""


def _no_driver(root: str, dirs: Sequence[str]) -> DiscoveryError:
    where = ", ".join(dirs) if dirs else "no library directory found"
    return DiscoveryError(
        f"{NVML_LIBRARY} was not found under the driver root {root} (searched {where} and "
        f"{root.rstrip('/')}/etc/ld.so.cache); is the driver installed, or mounted elsewhere "
        "(--driver-root)? Without a driver, build from a saved inventory: "
        "gpu-cdi generate --inventory FILE (examples in specs/inventories/)"
    )


def _with_drm(gpu: Gpu, host_root: str, dev_root: str) -> Gpu:
    if gpu.error or not gpu.pci:
        return gpu
    drm = devices.drm_nodes(host_root, gpu.pci)
    links = devices.by_path_links(dev_root, gpu.pci, drm)
    return gpu._replace(drm=tuple(drm), by_path=tuple(links))


def discover(
    driver_root: str = "/",
    dev_root: str | None = None,
    host_root: str = "/",
    library_search_paths: Sequence[str] = (),
    mode: str = "nvml",
) -> Inventory:
    """The Inventory of this host; DiscoveryError when there is no usable driver."""
    from cdi.nvidia.nvml import Nvml, NvmlError

    dev_root = dev_root or driver_root
    dirs = driver.library_dirs(driver_root, library_search_paths)
    library = driver.find_library(driver_root, dirs, NVML_LIBRARY)
    gpus: list[Gpu] = []
    version = None
    if mode == "nvml":
        if library is None:
            raise _no_driver(driver_root, dirs)
        try:
            with Nvml(library) as nvml:
                version = nvml.driver_version()
                gpus = [_with_drm(g, host_root, dev_root) for g in nvml.gpus(host_root)]
        except NvmlError as error:
            raise DiscoveryError(str(error)) from None
    else:
        # Management and IMEX specs need no GPU enumeration, only the driver's files.
        version = driver.version_from_files(driver_root, dirs)
        if version is None:
            raise _no_driver(driver_root, dirs)
    nodes: dict[str, Node] = {n.path: n for n in devices.nvidia_nodes(dev_root)}
    for gpu in gpus:
        for path in gpu.drm:
            node = devices.node(dev_root, path)
            if node is not None:
                nodes[path] = node
    libraries, library_dirs = driver.libraries(driver_root, dirs, version)
    files = [
        *driver.binaries(driver_root),
        *driver.graphics_files(driver_root, library_dirs, version),
        *driver.firmware(driver_root, version, devices.firmware_path(host_root)),
        *driver.ipc(driver_root),
        *driver.configs(driver_root),
    ]
    return Inventory(
        driver_version=version,
        driver_root=driver_root,
        dev_root=dev_root,
        gpus=tuple(gpus),
        nodes=tuple(sorted(nodes.values())),
        libraries=tuple(libraries),
        library_dirs=tuple(library_dirs),
        files=tuple(files),
    )
