"""``clearbg watch IN --out OUT``: a studio hot folder."""

from __future__ import annotations

import signal
import sys
import threading

import click

from clearbg.cli.options import OutputFormat, edge_options, edge_settings, review_options, review_settings
from clearbg.errors import ClearbgError, printable
from clearbg.models.specs import DEFAULT_MODEL


@click.command("watch")
@click.argument("folder")
@click.option("--out", "out_dir", required=True, help="Output folder; mirrors FOLDER's tree, as batch does.")
@click.option("--model", default=DEFAULT_MODEL, show_default=True,
              help="Spec name, .pth/.pt/.onnx checkpoint or models:/NAME@ALIAS (MLflow registry).")
@click.option("--mask", "mask_only", is_flag=True, help="Write the 8-bit greyscale mask instead of a cutout.")
@click.option("--bg-color", default=None, help="Solid background instead of transparency, e.g. '#ffffff'.")
@click.option("--canvas", default=None, help="Centre the product on a WxH canvas, e.g. 1000x1000.")
@click.option("--format", "fmt", type=OutputFormat(), default="png", show_default=True, help="Output format.")
@click.option("--interval", type=float, default=1.0, show_default=True, help="Seconds between looks at FOLDER.")
@click.option("--settle", type=float, default=2.0, show_default=True,
              help="Seconds a photo must stay unchanged (size and time) before it is taken: still being written.")
@click.option("--failed-dir", default=None, help="Where failed photos go, with a .error.txt (default FOLDER/.failed).")
@click.option("--batch-size", type=int, default=None, help="Photos per inference batch (default: cores on CPU).")
@click.option("--workers", type=int, default=2, show_default=True, help="Threads decoding ahead and writing behind.")
@click.option("--device", default=None, help="cpu, cuda ... (default: CUDA if available).")
@click.option("--max-pixels", type=int, default=None, help="Refuse larger photos (default 100 MP).")
@review_options
@edge_options
def watch_command(folder, out_dir, model, mask_only, bg_color, canvas, fmt, interval, settle, failed_dir, batch_size,
                  workers, device, max_pixels, review_below, review_share, queue_url, queue_images, **edges):
    """Remove backgrounds of photos as they arrive in FOLDER, until Ctrl-C.

    A photo is taken once it is completely written (unchanged for --settle seconds) and is never
    processed twice: results go to the batch journal in OUT/.batch/, so a restarted watcher goes
    on where it stopped, and OUT/results.parquet lists every photo. A photo that fails is named
    here, recorded, and moved to --failed-dir with its reason, so it is not retried forever.

    \b
    Examples:
      clearbg watch /studio/capture --out /studio/cutouts
      clearbg watch incoming/ --out web/ --bg-color '#ffffff' --format jpg --canvas 1000x1000
      clearbg watch /studio/capture --out /studio/cutouts --review-share 0.1
      clearbg watch /studio/capture --out web/ --bg-color white --format jpg --decontaminate --shadow contact
    """
    from clearbg.batch.watch import watch_folder
    from clearbg.inference.predictor import Predictor
    from clearbg.removal.api import make_options

    if fmt == "jpg" and bg_color is None and not mask_only:
        bg_color = "#ffffff"  # JPEG has no alpha
    stop = threading.Event()

    def finish(signum, frame):  # finish the photos in hand, write results, exit
        stop.set()

    signal.signal(signal.SIGINT, finish)
    signal.signal(signal.SIGTERM, finish)

    def report(record: dict) -> None:
        if record["status"] == "ok":
            sent = " (sent to review)" if record.get("review") else ""
            click.echo(f"ok {printable(record['relpath'])} -> {printable(record['output'])}{sent}", err=True)
        else:
            click.echo(f"FAILED {printable(record['error'])}", err=True)

    try:
        options = make_options(mask_only=mask_only, bg_color=bg_color, canvas=canvas, **edge_settings(edges))
        predictor = Predictor(model, device=device, batch_size=batch_size)
        click.echo(f"watching {printable(folder)} -> {printable(out_dir)} ({predictor.summary}); Ctrl-C to stop",
                   err=True)
        summary = watch_folder(folder, out_dir, predictor,
                               options=options,
                               fmt=fmt, workers=max(1, workers), interval=interval, settle=settle,
                               failed_dir=failed_dir, max_pixels=max_pixels, stop=stop, on_result=report,
                               review=review_settings(review_below, review_share, queue_url, queue_images))
    except (ClearbgError, ValueError) as err:
        raise click.ClickException(printable(str(err))) from err
    click.echo(f"stopped: {summary.ok} ok, {summary.failed} failed", err=True)
    sys.exit(0)
