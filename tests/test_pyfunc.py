"""The registered version's ``python_function`` flavour: photo bytes in, PNG out, loaded by
MLflow itself and served by MLflow's own ``mlflow models serve`` on loopback."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from clearbg.errors import ClearbgError
from clearbg.inference.compose import alpha_from_prob
from clearbg.inference.predictor import Predictor
from clearbg.imageio import open_image
from clearbg.mlflow_store import using_tracking_uri

mlflow = pytest.importorskip("mlflow")


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    from clearbg.models.download import cache_dir

    root = tmp_path_factory.mktemp("clearbg-home")
    (root / "weights").symlink_to(cache_dir() / "weights", target_is_directory=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLEARBG_HOME", str(root))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        yield root


@pytest.fixture(scope="module")
def champion(tmp_path_factory, home, make_mlflow_store, shared_data) -> str:
    """The official u2netp registered as ``shop`` v1 and promoted (4 half-size test photos)."""
    from clearbg.data.prepare import PrepareConfig, prepare_dataset
    from clearbg.registry import promote, register_model

    work = tmp_path_factory.mktemp("pyfunc")
    rows = pd.read_csv(shared_data / "fashion" / "manifest.csv")
    rows = rows[rows["tiny"] == 1].sort_values("id").head(4).reset_index(drop=True)
    for column, resample in (("image", Image.Resampling.BILINEAR), ("mask", Image.Resampling.NEAREST)):
        (work / column).mkdir()
        for i, rel in enumerate(rows[column]):
            with Image.open(shared_data / "fashion" / rel) as image:
                image.resize((image.width // 2, image.height // 2), resample).save(work / column / f"{rows['id'][i]}.png")
        rows[column] = [f"{column}/{i}.png" for i in rows["id"]]
    rows["split"] = "test"
    rows[["id", "image", "mask", "split"]].to_csv(work / "pairs.csv", index=False)
    prepare_dataset(str(work / "pairs.csv"), str(work / "ds"), PrepareConfig(sizes=[(32, 32)]), workers=1)
    uri = make_mlflow_store(work / "store")
    register_model("u2netp", "shop", f"{work / 'ds'}:test", tracking_uri=uri, onnx=False, calibrate_on=None,
                   progress=False)
    promote("shop", f"{work / 'ds'}:test", tracking_uri=uri, progress=False)
    return uri


def _expected(photo: bytes, output: str) -> np.ndarray:
    """What clearbg itself makes of the photo (fp32, like the flavour)."""
    image = open_image(photo)
    alpha = alpha_from_prob(Predictor("u2netp", precision="fp32").predict([image])[0])
    if output == "mask":
        return np.asarray(alpha)
    rgba = np.asarray(image.convert("RGBA")).copy()
    rgba[..., 3] = np.asarray(alpha)
    rgba[rgba[..., 3] == 0] = 0  # fully transparent pixels are transparent black
    return rgba


def test_mlflow_loads_the_version_as_photo_bytes_in_png_out_and_keeps_the_pytorch_flavour(champion, fashion_photo):
    import mlflow.pytorch
    import torch

    buffer = io.BytesIO()
    fashion_photo.save(buffer, "JPEG", quality=92)
    photo = buffer.getvalue()
    with using_tracking_uri(champion):  # the registry follows the tracking URI
        model = mlflow.pyfunc.load_model("models:/shop@champion")
        masks = model.predict(pd.DataFrame({"image": [photo, photo]}), params={"output": "mask"})
        cutouts = model.predict(pd.DataFrame({"image": [photo]}))
        network = mlflow.pytorch.load_model("models:/shop@champion", map_location="cpu")
    assert list(masks.columns) == ["image"] and len(masks) == 2
    mask = np.asarray(Image.open(io.BytesIO(masks["image"][0])))
    assert mask.shape == (fashion_photo.height, fashion_photo.width) and mask.dtype == np.uint8
    assert np.array_equal(mask, _expected(photo, "mask"))
    cutout = Image.open(io.BytesIO(cutouts["image"][0]))
    assert cutout.mode == "RGBA" and np.array_equal(np.asarray(cutout), _expected(photo, "cutout"))
    assert isinstance(network, torch.nn.Module)
    with pytest.raises(ClearbgError, match="output must be"):
        model.predict(pd.DataFrame({"image": [photo]}), params={"output": "matte"})
    with pytest.raises(ClearbgError, match="encoding one of"):
        model.predict(pd.DataFrame({"image": [photo]}), params={"encoding": "hex"})
    with pytest.raises(ClearbgError, match="row 0"):
        model.predict(pd.DataFrame({"image": [b"not a photo"]}))


def test_mlflow_models_serve_answers_a_photo_with_its_mask(champion, fashion_photo, tmp_path):
    buffer = io.BytesIO()
    fashion_photo.save(buffer, "JPEG", quality=92)
    photo = buffer.getvalue()
    port = _free_port()
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    command = [str(mlflow_cli) if mlflow_cli.exists() else "mlflow", "models", "serve", "-m", "models:/shop@champion",
               "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                  env={**os.environ, "MLFLOW_TRACKING_URI": champion})
    try:
        _wait(f"http://127.0.0.1:{port}/ping", server, log)
        body = json.dumps({"dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(photo).decode()]]},
                           "params": {"output": "mask"}}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            answer = json.loads(response.read())
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    png = base64.b64decode(answer["predictions"][0]["image"])
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), _expected(photo, "mask"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(url: str, process: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            pytest.fail(f"mlflow models serve exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except (OSError, urllib.error.HTTPError):
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow models serve did not answer within {timeout} s:\n{log.read_text()[-4000:]}")
            time.sleep(0.5)


def test_spark_udf_cuts_out_a_binary_column_of_photos(champion, fashion_photo):
    from clearbg.spark import local_spark

    buffer = io.BytesIO()
    fashion_photo.save(buffer, "JPEG", quality=92)
    photo = buffer.getvalue()
    spark = local_spark("clearbg-pyfunc-test")
    try:
        frame = spark.createDataFrame([(photo,), (photo,)], "image binary")
        with using_tracking_uri(champion):
            udf = mlflow.pyfunc.spark_udf(spark, "models:/shop@champion", result_type="string", env_manager="local",
                                          params={"output": "mask", "encoding": "base64"})
        rows = frame.select(udf("image").alias("mask")).collect()
    finally:
        spark.stop()
    assert len(rows) == 2
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(rows[0]["mask"]))))
    assert np.array_equal(mask, _expected(photo, "mask"))
