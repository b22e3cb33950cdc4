"""Build pydecode: the C++ CPU extension always, the CUDA sources only where torch has CUDA and nvcc is found.

Install with ``pip install --no-build-isolation -e .`` after installing torch, so the extension is built against the
torch you run (build isolation would fetch another torch, possibly a multi-GB CUDA build).
"""
import glob
import os
import shutil

from setuptools import find_packages, setup


def _extensions():
    if os.environ.get("PYDECODE_NO_EXTENSION") == "1":
        return [], {}
    import torch
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

    here = os.path.dirname(os.path.abspath(__file__))
    sources = sorted(glob.glob("csrc/*/cpu.cpp")) + ["csrc/bindings.cpp"]  # csrc/<op>/: one folder per op
    include_dirs = [os.path.join(here, "csrc", "include")]
    cxx_flags = ["-O3", "-fopenmp", "-DNDEBUG"]  # no -std: torch's build picks the standard its headers need
    link_flags = ["-fopenmp"]
    with_cuda = torch.version.cuda is not None and shutil.which("nvcc") is not None
    if with_cuda and os.environ.get("PYDECODE_NO_CUDA") != "1":
        sources += sorted(glob.glob("csrc/*/cuda.cu"))
        nvcc_flags = ["-O3", "--use_fast_math", "-DNDEBUG"]
        ext = CUDAExtension(
            "pydecode._C", sources, include_dirs=include_dirs, define_macros=[("PYDECODE_WITH_CUDA", "1")],
            extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags}, extra_link_args=link_flags,
        )
    else:
        ext = CppExtension(
            "pydecode._C", sources, include_dirs=include_dirs,
            extra_compile_args={"cxx": cxx_flags}, extra_link_args=link_flags,
        )
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = _extensions()

setup(
    name="pydecode",
    version="0.1.0",
    description=("Decoding engine for causal LMs with Triton and C++/CUDA sampling kernels; "
                 "generate() mirrors transformers"),
    python_requires=">=3.10",
    packages=find_packages(include=["pydecode", "pydecode.*"]) + ["pydecode.triton_kernels"],
    package_dir={"pydecode.triton_kernels": "triton_kernels"},
    install_requires=["torch>=2.11", "transformers>=5.17,<6", "numpy"],
    extras_require={
        "triton": ["triton>=3.6"],
        "real": ["gguf>=0.10", "accelerate>=1.0"],
        "test": ["pytest", "scipy", "hypothesis>=6.100", "gguf>=0.10", "accelerate>=1.0", "triton>=3.6",
                 # transformers' generation test suite (shared/conformance): its imports and pytest plugins
                 "parameterized", "pytest-timeout", "pytest-xdist", "httpx", "timeout-decorator",
                 "ruff"],  # the linter .ci/run runs before the tests (pyproject.toml: [tool.ruff])
        "bench": ["matplotlib", "optimum-quanto>=0.2.5", "hqq>=0.2"],  # transformers' QuantizedCache backends
    },
    entry_points={
        "console_scripts": ["pydecode=pydecode.cli:main"],
        # vLLM (pydecode/integrations/vllm): the sampler swap acts only with PYDECODE_VLLM_SAMPLER=1
        "vllm.general_plugins": ["pydecode_sampler = pydecode.integrations.vllm.plugin:register"],
        # SGLang (pydecode/integrations/sglang): adds the choice --sampling-backend pydecode, selects nothing
        "sglang.srt.plugins": ["pydecode_sampler = pydecode.integrations.sglang.sampler:register"],
        "vllm.logits_processors": [
            "pydecode_bans = pydecode.integrations.vllm.logits_processors:PydecodeBansProcessor",
            "pydecode_warpers = pydecode.integrations.vllm.logits_processors:PydecodeWarpersProcessor",
        ],
    },
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
