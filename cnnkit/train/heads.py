"""Transfer-learning surgery on classifiers: find and replace the head, freeze the trunk.

Works on every torchvision classifier family and cnnkit's own nets by looking at the
attributes they use for the head: ``fc`` (ResNet, GoogLeNet, ShapesNet),
``classifier[-1]`` (AlexNet, VGG, MobileNet, EfficientNet, ConvNeXt, LeNet-5),
``heads.head`` (ViT), plus GoogLeNet's auxiliary heads ``aux1.fc2`` / ``aux2.fc2``.
"""

from __future__ import annotations

from torch import nn

from cnnkit.errors import OptionError, UsageError

_HEAD_ATTRS = ("fc", "classifier", "heads", "head")
_AUX_ATTRS = (("aux1", "fc2"), ("aux2", "fc2"), ("AuxLogits", "fc"))
_EXPAND = ("features", "encoder", "layers", "blocks", "stages")


def _last_linear(module: nn.Module, prefix: str) -> str | None:
    if isinstance(module, nn.Linear):
        return prefix
    last = None
    for name, child in module.named_children():
        found = _last_linear(child, f"{prefix}.{name}")
        last = found or last
    return last


def head_names(model: nn.Module) -> list[str]:
    """Qualified names of the output Linear layers (main head first, then auxiliary heads)."""
    names: list[str] = []
    for attr in _HEAD_ATTRS:
        module = getattr(model, attr, None)
        if isinstance(module, nn.Module):
            found = _last_linear(module, attr)
            if found:
                names.append(found)
                break
    for attr, leaf in _AUX_ATTRS:
        aux = getattr(model, attr, None)
        if isinstance(aux, nn.Module) and isinstance(getattr(aux, leaf, None), nn.Linear):
            names.append(f"{attr}.{leaf}")
    if not names:
        raise UsageError(f"{type(model).__name__}: no classification head found (looked for {', '.join(_HEAD_ATTRS)})")
    return names


def replace_head(model: nn.Module, num_classes: int, keep: dict[int, int] | None = None) -> list[str]:
    """New output layers with ``num_classes`` outputs; returns their names.

    ``keep`` maps new row → old row: those rows start from the trained head (a class the
    checkpoint already knows keeps what it learned, whatever its position in the new
    dataset); the other rows are randomly initialised.
    """
    import torch

    names = head_names(model)
    for name in names:
        parent_name, _, leaf = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        old = getattr(parent, leaf) if not leaf.isdigit() else parent[int(leaf)]
        new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
        new = new.to(device=old.weight.device, dtype=old.weight.dtype)
        with torch.no_grad():
            for new_row, old_row in (keep or {}).items():
                if 0 <= old_row < old.out_features:
                    new.weight[new_row] = old.weight[old_row]
                    if new.bias is not None and old.bias is not None:
                        new.bias[new_row] = old.bias[old_row]
        if leaf.isdigit():
            parent[int(leaf)] = new
        else:
            setattr(parent, leaf, new)
    return names


def matching_rows(new_labels: list[str], old_labels: list[str]) -> dict[int, int]:
    """New row → old row for every class name the two label lists share."""
    where = {label: i for i, label in enumerate(old_labels)}
    return {i: where[label] for i, label in enumerate(new_labels) if label in where}


def _head_roots(model: nn.Module) -> set[str]:
    """Names that count as head when freezing: the head layers and GoogLeNet's whole aux branches."""
    roots = set(head_names(model))
    roots |= {attr for attr, _ in _AUX_ATTRS if isinstance(getattr(model, attr, None), nn.Module)}
    return roots


def trunk_blocks(model: nn.Module) -> list[nn.Module]:
    """The trunk as an ordered list of blocks with parameters, the head excluded.

    Top-level children, with ``features`` / ``encoder.layers`` containers and the non-head
    part of a ``classifier`` opened one level: stages for ResNet/EfficientNet, layers for
    VGG/AlexNet/LeNet, transformer blocks for ViT.
    """
    heads = _head_roots(model)
    blocks: list[nn.Module] = []

    def visit(module: nn.Module, prefix: str) -> None:
        for name, child in module.named_children():
            qual = f"{prefix}{name}"
            if qual in heads or not any(True for _ in child.parameters()):
                continue
            holds_head = any(h.startswith(qual + ".") for h in heads)
            if holds_head or name in _EXPAND or isinstance(getattr(child, "layers", None), nn.Sequential):
                visit(child, qual + ".")
            else:
                blocks.append(child)

    visit(model, "")
    return blocks


def parse_freeze(value: str | int | None) -> str | int:
    """``backbone``, ``none`` or a number N of trailing trunk blocks left trainable."""
    if value is None:
        return "none"
    text = str(value).strip().lower()
    if text in ("backbone", "none"):
        return text
    if text.isdigit():
        return int(text)
    raise OptionError("freeze", "expected backbone, none, or a number of trailing blocks to train", value)


def freeze(model: nn.Module, mode: str | int) -> list[nn.Module]:
    """Freeze the trunk (``backbone``) or all but its last N blocks; returns the frozen blocks.

    Parameters that belong to no block (ViT's class token and position embedding) are
    frozen with the trunk's first block. The head always trains.
    """
    mode = parse_freeze(mode)
    if mode == "none":
        return []
    blocks = trunk_blocks(model)
    frozen = blocks if mode == "backbone" else blocks[: max(len(blocks) - int(mode), 0)]
    if not frozen:
        return []
    in_blocks = {id(p) for b in blocks for p in b.parameters()}
    heads = [model.get_submodule(n) for n in _head_roots(model)]
    in_heads = {id(p) for h in heads for p in h.parameters()}
    for p in model.parameters():
        if id(p) not in in_blocks and id(p) not in in_heads:
            p.requires_grad_(False)
    for block in frozen:
        block.requires_grad_(False)
    return frozen
