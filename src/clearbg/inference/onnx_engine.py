"""ONNX Runtime as the network inside ``Predictor``: same photos in, same maps out.

``OrtNetwork`` takes what ``Predictor`` gives the PyTorch module it replaces (a normalised
(B, 3, S, S) float32 array in, (B, 1, S, S) probabilities out), so ``Predictor`` keeps its own
resizing, normalisation, min-max stretch, upsampling and per-core threading for both engines.
Nothing here imports PyTorch unless a PyTorch network has to be exported first. It runs a clearbg export
(``clearbg export``; its metadata gives the input size and normalisation); a registry name or
a checkpoint is exported in memory first (a few seconds for u2netp); a registered model runs the
ONNX export logged with it (``clearbg register``).

Why ONNX Runtime: one self-describing file serves this engine, browsers (onnxruntime-web) and
other runtimes, and its int8 export (the CPU default where VNNI exists, ``int8_cache``) runs at
1.5-1.8x fp32 with mean IoU within 0.001 of fp32's (bench/precision.py).
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from clearbg.models.hub import ResolvedModel, spec_from_metadata
from clearbg.models.onnx_metadata import INPUT_NAME, ExportError, OnnxMetadata, read_metadata, set_metadata


def session_options(threads: int | None = None) -> "onnxruntime.SessionOptions":  # noqa: F821
    """All graph optimisations, ``threads`` intra-op threads (default: every core)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    options.intra_op_num_threads = threads or cores or 1
    # Idle threads sleep instead of spinning: the predictor calls one session from a worker per
    # core, and spinning threads of the other calls took the cores (1.6x slower on 2 cores),
    # while one photo alone still gets every core (bench/precision.py).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # No per-shape memory plan: with one photo per worker it held ~100 MB more (RSS 690 -> 590 MB
    # for int8 u2netp on 2 cores) at the same images/s.
    options.enable_mem_pattern = False
    return options


class OrtNetwork:
    """An ONNX Runtime session over a clearbg export, callable like the PyTorch model.

    Args:
        model: path to a clearbg ``.onnx`` export, or an ``onnx.ModelProto`` from ``export_onnx``.
        threads: intra-op threads (default: every core).

    Attributes:
        metadata: the export's ``OnnxMetadata``.
        spec: a ``ModelSpec`` with the export's input size and normalisation.

    Raises:
        ExportError: the file is not a clearbg export or ONNX Runtime cannot load it.

    Example:
        >>> net = OrtNetwork("u2netp-int8.onnx")              # doctest: +SKIP
        >>> net(np.zeros((2, 3, 320, 320), np.float32)).shape  # doctest: +SKIP
        (2, 1, 320, 320)
    """

    def __init__(self, model: str | Path | "onnx.ModelProto", *, threads: int | None = None):  # noqa: F821
        import onnxruntime as ort

        self._model = model
        named = isinstance(model, (str, Path))
        if not named:
            self.metadata: OnnxMetadata = read_metadata(model)
        try:
            self.session = ort.InferenceSession(
                str(model) if named else model.SerializeToString(),
                session_options(threads),
                providers=[p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()],
            )
        except Exception as err:  # onnxruntime raises its own Fail/InvalidGraph/... types
            if named:
                read_metadata(model)  # the clearer message for a file that is not a clearbg export
            raise ExportError(f"ONNX Runtime cannot load {model if named else 'the model'}: {err}") from err
        if named:  # the session has read the file's properties: no second parse (and no `import onnx`, 0.7 s)
            self.metadata = OnnxMetadata.from_props(self.session.get_modelmeta().custom_metadata_map, str(model))
        self.spec = spec_from_metadata(self.metadata)

    def with_threads(self, threads: int) -> OrtNetwork:
        """Another session on the same model with ``threads`` intra-op threads."""
        return OrtNetwork(self._model, threads=threads)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Probabilities (B, 1, S, S) float32 for a normalised (B, 3, S, S) batch (the fused
        map: an export has no side outputs). A fixed-batch export runs one image at a time."""
        array = np.ascontiguousarray(x, dtype=np.float32)
        step = len(array) if self.metadata.dynamic_batch else 1
        outs = [self.session.run(None, {INPUT_NAME: array[i : i + step]})[0] for i in range(0, len(array), step)]
        return np.concatenate(outs) if len(outs) > 1 else outs[0]


def ort_network(found: ResolvedModel, precision: str) -> OrtNetwork:
    """The ONNX Runtime network for a resolved model.

    Args:
        found: from ``clearbg.models.hub.resolve(..., onnx=True)``. Its ``onnx`` file (a
            ``clearbg export``, or the export registered with a ``models:/`` version) runs as
            is, converted to fp16 for ``precision="fp16"``; a PyTorch network is exported in
            memory.
        precision: ``auto``/``fp32`` -> fp32, ``fp16`` -> fp16, ``int8`` -> the cached int8
            export calibrated on clearbg's shipped photos (``int8_cache``; for your own
            calibration photos run ``clearbg export --int8`` and pass the file). A given export
            file runs in its own precision.

    Raises:
        ExportError: bf16 (ONNX Runtime has no bf16 CPU kernels) or export failure.
    """
    if found.network is None:
        return OrtNetwork(found.onnx)
    if precision not in ("auto", "fp32", "fp16", "int8"):
        raise ExportError(f"the onnxruntime engine runs fp32, fp16 or int8 exports, not {precision!r}")
    from clearbg.inference.onnx_export import export_onnx, to_fp16

    if precision == "int8":
        from clearbg.inference.int8_cache import cached_int8

        return OrtNetwork(cached_int8(found))
    if found.onnx is not None and precision != "fp16":
        return OrtNetwork(found.onnx)
    if found.onnx is not None:
        import onnx

        proto = to_fp16(onnx.load(str(found.onnx)))
        set_metadata(proto, replace(read_metadata(found.onnx), variant="fp16"))
        return OrtNetwork(proto)
    return OrtNetwork(export_onnx(found.network, found.spec, dynamic_batch=True,
                                  precision="fp32" if precision == "auto" else precision))
