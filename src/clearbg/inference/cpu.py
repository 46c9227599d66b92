"""What this CPU computes natively: the flags that decide which precision runs fast."""

from __future__ import annotations

# CPU flags (Linux /proc/cpuinfo) that decide which precision runs fast, with their usual names.
CPU_FEATURES = {"amx_bf16": "AMX-BF16", "avx512_bf16": "AVX512-BF16", "amx_int8": "AMX-INT8",
                "avx512_vnni": "AVX512-VNNI", "avx_vnni": "AVX-VNNI", "avx512_fp16": "AVX512-FP16"}
# Int8 dot-product units: where an int8 export runs about 2x fp32 (bench/precision.py).
INT8_UNITS = ("AMX-INT8", "AVX512-VNNI", "AVX-VNNI")


def cpu_features() -> list[str]:
    """The matrix and vector units of this CPU that matter for inference precision (names from
    ``CPU_FEATURES``); empty where /proc/cpuinfo is missing or lists none of them."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return []
    return [name for flag, name in CPU_FEATURES.items() if flag in flags]


def int8_native() -> bool:
    """Whether this CPU has int8 dot-product units (VNNI or AMX-INT8)."""
    return any(unit in INT8_UNITS for unit in cpu_features())
