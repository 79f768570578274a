"""The shared image I/O layer: sources → decoding → writers. None of it knows about tasks."""

DEFAULT_MAX_PIXELS = 178_956_970  # Pillow's own hard limit (2 × Image.MAX_IMAGE_PIXELS)
