"""HTTP serving: ``create_app`` builds the API, ``clearbg serve`` runs it with uvicorn.

Modules, one job each: ``app`` (routes, errors, request flow), ``batching`` (micro-batcher),
``render`` (remove.bg options -> response body), ``limits`` (settings, body-size, API-key and
deadline guards), ``connections`` (header deadline and connection cap, below the app),
``fetch`` (``image_url``, public addresses only),
``memory`` (flat RSS under load).

Example::

    clearbg serve --port 8000 --api-key s3cret &
    curl -H 'X-Api-Key: s3cret' -F image_file=@shoe.jpg -F bg_color=white -F crop=true \\
         -F crop_margin=5% http://127.0.0.1:8000/v1.0/removebg -o shoe.jpg
    curl -H 'X-Api-Key: s3cret' -F file=@shoe.jpg http://127.0.0.1:8000/v1/remove -o shoe.png
"""

from clearbg.serve.app import create_app
from clearbg.serve.limits import ServeSettings

__all__ = ["create_app", "ServeSettings"]
