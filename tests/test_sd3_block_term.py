"""SD3.5's per-joint-block image term against diffusers' SD3IPAdapterJointAttnProcessor2_0 on the same weights."""
import pytest
import torch

from ipadapter_kit.ipadapter_core.families import sd3
from tinymodels import sd3_adapter_files

pytest.importorskip("diffusers")
HIDDEN, HEADS, TEXT, IMAGE, TOKENS = 128, 2, 7, 24, 64


def released_layer(seed=4):
    """ip_adapter.0 of the tiny release, every norm weight random too."""
    layer = {k[2:]: v for k, v in sd3_adapter_files.adapter_state_dict(seed)["ip_adapter"].items()
             if k.startswith("0.")}
    gen = torch.Generator().manual_seed(seed)
    for key in ("norm_q.weight", "norm_k.weight", "norm_ip_k.weight"):
        layer[key] = 1 + 0.3 * torch.randn(layer[key].shape, generator=gen)
    layer["norm_ip.linear.bias"] = 0.2 * torch.randn(layer["norm_ip.linear.bias"].shape, generator=gen)
    return layer


@pytest.mark.parametrize("scale", [0.5, 1.0])
def test_image_term_equals_diffusers_processor(scale):
    from diffusers.models.attention_processor import Attention, SD3IPAdapterJointAttnProcessor2_0

    layer = released_layer()
    timestep_dim = layer["norm_ip.linear.weight"].shape[1]
    ours = sd3.JointBlockAdapter(HIDDEN, timestep_dim)
    ours.load_state_dict(layer, strict=True)
    processor = SD3IPAdapterJointAttnProcessor2_0(HIDDEN, HIDDEN, 64, timestep_dim, scale=scale)
    processor.load_state_dict(layer, strict=True)
    torch.manual_seed(0)
    attn = Attention(query_dim=HIDDEN, added_kv_proj_dim=HIDDEN, dim_head=64, heads=HEADS, out_dim=HIDDEN,
                     context_pre_only=False, bias=True, qk_norm="rms_norm", eps=1e-6, processor=processor).eval()
    gen = torch.Generator().manual_seed(1)
    image, text = torch.randn(2, IMAGE, HIDDEN, generator=gen), torch.randn(2, TEXT, HIDDEN, generator=gen)
    tokens, t_emb = torch.randn(2, TOKENS, HIDDEN, generator=gen), torch.randn(2, timestep_dim, generator=gen)
    with torch.no_grad():
        with_ip, _ = processor(attn, image, text, ip_hidden_states=tokens, temb=t_emb)
        plain, _ = processor(attn, image, text)
        q, k, v = (proj(image).view(2, IMAGE, HEADS, 64).transpose(1, 2) for proj in (attn.to_q, attn.to_k, attn.to_v))
        term = ours.image_term(q, k, v, tokens, t_emb)
    # to_out is linear: what the processor added is to_out's weight applied to scale x the image term
    torch.testing.assert_close(with_ip - plain, scale * term @ attn.to_out[0].weight.t(), atol=1e-5, rtol=1e-4)
    assert (with_ip - plain).abs().max() > 1e-3
