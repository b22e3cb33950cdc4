"""Triton kernels, installed as ``pydecode.triton_kernels`` (never as a top-level ``triton_kernels``)."""
