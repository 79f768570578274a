"""Tracking runs the detectors of ``cnnkit.tasks.detect.zoo`` (registered there): no entries of its own."""
