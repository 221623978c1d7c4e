"""gpu-cdi: a Container Device Interface library and NVIDIA spec generator."""
