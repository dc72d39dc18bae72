"""Quantization toolchains, one module each, behind :mod:`edge.convert.toolchains.base`."""
