"""One module per task, each a Predictor: load → preprocess → forward → postprocess → records."""
