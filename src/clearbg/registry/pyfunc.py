"""MLflow's ``python_function`` flavour for a registered clearbg model: photo bytes in, PNG out.

A version registered by ``clearbg register`` keeps MLflow's pytorch flavour (``mlflow.pytorch.
load_model`` still returns the network) and carries this module as its ``python_function``
loader, so the MLflow tools Databricks users know work on photos as they are:

    mlflow models serve -m models:/shop@champion --env-manager local
    curl -d '{"dataframe_split": {"columns": ["image"], "data": [["<base64 JPEG>"]]},
              "params": {"output": "mask"}}' -H 'Content-Type: application/json' localhost:5000/invocations

    udf = mlflow.pyfunc.spark_udf(spark, "models:/shop@champion", result_type="string",
                                  params={"encoding": "base64"}, env_manager="local")
    frame.withColumn("cutout", udf("image"))          # a binary column of photo bytes in

Input: a table with a binary column ``image`` (any format ``clearbg.imageio`` decodes; over
HTTP MLflow base64-decodes it, as the signature says binary). Output: a column ``image`` holding
one PNG per row: the cutout (RGBA, the default) or the 8-bit mask (``output="mask"``), at the
photo's full resolution; as bytes, or with ``encoding="base64"`` as base64 text, since Spark UDFs
cannot return binary (``spark_udf`` takes primitive result types only). The network is the version's plain clearbg checkpoint
(``extra_files/clearbg.pt``), run by :class:`clearbg.inference.predictor.Predictor`: the same
preprocessing and post-processing as ``clearbg remove``.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

from clearbg.errors import ClearbgError
from clearbg.imageio import encode_image, open_image
from clearbg.inference.compose import alpha_from_prob, cutout
from clearbg.models.mlflow_uris import CHECKPOINT_FILE

OUTPUTS = ("cutout", "mask")
ENCODINGS = ("bytes", "base64")


def signature():
    """The flavour's signature: ``image`` bytes in, ``image`` PNG out; ``output`` and ``encoding`` parameters."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema

    return ModelSignature(inputs=Schema([ColSpec(DataType.binary, "image")]),
                          outputs=Schema([ColSpec(DataType.binary, "image")]),
                          params=ParamSchema([ParamSpec("output", DataType.string, "cutout"),
                                              ParamSpec("encoding", DataType.string, "bytes")]))


def save_model(pytorch_model, path: str, mlflow_model=None, **kwargs) -> None:
    """``mlflow.models.Model.log``'s flavour hook: MLflow's pytorch flavour, whose
    ``python_function`` loader is then pointed at this module (everything else stays torch's)."""
    import mlflow.pytorch

    mlflow.pytorch.save_model(pytorch_model, path, mlflow_model=mlflow_model, **kwargs)
    mlflow_model.flavors["python_function"]["loader_module"] = __name__
    mlflow_model.save(os.path.join(path, "MLmodel"))


def _load_pyfunc(data_path: str, model_config: dict | None = None) -> ClearbgPyfunc:
    """What ``mlflow.pyfunc.load_model`` calls with the flavour's data folder (and torch's model
    config, e.g. a device, which the predictor chooses itself)."""
    return ClearbgPyfunc(Path(data_path).parent / "extra_files" / CHECKPOINT_FILE)


class ClearbgPyfunc:
    """The loaded model: ``predict(frame, params)`` -> a frame with one PNG per photo."""

    def __init__(self, checkpoint: str | os.PathLike):
        from clearbg.inference.predictor import Predictor

        # fp32: a served model answers the same on any machine (bf16 would follow the CPU).
        self.predictor = Predictor(str(checkpoint), precision="fp32")

    def predict(self, model_input: Any, params: dict[str, Any] | None = None):
        """Cut out every photo of ``model_input`` (a frame with ``image`` bytes, or a list of bytes).

        Raises:
            ClearbgError: an unknown ``output`` or ``encoding``, a missing ``image`` column, or a photo that
                does not decode (the message names its row).
        """
        import pandas as pd

        output = (params or {}).get("output", "cutout")
        encoding = (params or {}).get("encoding", "bytes")
        if output not in OUTPUTS or encoding not in ENCODINGS:
            raise ClearbgError(f"output must be one of {', '.join(OUTPUTS)} and encoding one of {', '.join(ENCODINGS)}, "
                               f"got {output!r} and {encoding!r}")
        if isinstance(model_input, pd.DataFrame):
            if "image" not in model_input:
                raise ClearbgError(f"the input needs a binary column 'image'; it has {', '.join(map(str, model_input))}")
            photos = list(model_input["image"])
        else:
            photos = list(model_input)
        images = [open_image(bytes(data), name=f"row {i}") for i, data in enumerate(photos)]
        results = []
        for image, prob in zip(images, self.predictor.predict(images)):
            alpha = alpha_from_prob(prob)
            png = encode_image(alpha if output == "mask" else cutout(image, alpha), "png")
            results.append(base64.b64encode(png).decode() if encoding == "base64" else png)
        return pd.DataFrame({"image": results})
