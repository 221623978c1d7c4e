"""Small CDI specs for the plugin's tests (device nodes fully specified: no host lookups)."""

from __future__ import annotations

from pathlib import Path

GPU_SPEC = """\
cdiVersion: "0.7.0"
kind: nvidia.com/gpu
containerEdits:
  env: ["NVIDIA_VISIBLE_DEVICES=void", "DRIVER=1"]
  deviceNodes:
    - {path: /dev/nvidiactl, type: c, major: 195, minor: 255, fileMode: 438}
  mounts:
    - {hostPath: /usr/lib/libcuda.so.1, containerPath: /usr/lib/libcuda.so.1,
       options: [ro, nosuid, nodev, bind]}
  hooks:
    - {hookName: createContainer, path: /usr/bin/gpu-cdi-hook,
       args: [gpu-cdi-hook, update-ldcache, --folder, /usr/lib]}
devices:
  - name: "0"
    containerEdits:
      deviceNodes:
        - {path: /dev/nvidia0, type: c, major: 195, minor: 0}
        - {path: /dev/dri/renderD128, type: c, major: 226, minor: 128, gid: 105}
      additionalGids: [105]
      hooks:
        - {hookName: createContainer, path: /usr/bin/gpu-cdi-hook,
           args: [gpu-cdi-hook, create-symlinks, --link, "../card1::/dev/dri/by-path/a"],
           timeout: 5}
  - name: "1"
    containerEdits:
      deviceNodes:
        - {path: /dev/nvidia1, type: c, major: 195, minor: 1}
  - name: all
    containerEdits:
      deviceNodes:
        - {path: /dev/nvidia0, type: c, major: 195, minor: 0}
        - {path: /dev/dri/renderD128, type: c, major: 226, minor: 128, gid: 105}
        - {path: /dev/nvidia1, type: c, major: 195, minor: 1}
      hooks:
        - {hookName: createContainer, path: /usr/bin/gpu-cdi-hook,
           args: [gpu-cdi-hook, create-symlinks, --link, "../card1::/dev/dri/by-path/a"],
           timeout: 5}
"""

MGMT_SPEC = """\
cdiVersion: "0.5.0"
kind: management.nvidia.com/gpu
devices:
  - name: all
    containerEdits:
      deviceNodes:
        - {path: /dev/nvidiactl, type: c, major: 195, minor: 255}
"""


def write_specs(directory: Path, **specs: str) -> Path:
    """Write each spec as `<name>.yaml` in `directory` (created); returns the directory."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in specs.items():
        (directory / f"{name}.yaml").write_text(text)
    return directory
