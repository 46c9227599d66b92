"""Knowledge distillation: a larger teacher's maps blended into the training targets.

A small network fine-tuned on a few hundred photos learns from hard 0/1 masks whose edges are
polygons or coarse strokes; a large model trained on far more data (ISNet) says where the product
*probably* is, softly, everywhere. Each training target becomes
``(1 - weight) * true mask + weight * teacher probability``, and the usual loss (BCE, soft IoU)
is taken against that soft target: the student is pulled towards the truth and towards the
teacher's view of the ambiguous pixels (Hinton et al. 2015, with the ground truth kept).

The teacher runs once per training photo, before the first step, on the ORIGINAL photo at its own
resolution (ISNet: 1024 px), and its map is resized to the prepared pair exactly as ``prepare``
resized the photo (stretch; for padded datasets the teacher sees the prepared photo instead). The
blends are PNGs in ``RUN/teacher/<teacher>-w<weight>/`` and survive a resume; augmentation then
treats them as soft masks, so crops, flips and new backgrounds move them with the photo.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
from PIL import Image

from clearbg.data.dataset import PairDataset
from clearbg.data.manifest import read_info
from clearbg.imageio import atomic_write_bytes, encode_image, open_image
from clearbg.inference.predictor import Predictor
from clearbg.train.config import DistillConfig

log = logging.getLogger(__name__)


def teacher_folder(run_dir: Path, config: DistillConfig) -> Path:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", str(config.teacher)).strip("_")[-60:]
    return run_dir / "teacher" / f"{slug}-w{config.weight:g}"


def blend(mask: np.ndarray, teacher_prob: np.ndarray, weight: float) -> np.ndarray:
    """``(1 - weight) * mask + weight * teacher`` as uint8 (mask 0..255, teacher prob 0..1)."""
    target = (1 - weight) * mask.astype(np.float32) + weight * 255 * np.clip(teacher_prob, 0, 1)
    return np.clip(np.rint(target), 0, 255).astype(np.uint8)


def teacher_targets(dataset: PairDataset, config: DistillConfig, run_dir: Path, device: str,
                    progress: bool = False) -> dict[str, str]:
    """Blended targets for every pair of ``dataset`` (computed where missing); id -> PNG path.

    Raises:
        ClearbgError: the teacher cannot be loaded (unknown model, weights not downloaded).
        DatasetError: a training pair cannot be read.
    """
    folder = teacher_folder(run_dir, config)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {pair_id: str(folder / f"{pair_id}.png") for pair_id in dataset.ids}
    todo = [i for i, pair_id in enumerate(dataset.ids) if not Path(paths[pair_id]).is_file()]
    if not todo:
        return paths
    stretched = read_info(dataset.dataset).get("config", {}).get("resize", "stretch") == "stretch"
    from_originals = stretched and "src_image" in dataset.frame
    teacher = Predictor(config.teacher, device=device)
    log.info("distillation: %s labels %d training photos (%s), weight %.2f -> %s", config.teacher, len(todo),
             "originals" if from_originals else "prepared photos", config.weight, folder)
    if progress:
        from tqdm import tqdm

        todo = tqdm(todo, desc=f"teacher {config.teacher}", unit="img")
    for i in todo:
        photo, mask = dataset.load_pair(i)
        if from_originals:
            original = open_image(str(dataset.frame.iloc[i]["src_image"])).convert("RGB")
            prob = teacher.predict_one(original)
            prob = np.asarray(Image.fromarray(prob.astype(np.float32), mode="F").resize(
                (mask.shape[1], mask.shape[0]), Image.Resampling.BILINEAR))
        else:
            prob = teacher.predict_one(Image.fromarray(photo))
        target = Image.fromarray(blend(mask, prob, config.weight), mode="L")
        atomic_write_bytes(paths[dataset.ids[i]], encode_image(target, "png"))
    return paths
