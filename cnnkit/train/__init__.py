"""Training loops shared by ``cnnkit finetune`` and the scripts that retrain the bundled models."""
