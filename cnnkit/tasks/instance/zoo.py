"""Instance-segmentation entries: a light Mask R-CNN trained on shapes, and torchvision's R50-FPN pair.

Convention for every instance model here: ``num_classes`` counts the *foreground*
classes and ``labels`` lists them (no ``__background__``); the network's label ``k``
is ``class_id = k - 1``. For torchvision's COCO weights that makes ``class_id + 1``
the COCO category id, which :class:`cnnkit.eval.coco.CocoResults` assumes by default.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cnnkit.data.shapes import CLASSES as SHAPES_CLASSES
from cnnkit.models.entries import register_torchvision, torchvision_rcnn
from cnnkit.models.registry import ModelSpec, register

if TYPE_CHECKING:
    from torchvision.models.detection import MaskRCNN

LIGHT_DEFAULTS: dict[str, Any] = {"backbone": "resnet18", "fpn_channels": 64, "min_size": 192, "max_size": 320}


def light_maskrcnn(
    num_classes: int = len(SHAPES_CLASSES),
    *,
    backbone: str = "resnet18",
    fpn_channels: int = 64,
    min_size: int = 192,
    max_size: int = 320,
    representation: int = 128,
) -> MaskRCNN:
    """A Mask R-CNN small enough to train from scratch on a CPU.

    ResNet FPN (``fpn_channels`` wide) with ``BatchNorm2d`` (the
    default ``FrozenBatchNorm2d`` explodes without pretrained statistics), anchors
    halved for small images, a 2-layer box MLP and a 2-conv mask head.
    """
    import torch
    import torchvision
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

    if not backbone.startswith("resnet"):
        raise ValueError(f"unknown backbone {backbone!r}; use resnet18/34/50")
    trunk = getattr(torchvision.models, backbone)(weights=None, norm_layer=torch.nn.BatchNorm2d)
    c2 = trunk.inplanes // 8
    body = BackboneWithFPN(
        trunk, {f"layer{k}": str(k - 1) for k in (1, 2, 3, 4)}, [c2 * 2 ** (k - 1) for k in (1, 2, 3, 4)], fpn_channels
    )
    sizes = ((16,), (32,), (64,), (128,), (256,))
    ch = body.out_channels
    anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
    return MaskRCNN(
        body,
        num_classes=None,
        min_size=min_size,
        max_size=max_size,
        rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=1000,
        rpn_post_nms_top_n_train=500,
        rpn_pre_nms_top_n_test=500,
        rpn_post_nms_top_n_test=300,
        box_batch_size_per_image=128,
        box_head=TwoMLPHead(ch * 7 * 7, representation),
        box_predictor=FastRCNNPredictor(representation, num_classes + 1),
        mask_head=MaskRCNNHeads(ch, [ch, ch], 1),
        mask_predictor=MaskRCNNPredictor(ch, ch, num_classes + 1),
    )


register(
    ModelSpec(
        name="shapes-maskrcnn",
        task="instance",
        family="maskrcnn_light",
        builder=light_maskrcnn,
        source="bundled",
        weights="shapes-maskrcnn.safetensors",
        labels=SHAPES_CLASSES,
        year=2026,
        description="Mask R-CNN, ResNet-18 FPN 64 ch, trained by cnnkit on synthetic shapes (bundled default)",
        meta={"arch_kwargs": LIGHT_DEFAULTS, "for_photos": "maskrcnn_resnet50_fpn_v2 (COCO, downloaded once)"},
    )
)
register_torchvision(
    "instance",
    torchvision_rcnn,
    [
        (
            "maskrcnn_resnet50_fpn",
            "MaskRCNN_ResNet50_FPN_Weights.COCO_V1",
            2017,
            "Mask R-CNN R50-FPN, COCO (torchvision; download once)",
        ),
        (
            "maskrcnn_resnet50_fpn_v2",
            "MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1",
            2021,
            "Mask R-CNN R50-FPN v2 (improved recipe), COCO (torchvision; download once)",
        ),
    ],
)
