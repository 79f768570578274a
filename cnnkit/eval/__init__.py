"""Metrics computed from cnnkit's own records (COCO AP via pycocotools, IoU, accuracy)."""
