"""Run a command with every numerical library kept to AVX2, as on a machine without AVX-512.

Usage::

    python benchmarks/avx2_only.py python benchmarks/train_throughput.py --preset default ...
    python benchmarks/avx2_only.py nucleuseg train --data stage1_train --minutes 60 ...

On a processor with AVX-512 this is the nearest thing to an AVX2-only machine of the same cores,
caches and memory: each library's own switch for the instruction set it dispatches to is set in
the environment of the command (and of the processes it starts), which then runs as usual.

- numpy's matrix product (OpenBLAS): ``OPENBLAS_CORETYPE=Haswell``;
- numpy's own loops: ``NPY_DISABLE_CPU_FEATURES`` lists the AVX-512 features;
- torch: ``ATEN_CPU_CAPABILITY=avx2`` (ATen's kernels) and ``ONEDNN_MAX_CPU_ISA=AVX2``
  (oneDNN's convolutions, in TensorFlow too);
- JAX / Flax: ``XLA_FLAGS=--xla_cpu_max_isa=AVX2`` (added to any ``XLA_FLAGS`` already set).

ONNX Runtime has no such switch and still uses AVX-512 where the processor has it.
:func:`common.cpu_summary` says ``AVX-512 off`` when these variables are set.
"""

from __future__ import annotations

import os
import sys

NUMPY_AVX512 = (
    "AVX512F AVX512CD AVX512VPOPCNTDQ AVX512VL AVX512BW AVX512DQ AVX512VNNI AVX512IFMA "
    "AVX512VBMI AVX512VBMI2 AVX512BITALG AVX512BF16 AVX512FP16 AVX512_KNL AVX512_KNM "
    "AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL AVX512_SPR X86_V4"
)


def avx2_environment(environ: dict[str, str]) -> dict[str, str]:
    """A copy of ``environ`` with every library's instruction set kept to AVX2."""
    env = dict(environ)
    env.update(
        OPENBLAS_CORETYPE="Haswell",
        NPY_DISABLE_CPU_FEATURES=NUMPY_AVX512,
        ATEN_CPU_CAPABILITY="avx2",
        ONEDNN_MAX_CPU_ISA="AVX2",
        DNNL_MAX_CPU_ISA="AVX2",
    )
    xla = env.get("XLA_FLAGS", "")
    env["XLA_FLAGS"] = f"{xla} --xla_cpu_max_isa=AVX2".strip()
    return env


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    os.execvpe(argv[0], argv, avx2_environment(dict(os.environ)))
    return 1  # not reached: exec replaces this process


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
