"""Running a model on photos (predictor) and turning its mask into shop images (compose)."""
