"""What a driver installation contains, per driver version: libraries, binaries, configs.

Mirrors ../shared/reference/nvidia-ctk-specs/driver-root-layout.txt (driver 550.163.01 on a
DGX-A100); other versions get the same set with their version substituted, plus the libraries
newer branches ship.
"""

from __future__ import annotations

import attrs

LIBDIR = "usr/lib/x86_64-linux-gnu"


@attrs.frozen
class Library:
    """A versioned driver library: file under LIBDIR, its SONAME and the symlinks next to it."""

    file: str  # relative to LIBDIR; "{v}" is the driver version
    soname: str  # "{v}" allowed
    links: tuple[tuple[str, str], ...] = ()  # (link, target) relative to LIBDIR

    def render(self, version: str) -> Library:
        """This library for a concrete driver version."""
        return Library(
            self.file.format(v=version),
            self.soname.format(v=version),
            tuple((a.format(v=version), b.format(v=version)) for a, b in self.links),
        )


def _lib(stem: str, soname_suffix: str | None, dev_link: bool = False) -> Library:
    """lib<stem>.so.{v} with SONAME lib<stem>.so.<suffix> (None: the file name itself)."""
    file = f"{stem}.so.{{v}}"
    soname = f"{stem}.so.{soname_suffix}" if soname_suffix else file
    links: list[tuple[str, str]] = []
    if soname != file:
        links.append((soname, file))
        if dev_link:
            links.append((f"{stem}.so", soname))
    return Library(file, soname, tuple(links))


NVML_FILE = "libnvidia-ml.so.{v}"
SANDBOXUTILS_FILE = "libnvidia-sandboxutils.so.{v}"

LIBRARIES: tuple[Library, ...] = (
    _lib("libEGL_nvidia", "0"),
    _lib("libGLESv1_CM_nvidia", "1"),
    _lib("libGLESv2_nvidia", "2"),
    _lib("libGLX_nvidia", "0"),
    _lib("libcuda", "1", dev_link=True),
    _lib("libcudadebugger", "1"),
    _lib("libnvcuvid", "1", dev_link=True),
    _lib("libnvidia-allocator", "1", dev_link=True),
    _lib("libnvidia-cfg", "1", dev_link=True),
    _lib("libnvidia-eglcore", None),
    _lib("libnvidia-encode", "1", dev_link=True),
    _lib("libnvidia-fbc", "1", dev_link=True),
    _lib("libnvidia-glcore", None),
    _lib("libnvidia-glsi", None),
    _lib("libnvidia-glvkspirv", None),
    _lib("libnvidia-gpucomp", None),
    _lib("libnvidia-ml", "1", dev_link=True),  # the fake NVML, not a stub
    _lib("libnvidia-ngx", "1"),
    _lib("libnvidia-nvvm", "4", dev_link=True),
    _lib("libnvidia-opencl", "1"),
    _lib("libnvidia-opticalflow", "1"),
    _lib("libnvidia-pkcs11-openssl3", None),
    _lib("libnvidia-pkcs11", None),
    _lib("libnvidia-ptxjitcompiler", "1", dev_link=True),
    _lib("libnvidia-rtcore", None),
    _lib("libnvidia-tls", None),
    _lib("libnvoptix", "1"),
    Library(
        "vdpau/libvdpau_nvidia.so.{v}",
        "libvdpau_nvidia.so.1",
        (
            ("vdpau/libvdpau_nvidia.so.1", "libvdpau_nvidia.so.{v}"),
            ("libvdpau_nvidia.so", "vdpau/libvdpau_nvidia.so.{v}"),
        ),
    ),
    Library(
        "libnvidia-egl-gbm.so.1.1.1",
        "libnvidia-egl-gbm.so.1",
        (("libnvidia-egl-gbm.so.1", "libnvidia-egl-gbm.so.1.1.1"),),
    ),
    Library(
        "libnvidia-egl-wayland.so.1.1.13",
        "libnvidia-egl-wayland.so.1",
        (("libnvidia-egl-wayland.so.1", "libnvidia-egl-wayland.so.1.1.13"),),
    ),
    Library(
        "nvidia/xorg/libglxserver_nvidia.so.{v}",
        "libglxserver_nvidia.so.{v}",
        (("nvidia/xorg/libglxserver_nvidia.so", "libglxserver_nvidia.so.{v}"),),
    ),
    Library("nvidia/xorg/nvidia_drv.so", "nvidia_drv.so"),
)

# Shipped from the 560 branch on (the reference 550 root has none).
LIBRARIES_560: tuple[Library, ...] = (
    _lib("libnvidia-sandboxutils", "1", dev_link=True),  # a fake one, not a stub
)

# Links that are not next to a library: (link, target) relative to LIBDIR.
EXTRA_LINKS: tuple[tuple[str, str], ...] = (
    ("gbm/nvidia-drm_gbm.so", "../libnvidia-allocator.so.1"),
)


def libraries(version: str) -> tuple[Library, ...]:
    """The driver libraries of `version`."""
    libs = LIBRARIES
    if int(version.split(".")[0]) >= 560:
        libs = libs + LIBRARIES_560
    return tuple(lib.render(version) for lib in libs)


BINARIES = (
    "nvidia-bug-report.sh",
    "nvidia-cuda-mps-control",
    "nvidia-cuda-mps-server",
    "nvidia-debugdump",
    "nvidia-imex",
    "nvidia-imex-ctl",
    "nvidia-modprobe",
    "nvidia-persistenced",
    "nvidia-settings",
    "nvidia-smi",
    "nvidia-xconfig",
)

FIRMWARE = ("gsp_ga10x.bin", "gsp_tu10x.bin")


def config_files(version: str) -> dict[str, str]:
    """Config and data files (path relative to the root -> content)."""
    return {
        "etc/ld.so.conf": "include /etc/ld.so.conf.d/*.conf\n",
        "etc/ld.so.conf.d/x86_64-linux-gnu.conf": (
            "# Multiarch support\n/usr/local/lib/x86_64-linux-gnu\n/lib/x86_64-linux-gnu\n"
            "/usr/lib/x86_64-linux-gnu\n"
        ),
        "etc/OpenCL/vendors/nvidia.icd": "libnvidia-opencl.so.1\n",
        "usr/share/X11/xorg.conf.d/nvidia-drm-outputclass.conf": (
            'Section "OutputClass"\n    Identifier "nvidia"\n    MatchDriver "nvidia-drm"\n'
            '    Driver "nvidia"\nEndSection\n'
        ),
        "usr/share/egl/egl_external_platform.d/10_nvidia_wayland.json": (
            '{\n    "file_format_version" : "1.0.0",\n    "ICD" : {\n'
            '        "library_path" : "libnvidia-egl-wayland.so.1"\n    }\n}\n'
        ),
        "usr/share/egl/egl_external_platform.d/15_nvidia_gbm.json": (
            '{\n    "file_format_version" : "1.0.0",\n    "ICD" : {\n'
            '        "library_path" : "libnvidia-egl-gbm.so.1"\n    }\n}\n'
        ),
        "usr/share/glvnd/egl_vendor.d/10_nvidia.json": (
            '{\n    "file_format_version" : "1.0.0",\n    "ICD" : {\n'
            '        "library_path" : "libEGL_nvidia.so.0"\n    }\n}\n'
        ),
        f"usr/share/nvidia/nvidia-application-profiles-{version}-rc": "{}\n",
        "usr/share/nvidia/nvoptix.bin": "fake nvoptix.bin\n",
        "usr/share/vulkan/icd.d/nvidia_icd.json": (
            '{\n    "file_format_version" : "1.0.1",\n    "ICD": {\n'
            '        "library_path": "libGLX_nvidia.so.0",\n'
            f'        "api_version" : "1.3.{version.split(".")[1]}"\n    }}\n}}\n'
        ),
        "usr/share/vulkan/implicit_layer.d/nvidia_layers.json": (
            '{\n    "file_format_version" : "1.0.1",\n    "layer": {\n'
            '        "name": "VK_LAYER_NV_optimus",\n        "type": "INSTANCE",\n'
            '        "library_path": "libGLX_nvidia.so.0",\n'
            f'        "api_version" : "1.3.{version.split(".")[1]}",\n'
            '        "implementation_version" : "1",\n'
            '        "description" : "NVIDIA Optimus layer"\n    }\n}\n'
        ),
    }
