"""``clearbg prepare SRC --out DST``"""

from __future__ import annotations

import click

from clearbg.errors import ClearbgError


@click.command("prepare")
@click.argument("source")
@click.option("--out", "out", required=True, help="Dataset folder or s3:// prefix to write.")
@click.option("--size", "sizes", multiple=True, default=["320"], show_default=True,
              help="Training size, 320 or WxH; repeat for several.")
@click.option("--layout", type=click.Choice(["auto", "folders", "carvana", "csv"]), default="auto", show_default=True,
              help="folders: images/ + masks/; carvana: NAME.jpg + NAME_mask.gif; csv: image,mask columns.")
@click.option("--resize", "resize_mode", type=click.Choice(["stretch", "pad"]), default="stretch", show_default=True,
              help="stretch fills the size, as the models see photos in use (train on what you infer on); pad keeps the aspect ratio.")
@click.option("--pad-color", default="#ffffff", show_default=True, help="Photo padding colour.")
@click.option("--soft-masks", is_flag=True, help="Keep grey mask values when resizing (default: binary 0/255).")
@click.option("--mask-threshold", type=int, default=128, show_default=True, help="Anti-aliased masks: foreground >= this.")
@click.option("--multilabel", type=click.Choice(["nonzero", "reject"]), default="nonzero", show_default=True,
              help="Multi-label masks: foreground = any label, or drop the pair.")
@click.option("--mismatch", type=click.Choice(["edges", "off"]), default="edges", show_default=True,
              help="Detect masks that belong to another photo.")
@click.option("--split", default=None,
              help="train,val,test shares, e.g. 0.8,0.1,0.1 (the default when the source has no split column). "
                   "Given, it overrides the source's own split column.")
@click.option("--workers", type=int, default=None, help="Worker processes (default: all cores).")
@click.option("--restart", is_flag=True, help="Forget an earlier run in --out (interrupted, or with other options) and start over.")
def prepare_command(source, out, sizes, layout, resize_mode, pad_color, soft_masks, mask_threshold, multilabel,
                    mismatch, split, workers, restart):
    """Check, clean and resize the photo/mask pairs of SOURCE into a training dataset.

    SOURCE is a folder or s3:// prefix (images/ + masks/, or Carvana-style NAME.jpg +
    NAME_mask.gif) or a CSV with image and mask columns (relative paths in it are relative
    to the CSV's folder). The source is never modified.
    Writes manifest.parquet, excluded.csv (every dropped pair and why), report.html and
    <W>x<H>/{images,masks}/. A rerun resumes where an interrupted one stopped.

    \b
    Examples:
      clearbg prepare photos/ --out data/shop-320
      clearbg prepare s3://studio/pairs/ --out data/shop --size 320 --size 512
    """
    from clearbg.data.clean import CleanOptions
    from clearbg.data.prepare import PrepareConfig, prepare_dataset
    from clearbg.data.resize import parse_size
    from clearbg.inference.compose import parse_color

    try:
        shares = tuple(float(x) for x in (split or "0.8,0.1,0.1").split(","))
        if len(shares) != 3 or min(shares) < 0 or abs(sum(shares) - 1) > 1e-6:
            raise ValueError(f"--split needs three shares that add up to 1, got {split!r}")
        config = PrepareConfig(
            sizes=[parse_size(s) for s in sizes],
            layout=layout,
            resize=resize_mode,
            pad_color=tuple(parse_color(pad_color)[:3]),
            soft_masks=soft_masks,
            split=shares,
            resplit=split is not None,
            clean=CleanOptions(mask_threshold=mask_threshold, multilabel=multilabel, mismatch=mismatch),
        )
        report = prepare_dataset(source, out, config, workers=workers, restart=restart)
    except (ClearbgError, ValueError) as err:
        raise click.ClickException(str(err)) from err
    dropped = sum(report.excluded.values())
    click.echo(
        f"{report.kept} pairs kept, {dropped} excluded"
        + (f" ({', '.join(f'{k} {v}' for k, v in sorted(report.excluded.items()))})" if dropped else "")
        + f"; {report.processed} prepared at {report.pairs_per_second:.1f} pairs/s"
        + (f", {report.resumed} already done" if report.resumed else "")
    )
    click.echo(f"manifest: {out}/manifest.parquet   report: {out}/report.html   excluded: {out}/excluded.csv")
