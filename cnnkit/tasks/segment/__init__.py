"""The ``segment`` task: predictor, val, training recipe, model zoo and CLI options."""
