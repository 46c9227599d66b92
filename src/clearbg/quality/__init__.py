"""The quality gate's first half: a calibrated confidence for every mask.

``features`` reads cheap signals from the maps the model computes anyway, ``calibration`` fits
and applies the small model that turns them into a predicted IoU, ``store`` keeps it beside the
model version it belongs to, ``fit`` fits it on a validation split, and ``gate`` is what the
removal pipeline and the server call.
"""
