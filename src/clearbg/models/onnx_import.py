"""Official weights from the ONNX files that ship in registry packages (U2-Net, IS-Net).

Those files have BatchNorm folded into each conv and anonymous initializer names, so each Conv
node is matched to the ``nn.Conv2d`` of the official model it came from in one of two ways:

* by node name, where the exporter kept the module path (PyTorch >= 1.13: the IS-Net file's
  ``/stage1/rebnconvin/conv_s1/Conv`` is ``stage1.rebnconvin.conv_s1``);
* by execution order otherwise (rembg's PyTorch 1.9 U2-Net exports): the i-th Conv node in
  graph order is the i-th conv to run in the official forward pass
  (``../shared/reference/onnx_conv_map.json`` documents this; side1..6 and outconv keep their
  names and confirm it), so we record our model's execution order with hooks and zip the two.

Folded conv weight and bias go into ``conv_s1``; each ``bn_s1`` becomes an identity. Weights
stored as float16 are widened to float32.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from clearbg.errors import CheckpointMismatch


def conv_execution_order(model: nn.Module, size: int = 64) -> list[str]:
    """Module names of every Conv2d, in the order the forward pass runs them."""
    order: list[str] = []
    hooks = [
        module.register_forward_hook(lambda *_, name=name: order.append(name))
        for name, module in model.named_modules()
        if isinstance(module, nn.Conv2d)
    ]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, size, size))
    finally:
        for hook in hooks:
            hook.remove()
    return order


def identity_batchnorm_(state_dict: dict[str, torch.Tensor], eps: float = 1e-5) -> None:
    """Set every BatchNorm entry so that BN(x) == x in eval mode."""
    for key, value in state_dict.items():
        if key.endswith(".weight") and ".bn_" in key:
            state_dict[key] = torch.ones_like(value)
        elif key.endswith((".bias", ".running_mean")) and ".bn_" in key:
            state_dict[key] = torch.zeros_like(value)
        elif key.endswith(".running_var"):
            state_dict[key] = torch.full_like(value, 1.0 - eps)  # (x - 0) / sqrt(1 - eps + eps) == x
        elif key.endswith(".num_batches_tracked"):
            state_dict[key] = torch.zeros_like(value)


def state_dict_from_onnx(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """Convert an official ONNX export (BatchNorm folded) into the official PyTorch state dict.

    Returns:
        (state_dict, arch) where arch is the registry architecture it fits.

    Raises:
        CheckpointMismatch: the file is not a BN-folded export of a registered architecture.
    """
    import onnx
    from onnx import numpy_helper

    from clearbg.models.specs import get_spec, list_models

    graph = onnx.load(str(path)).graph
    initializers = {init.name: init for init in graph.initializer}
    convs = [node for node in graph.node if node.op_type == "Conv"]
    by_module = {node.name.strip("/").removesuffix("/Conv").replace("/", "."): node for node in convs}
    archs = sorted({name.split(".")[0] for name in list_models()})
    for arch in archs:
        model = get_spec(arch).builder()
        names = [name for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]
        if len(names) != len(convs):
            continue
        if set(names) == set(by_module):
            nodes = [by_module[name] for name in names]
        else:
            names, nodes = conv_execution_order(model), convs
        state_dict = model.state_dict()
        if any(tuple(initializers[node.input[1]].dims) != tuple(state_dict[f"{name}.weight"].shape)
               for name, node in zip(names, nodes)):
            continue
        for name, node in zip(names, nodes):
            for key, init_name in zip(("weight", "bias"), node.input[1:3]):
                array = np.array(numpy_helper.to_array(initializers[init_name]), dtype=np.float32)
                state_dict[f"{name}.{key}"] = torch.from_numpy(array)
        identity_batchnorm_(state_dict)
        return state_dict, arch
    raise CheckpointMismatch(
        f"{path}: its {len(convs)} Conv nodes match none of {', '.join(archs)} by module name or execution order"
    )
