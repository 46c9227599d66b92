"""``clearbg serve [--host 127.0.0.1] [--port 8000] [--model u2netp]``"""

from __future__ import annotations

import click

from clearbg.cli.options import review_options, review_settings
from clearbg.errors import ClearbgError
from clearbg.inference.predictor import ENGINES, PRECISIONS
from clearbg.models.specs import DEFAULT_MODEL, model_choices


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0 for all).")
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help=f"Registry name ({', '.join(model_choices())}), .pth/.pt/.onnx file or models:/NAME@ALIAS.")
@click.option("--device", default=None, help="cpu, cuda, cuda:1 ... (default: CUDA if available).")
@click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True)
@click.option("--engine", type=click.Choice(ENGINES), default="auto", show_default=True,
              help="onnxruntime: ONNX Runtime (a registered model's logged ONNX export); auto: onnxruntime for a .onnx file or int8 (the CPU default with VNNI).")
@click.option("--api-key", envvar="CLEARBG_API_KEY", default=None,
              help="Require this X-Api-Key on removal and /metrics. Prefer the CLEARBG_API_KEY environment "
                   "variable: a key on the command line is visible to every user in `ps`.")
@click.option("--allow-url", is_flag=True, help="Accept image_url (public addresses only; never private, loopback, link-local).")
@click.option("--max-upload-mb", default=25.0, show_default=True, help="Largest request body, MiB (413 above).")
@click.option("--max-pixels", default=50_000_000, show_default=True, help="Largest photo, width*height (413 above).")
@click.option("--timeout", "timeout_s", default=30.0, show_default=True,
              help="Seconds per request from its headers on, upload included (408 if the body is not in, else 504).")
@click.option("--header-timeout", "header_timeout_s", default=10.0, show_default=True,
              help="Seconds a client may take to send the request headers (408 and closed after).")
@click.option("--max-connections", default=256, show_default=True,
              help="Open connections at most; one more gets 503 at once (slow clients cannot pile up).")
@click.option("--max-concurrency", default=16, show_default=True, help="Requests in flight; more get 503 + Retry-After.")
@click.option("--max-batch", default=8, show_default=True, help="Most requests sharing one model call.")
@click.option("--batch-wait-ms", default=5.0, show_default=True, help="How long a request waits for others to batch with.")
@click.option("--log-level", default="info", show_default=True, type=click.Choice(["debug", "info", "warning", "error"]))
@review_options
def serve_command(host, port, model, device, precision, engine, api_key, allow_url, max_upload_mb, max_pixels, timeout_s,
                  header_timeout_s, max_connections, max_concurrency, max_batch, batch_wait_ms, log_level,
                  review_below, review_share, queue_url, queue_images):
    """Serve background removal over HTTP (remove.bg-compatible API).

    \b
    Endpoints: POST /v1.0/removebg, POST /v1/remove, GET /healthz, /readyz, /metrics, /docs
    Example:
      clearbg serve --port 8000 &
      curl -F image_file=@shoe.jpg -F bg_color=white localhost:8000/v1.0/removebg -o shoe.jpg
      clearbg serve --review-share 0.1     # doubtful uploads to review/queue.db, answered with X-Review: true
    """
    import uvicorn

    from clearbg.inference.predictor import Predictor
    from clearbg.review.gate import build_gate
    from clearbg.serve import ServeSettings, create_app
    from clearbg.serve.connections import guarded_h11
    from clearbg.serve.memory import pin_mmap_threshold

    try:
        settings = ServeSettings(
            max_upload_bytes=int(max_upload_mb * 1024 * 1024), max_pixels=max_pixels, timeout_s=timeout_s,
            max_concurrency=max_concurrency, max_batch=max_batch, max_wait_ms=batch_wait_ms, api_key=api_key or None,
            allow_url=allow_url, header_timeout_s=header_timeout_s, max_connections=max_connections,
        )
        # Load before binding the port: a server whose every request fails must not look healthy.
        predictor = Predictor(model, device=device, precision=precision, engine=engine)
        review = review_settings(review_below, review_share, queue_url, queue_images)
        build_gate(predictor, review, job="serve")  # a missing calibration or queue stops it here, like the model
        click.echo(predictor.summary, err=True)
    except (ClearbgError, ValueError, OSError) as err:
        raise click.ClickException(f"not serving: {err}") from err
    app = create_app(settings, model, device=device, precision=precision, engine=engine, predictor=predictor,
                     review=review)
    pin_mmap_threshold()  # flat RSS under load, see clearbg.serve.memory
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5,
                http=guarded_h11(settings.header_timeout_s, settings.max_connections))
