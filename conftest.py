"""pytest configuration for doctests: backend modules are collected only where their framework is."""

import importlib.util

collect_ignore = [
    f"nucleuseg/backends/{module}.py"
    for module, framework in (
        ("torch_backend", "torch"),
        ("keras_backend", "tensorflow"),
        ("flax_backend", "flax"),
    )
    if importlib.util.find_spec(framework) is None
]
