"""``clearbg remove``: the CLI contract external checks rely on, run as a real process."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from clearbg.cli import cli


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "clearbg", *args], capture_output=True, text=True, env=env or os.environ.copy(), timeout=300
    )


@pytest.fixture
def photo_folder(tmp_path, tiny_pairs):
    """Three real photos in nested folders, plus a truncated JPEG and a text file."""
    folder = tmp_path / "in"
    (folder / "shoes").mkdir(parents=True)
    fashion = [r for r in tiny_pairs if r["domain"] == "fashion"][:2]
    car = next(r for r in tiny_pairs if r["domain"] == "cars")
    shutil.copy(fashion[0]["image"], folder / "a.jpg")
    shutil.copy(fashion[1]["image"], folder / "shoes" / "b.jpg")
    shutil.copy(car["image"], folder / "c.png")
    data = Path(fashion[0]["image"]).read_bytes()
    (folder / "broken.jpg").write_bytes(data[: len(data) // 2])
    (folder / "notes.txt").write_text("not a photo")
    return folder


def test_remove_writes_each_good_photo_and_reports_bad_ones_with_nonzero_exit(photo_folder, tmp_path):
    out = tmp_path / "out"
    result = run_cli("remove", str(photo_folder), "--out", str(out))
    assert result.returncode != 0
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png", "c.png"]
    assert "broken.jpg" in result.stderr and "truncated" in result.stderr
    assert "3 written" in result.stderr and "1 failed" in result.stderr
    # It says what ran and why that precision: the model, the engine, the CPU units it found.
    from clearbg.inference.cpu import int8_native

    runs = "onnxruntime int8" if int8_native() else "torch fp32"
    assert result.stderr.splitlines()[0].startswith(f"u2netp.official on cpu: {runs} (")
    for name, source in [("a", photo_folder / "a.jpg"), ("c", photo_folder / "c.png")]:
        cut = Image.open(out / f"{name}.png")
        assert cut.mode == "RGBA" and cut.size == Image.open(source).size


def test_mask_option_writes_8_bit_greyscale_masks_of_the_input_size(tiny_pairs, tmp_path):
    row = next(r for r in tiny_pairs if r["domain"] == "fashion")
    result = run_cli("remove", row["image"], "--out", str(tmp_path), "--mask")
    assert result.returncode == 0, result.stderr
    mask = Image.open(tmp_path / f"{Path(row['image']).stem}.png")
    assert mask.mode == "L" and mask.size == Image.open(row["image"]).size
    values = np.asarray(mask)
    assert values.min() == 0 and values.max() == 255


def test_mask_of_an_exif_rotated_jpeg_comes_out_upright(fashion_photo, tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 8  # stored rotated 90 CW; viewers rotate it back
    fashion_photo.transpose(Image.Transpose.ROTATE_270).save(tmp_path / "turned.jpg", quality=98, exif=exif)
    result = CliRunner().invoke(cli, ["remove", str(tmp_path / "turned.jpg"), "--out", str(tmp_path / "o"), "--mask"])
    assert result.exit_code == 0, result.output
    mask = np.asarray(Image.open(tmp_path / "o" / "turned.png")) >= 128
    assert mask.shape == (fashion_photo.height, fashion_photo.width)
    # The person stands upright: the mask is taller than wide and its feet reach the bottom half.
    ys, xs = np.nonzero(mask)
    assert ys.max() - ys.min() > 1.5 * (xs.max() - xs.min())


def test_white_background_jpeg(fashion_photo, tmp_path):
    fashion_photo.save(tmp_path / "p.png")
    args = ["remove", str(tmp_path / "p.png"), "--out", str(tmp_path / "o"), "--bg-color", "#ffffff", "--format", "jpg"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    out = Image.open(tmp_path / "o" / "p.jpg")
    assert out.format == "JPEG" and out.mode == "RGB" and out.size == fashion_photo.size
    assert min(out.getpixel((2, 2))) > 245  # the street corner is now white


def test_shop_canvas_option(fashion_photo, tmp_path):
    fashion_photo.save(tmp_path / "p.jpg")
    args = ["remove", str(tmp_path / "p.jpg"), "--out", str(tmp_path / "o"), "--canvas", "600x800", "--format", "webp"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    out = Image.open(tmp_path / "o" / "p.webp")
    assert out.size == (600, 800) and out.mode == "RGBA"


def test_skip_existing_resumes_without_redoing_work(photo_folder, tmp_path):
    out = tmp_path / "out"
    (photo_folder / "broken.jpg").unlink()
    runner = CliRunner()
    assert runner.invoke(cli, ["remove", str(photo_folder), "--out", str(out)]).exit_code == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    second = runner.invoke(cli, ["remove", str(photo_folder), "--out", str(out), "--skip-existing"])
    assert second.exit_code == 0 and "3 already done" in second.output
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_missing_input_and_empty_folder_fail_clearly(tmp_path):
    runner = CliRunner()
    missing = runner.invoke(cli, ["remove", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert missing.exit_code != 0 and "no such file or folder" in missing.output
    (tmp_path / "empty").mkdir()
    empty = runner.invoke(cli, ["remove", str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    assert empty.exit_code != 0 and "no images found" in empty.output


def test_unknown_model_and_missing_weights_say_what_to_do(tmp_path):
    runner = CliRunner()
    unknown = runner.invoke(cli, ["remove", str(tmp_path), "--out", str(tmp_path), "--model", "u3net"])
    assert unknown.exit_code != 0 and "known models" in unknown.output
    env = {"CLEARBG_HOME": str(tmp_path / "empty-cache")}
    missing = runner.invoke(cli, ["remove", str(tmp_path), "--out", str(tmp_path)], env=env)
    assert missing.exit_code != 0 and "clearbg download" in missing.output


def test_model_given_as_a_checkpoint_path_is_the_model_that_runs(fashion_photo, tmp_path):
    """A checkpoint whose fused output is negated gives the inverse mask: the file's weights ran."""
    import torch

    from clearbg.models import create_model

    network = create_model("u2netp")
    state = network.state_dict()
    state["outconv.weight"], state["outconv.bias"] = -state["outconv.weight"], -state["outconv.bias"]
    checkpoint = tmp_path / "inverted.pth"
    torch.save(state, checkpoint)
    fashion_photo.save(tmp_path / "p.jpg")
    masks = {}
    for name, model in {"default": [], "file": ["--model", str(checkpoint)]}.items():
        result = CliRunner().invoke(cli, ["remove", str(tmp_path / "p.jpg"), "--out", str(tmp_path / name), "--mask",
                                          "--no-clean", *model])
        assert result.exit_code == 0, result.output
        masks[name] = np.asarray(Image.open(tmp_path / name / "p.png"), dtype=np.int16)
    person = masks["default"] > 127
    assert 0.05 < person.mean() < 0.95
    # min-max normalisation maps the negated map to 1 - p: the inverse cut-out, pixel for pixel
    assert np.mean((masks["file"] > 127) == ~person) > 0.99


def test_s3_prefix_in_and_out_against_a_real_s3_server(s3_bucket, s3_client, tiny_pairs, tmp_path):
    bucket = s3_bucket.removeprefix("s3://")
    rows = [r for r in tiny_pairs if r["domain"] == "fashion"][:2]
    for i, row in enumerate(rows):
        s3_client.put_object(Bucket=bucket, Key=f"raw/day{i}/{Path(row['image']).name}", Body=Path(row["image"]).read_bytes())
    s3_client.put_object(Bucket=bucket, Key="raw/bad.jpg", Body=b"garbage")
    result = run_cli("remove", f"{s3_bucket}/raw", "--out", f"{s3_bucket}/masks", "--mask")
    assert result.returncode != 0 and "bad.jpg" in result.stderr
    keys = sorted(o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket, Prefix="masks/")["Contents"])
    assert keys == sorted(f"masks/{Path(r['image']).stem}.png" for r in rows)
    body = s3_client.get_object(Bucket=bucket, Key=keys[0])["Body"].read()
    (tmp_path / "m.png").write_bytes(body)
    assert Image.open(tmp_path / "m.png").mode == "L"


def test_models_lists_each_entry_with_its_weights_state(tmp_path, monkeypatch):
    monkeypatch.setenv("CLEARBG_HOME", str(tmp_path))  # an empty cache: nothing downloaded
    result = CliRunner().invoke(cli, ["models"])
    assert result.exit_code == 0, result.output
    table = result.output.split("\n\n")[0]  # the model cards of shipped models follow the table
    rows = {line.split()[0]: line for line in table.splitlines()[1:]}
    assert set(rows) >= {"u2netp.official", "u2net.official", "unet.scratch"}
    assert "not downloaded" in rows["u2netp.official"]
    assert "none: train it" in rows["unet.scratch"]
    assert "shipped" in rows["u2netp.fashion"]  # in the package: nothing to download


def _commands(group: click.Group, prefix: str = "") -> dict[str, click.Command]:
    ctx = click.Context(group)
    found = {}
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if isinstance(command, click.Group):
            found.update(_commands(command, f"{prefix}{name} "))
        else:
            found[f"{prefix}{name}"] = command
    return found


def test_every_model_option_says_it_takes_registry_uris():
    # train's --model is an architecture to build, not a model to load.
    loading = {name: command for name, command in _commands(cli).items() if name != "train"}
    helps = {name: p.help for name, command in loading.items() for p in command.params if "--model" in p.opts}
    assert {"remove", "batch", "serve", "export", "evaluate", "register", "web build"} <= set(helps)
    assert {name for name, text in helps.items() if "models:/" not in text} == set()


@pytest.mark.parametrize("fmt", ["jpeg", "JPG", "Jpeg"])
def test_format_accepts_jpeg_and_any_case(fashion_photo, tmp_path, fmt):
    fashion_photo.reduce(4).save(tmp_path / "p.png")
    result = CliRunner().invoke(cli, ["remove", str(tmp_path / "p.png"), "--out", str(tmp_path / "o"), "--format", fmt])
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "o" / "p.jpg").format == "JPEG"
    batch = _commands(cli)["batch"]
    assert next(p for p in batch.params if p.name == "fmt").type.convert(fmt, None, None) == "jpg"


def test_mistyped_command_suggests_the_close_names():
    runner = CliRunner()
    top = runner.invoke(cli, ["remov", "x"])
    assert top.exit_code == 2 and "No such command 'remov'. Did you mean 'remove'?" in top.output
    nested = runner.invoke(cli, ["web", "biuld"])
    assert nested.exit_code == 2 and "Did you mean 'build'?" in nested.output
    far = runner.invoke(cli, ["xyzzy"])
    assert far.exit_code == 2 and "No such command 'xyzzy'." in far.output and "Did you mean" not in far.output


def test_version_comes_from_the_package_metadata():
    from importlib.metadata import version

    import clearbg

    assert clearbg.__version__ == version("clearbg")
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and result.output == f"clearbg, version {clearbg.__version__}\n"


def test_shell_completion_script_generates_and_completes_commands():
    script = run_cli(env={**os.environ, "_CLEARBG_COMPLETE": "bash_source"})
    assert script.returncode == 0, script.stderr
    assert "complete -o nosort -F _clearbg_completion clearbg" in script.stdout
    words = run_cli(env={**os.environ, "_CLEARBG_COMPLETE": "bash_complete", "COMP_WORDS": "clearbg rem",
                         "COMP_CWORD": "1"})
    assert words.stdout.split() == ["plain,remove"]


def test_remove_progress_bar_has_a_total_and_an_eta(photo_folder, tmp_path, capsys):
    from clearbg.removal.pipeline import remove_files
    from clearbg.inference.predictor import Predictor

    (photo_folder / "broken.jpg").unlink()
    remove_files([str(photo_folder)], str(tmp_path / "out"), Predictor("u2netp", batch_size=1), progress=True)
    lines = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()
    # Mid-run: a count out of the total, and an ETA (records may arrive two at a time, so 1/3 or 2/3).
    assert any(re.search(r"[12]/3 \[\d\d:\d\d<\d\d:\d\d", line) for line in lines[:-1]), lines
    assert "3/3" in lines[-1] and "100%" in lines[-1] and "<00:00" in lines[-1], lines


def test_remove_refuses_an_out_folder_that_would_overwrite_or_reread_its_inputs(fashion_photo, tmp_path):
    folder = tmp_path / "shoot"
    folder.mkdir()
    fashion_photo.convert("RGBA").save(folder / "p.png")  # `remove shoot --out shoot` wrote p.png over it
    before = (folder / "p.png").read_bytes()
    runner = CliRunner()
    cases = {
        str(folder): "is the input folder",
        str(folder / "cut"): "is inside the input folder",  # the next run would cut out the cutouts
    }
    for out, why in cases.items():
        result = runner.invoke(cli, ["remove", str(folder), "--out", out])
        assert result.exit_code != 0 and why in result.output and "choose an --out folder outside" in result.output
    same_file = runner.invoke(cli, ["remove", str(folder / "p.png"), "--out", str(folder)])
    assert same_file.exit_code != 0 and "over" in same_file.output and "itself" in same_file.output
    assert sorted(p.name for p in folder.iterdir()) == ["p.png"] and (folder / "p.png").read_bytes() == before
    # A hidden folder is never walked, and another format never meets the photo: both are fine.
    hidden = runner.invoke(cli, ["remove", str(folder), "--out", str(folder / ".cut"), "--mask"])
    assert hidden.exit_code == 0, hidden.output
    beside = runner.invoke(cli, ["remove", str(folder / "p.png"), "--out", str(folder), "--format", "webp", "--mask"])
    assert beside.exit_code == 0, beside.output
    assert (folder / ".cut" / "p.png").is_file() and (folder / "p.webp").is_file()
    assert (folder / "p.png").read_bytes() == before


def test_remove_refuses_an_s3_out_prefix_inside_the_input_prefix(s3_bucket, s3_client, tiny_pairs):
    bucket = s3_bucket.removeprefix("s3://")
    s3_client.put_object(Bucket=bucket, Key="raw/a.jpg", Body=Path(tiny_pairs[0]["image"]).read_bytes())
    result = CliRunner().invoke(cli, ["remove", f"{s3_bucket}/raw/", "--out", f"{s3_bucket}/raw/cut"])
    assert result.exit_code != 0 and "inside the input folder" in result.output
    assert [o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket)["Contents"]] == ["raw/a.jpg"]


def test_remove_reports_an_unreadable_folder_and_broken_links_and_goes_on(photo_folder, tmp_path,
                                                                         without_root_override):
    (photo_folder / "broken.jpg").unlink()
    locked = photo_folder / "b_locked"  # sorts before c.png, which must still be done
    locked.mkdir()
    shutil.copy(photo_folder / "a.jpg", locked / "x.jpg")
    (photo_folder / "dangling.jpg").symlink_to(tmp_path / "gone.jpg")
    (photo_folder / "loop.jpg").symlink_to("loop.jpg")
    (photo_folder / "album").symlink_to(tmp_path / "no-such-folder")  # no suffix: maybe a folder
    (photo_folder / "notes.txt").unlink()
    (photo_folder / "notes.txt").symlink_to(tmp_path / "gone.txt")  # clearly not a photo: ignored
    locked.chmod(0)
    try:
        result = subprocess.run([*without_root_override, sys.executable, "-m", "clearbg", "remove", str(photo_folder),
                                 "--out", str(tmp_path / "out"), "--mask"],
                                capture_output=True, text=True, timeout=300)
    finally:
        locked.chmod(0o755)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.png", "c.png"]
    failed = [line for line in result.stderr.splitlines() if line.startswith("FAILED ")]
    assert len(failed) == 4 and "3 written" in result.stderr and "4 failed" in result.stderr
    assert any("b_locked" in line and "Permission denied" in line for line in failed)
    assert any("dangling.jpg" in line and "No such file" in line and "symbolic link" in line for line in failed)
    assert any("loop.jpg" in line and "Too many levels of symbolic links" in line for line in failed)
    assert any("album" in line and "symbolic link" in line for line in failed)


def test_remove_photo_too_large_for_the_format_is_one_failure_not_a_crash(photo_folder, tmp_path):
    (photo_folder / "broken.jpg").unlink()
    Image.new("RGB", (20000, 8), "white").save(photo_folder / "tall.png")  # WebP stores 16383 px a side
    result = CliRunner().invoke(cli, ["remove", str(photo_folder), "--out", str(tmp_path / "out"), "--format", "webp"])
    assert isinstance(result.exception, SystemExit) and result.exit_code == 1, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.webp", "b.webp", "c.webp"]
    [failed] = [line for line in result.output.splitlines() if line.startswith("FAILED ")]
    assert "tall.png" in failed and "20000x8" in failed and "too large for WEBP" in failed


def test_failure_report_escapes_control_characters_in_file_names(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jpg\nFAILED forged.jpg").write_bytes(b"not a photo")
    (folder / "b\x1b[2Jc.jpg").write_bytes(b"not a photo either")  # would clear the terminal
    result = CliRunner().invoke(cli, ["remove", str(folder), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert not any(line.startswith("FAILED forged.jpg") for line in lines) and "\x1b" not in result.output
    failed = [line for line in lines if line.startswith("FAILED ")]
    assert len(failed) == 2 and "a.jpg\\nFAILED forged.jpg" in failed[0] and "b\\x1b[2Jc.jpg" in failed[1]


def test_skip_existing_redoes_empty_and_truncated_outputs(photo_folder, tmp_path):
    out = tmp_path / "out"
    (photo_folder / "broken.jpg").unlink()
    runner = CliRunner()
    assert runner.invoke(cli, ["remove", str(photo_folder), "--out", str(out)]).exit_code == 0
    (out / "a.png").write_bytes(b"")  # a disk that filled up, a copy cut short outside clearbg
    (out / "b.png").write_bytes((out / "b.png").read_bytes()[:1000])
    intact = (out / "c.png").stat().st_mtime_ns
    again = runner.invoke(cli, ["remove", str(photo_folder), "--out", str(out), "--skip-existing"])
    assert again.exit_code == 0 and "2 written, 1 already done" in again.output, again.output
    assert (out / "c.png").stat().st_mtime_ns == intact
    for name in ("a.png", "b.png"):
        with Image.open(out / name) as im:
            im.load()


def test_two_photos_with_the_same_output_name_are_not_overwritten(fashion_photo, tmp_path):
    for shoot, size in (("one", (60, 90)), ("two", (90, 60))):
        (tmp_path / shoot).mkdir()
        fashion_photo.resize(size).save(tmp_path / shoot / "a.jpg")
    args = ["remove", str(tmp_path / "one"), str(tmp_path / "two"), "--out", str(tmp_path / "o"), "--mask"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1 and "1 written" in result.output
    assert "two/a.jpg: output name" in result.output and "already used by" in result.output
    assert Image.open(tmp_path / "o" / "a.png").size == (60, 90)  # the first photo's, kept


def test_edge_and_shadow_options_change_the_output(fashion_photo, tmp_path):
    fashion_photo.save(tmp_path / "p.png")
    runner = CliRunner()

    def remove(name: str, *options: str) -> np.ndarray:
        args = ["remove", str(tmp_path / "p.png"), "--out", str(tmp_path / name), *options]
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, result.output
        return np.asarray(Image.open(tmp_path / name / "p.png"), np.int16)

    default, raw = remove("default", "--mask"), remove("raw", "--mask", "--no-clean")
    assert np.array_equal(default > 127, raw > 127)  # the default clean-up keeps the outline ...
    assert np.count_nonzero((default > 0) & (default < 255)) < np.count_nonzero((raw > 0) & (raw < 255))  # ... narrower
    matted = remove("matted", "--mask", "--refine", "matting", "-af", "230", "-ab", "20", "-ae", "4")
    assert not np.array_equal(matted, default)
    white = remove("white", "--bg-color", "white")
    clean = remove("clean", "--bg-color", "white", "-dc")
    soft = (default > 0) & (default < 255)
    assert np.abs(clean - white)[soft].mean() > 1 and np.array_equal(clean[~soft], white[~soft])
    shaded = remove("shadow", "--bg-color", "white", "--shadow", "drop", "--shadow-opacity", "0.9",
                    "--shadow-blur", "0.01", "--shadow-offset", "0.05,0.05")
    assert np.count_nonzero(shaded.sum(axis=-1) < white.sum(axis=-1) - 30) > 500


@pytest.mark.parametrize("options, message", [
    (["--shadow-opacity", "0.3"], "--shadow-opacity tunes a shadow: add --shadow contact or --shadow drop"),
    (["--mask", "--shadow", "contact"], "a shadow needs a cutout"),
    (["--no-clean", "--fill-holes"], "fill_holes is a clean-up step"),
    (["--shadow", "drop", "--shadow-offset", "down"], "right, down"),
    (["-af", "300"], "0<=x<=255"),
])
def test_bad_edge_options_fail_before_any_work(fashion_photo, tmp_path, options, message):
    fashion_photo.save(tmp_path / "p.png")
    result = CliRunner().invoke(cli, ["remove", str(tmp_path / "p.png"), "--out", str(tmp_path / "o"), *options])
    assert result.exit_code != 0 and message in result.output
    assert not (tmp_path / "o").exists()


def test_missing_pymatting_names_the_matting_extra():
    from clearbg.cli import missing_extra

    assert missing_extra(ImportError("no pymatting", name="pymatting")) == "pip install 'clearbg[matting]'"
