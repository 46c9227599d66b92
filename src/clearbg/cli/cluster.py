"""``clearbg cluster DATASET``"""

from __future__ import annotations

import click

from clearbg.errors import ClearbgError


@click.command("cluster")
@click.argument("dataset")
@click.option("--k", type=int, default=6, show_default=True, help="k-means clusters; the light group comes on top.")
@click.option("--seed", type=int, default=0, show_default=True, help="k-means seed: the same seed gives the same clusters.")
@click.option("--labels", default=None,
              help="Name clusters by the majority of labelled examples: a manifest column (rows may be empty) "
                   "or a CSV with columns id,label.")
@click.option("--light-threshold", type=float, default=0.40, show_default=True,
              help="Light group: share of the product (skin, head, feet left out) with L* >= 65.")
@click.option("--light-max-contrast", type=float, default=None,
              help="Also require the outline's L* contrast to the background <= this (studio photos).")
@click.option("--no-light", is_flag=True, help="No light group: k-means on every pair.")
@click.option("--embeddings", is_flag=True, help="Add U2-NetP encoder features (much slower on CPU; no clear gain on fashion).")
def cluster_command(dataset, k, seed, labels, light_threshold, light_max_contrast, no_light, embeddings):
    """Group the pairs of a prepared DATASET into product types.

    Light-coloured products get a group of their own by rule; k-means on mask-shape, colour
    and skin features groups the rest. Writes the columns cluster, cluster_name and light
    into the manifest (replacing earlier ones) and a report with an image grid per cluster
    to DATASET/clusters/clusters.html.

    \b
    Examples:
      clearbg cluster data/shop-320
      clearbg cluster data/shop-320 --k 8 --labels product_type
      clearbg cluster s3://studio/dataset --labels labelled.csv
    """
    from clearbg.data.cluster import ClusterConfig, cluster_and_write

    try:
        config = ClusterConfig(
            k=k,
            seed=seed,
            light_threshold=None if no_light else light_threshold,
            light_max_contrast=light_max_contrast,
            embeddings=embeddings,
        )
        run = cluster_and_write(dataset, config, labels)
    except (ClearbgError, ValueError) as err:
        raise click.ClickException(str(err)) from err
    width = max([len("name")] + [len(str(n)) for n in run.summary["cluster_name"]])
    click.echo(f"{'id':>3}  {'name':<{width}}  {'pairs':>6}  {'share':>6}")
    for row in run.summary.itertuples():
        click.echo(f"{row.cluster:>3}  {row.cluster_name:<{width}}  {row.size:>6}  {row.share:>6.1%}")
    click.echo(f"{len(run.clusters)} pairs clustered; manifest: {run.manifest}   report: {run.report}")
