"""Everything that knows about NVIDIA: discover a host (NVML, driver files) into an Inventory,
build a CDI spec from it, and the `generate` / `inventory` commands.

Modules import nothing heavy at module level; pynvml and yaml are imported where they are used.
"""
