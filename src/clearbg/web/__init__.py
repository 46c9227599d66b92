"""Background removal inside the browser: a static page that runs the exported ONNX model with
onnxruntime-web (WebAssembly), built as a folder (``build_site``) or served by ``clearbg serve``
under ``/app/`` (``mount_web``)."""
