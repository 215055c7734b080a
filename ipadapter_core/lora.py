"""The LoRA stored inside FaceID files (ip_adapter.{n}.to_q_lora...) as a kohya-named LoRA for the UNet.

Slot n of the file belongs to adapter layer n // 2: even n is that transformer's self-attention (attn1),
odd n its cross-attention (attn2). The FaceID training used LoRA scale 1, so alpha = rank.
"""
import torch

from . import families

PROJECTIONS = {"to_q": "to_q", "to_k": "to_k", "to_v": "to_v", "to_out": "to_out.0"}


def embedded_lora(ip_adapter_weights, arch):
    """{kohya key: tensor} for every to_*_lora pair in an adapter's ip_adapter state dict ({} if none)."""
    family = families.get(arch)
    keys = family.keys()
    module_path = family.module_path
    out = {}
    for name, tensor in ip_adapter_weights.items():
        slot, _, rest = name.partition(".")
        projection, _, tail = rest.partition("_lora.")
        if not tail or projection not in PROJECTIONS:
            continue
        slot = int(slot)
        attn = "attn1" if slot % 2 == 0 else "attn2"
        path = f"{module_path(keys[slot // 2])}.{attn}.{PROJECTIONS[projection]}"
        kohya = "lora_unet_" + path.replace(".", "_")
        out[f"{kohya}.lora_{tail.split('.')[0]}.weight"] = tensor
        if tail.startswith("down"):
            out[f"{kohya}.alpha"] = torch.tensor(float(tensor.shape[0]))
    return out
