"""gpu-cdi-nri: an NRI plugin that injects CDI devices into containers."""
