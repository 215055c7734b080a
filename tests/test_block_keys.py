"""The block tables match the attn2 keys ComfyUI really emits, in the adapter files' layer order."""
import torch

from ipadapter_kit.ipadapter_core import blocks
from tinymodels import comfy_models, ipadapter_files


def _record_attn2_calls(arch):
    """(block, id, block_index, query width) of every attn2 call in one UNet forward, in call order."""
    patcher = comfy_models.tiny_unet(arch).clone()
    seen = []

    def recorder(n, context, value, extra_options):
        block = extra_options["block"]
        seen.append((block[0], block[1], extra_options["block_index"], n.shape[-1]))
        return n, context, value

    patcher.set_model_attn2_patch(recorder)
    model = patcher.model
    context_dim = model.model_config.unet_config["context_dim"]
    kwargs = {"c_crossattn": torch.zeros(1, 77, context_dim), "transformer_options": patcher.model_options[
        "transformer_options"]}
    if model.adm_channels:
        kwargs["y"] = torch.zeros(1, model.adm_channels)
    with torch.no_grad():
        model.apply_model(torch.zeros(1, 4, 8, 8), torch.tensor([1.0]), **kwargs)
    return seen


def test_sd15_table_matches_emitted_keys():
    _check("sd15", "SD1.5")


def test_sdxl_table_matches_emitted_keys():
    _check("sdxl", "SDXL")


def _check(arch, name):
    seen = _record_attn2_calls(arch)
    emitted = [(b, i, t) for b, i, t, _ in seen]
    assert len(emitted) == len(set(emitted)), "a key was emitted twice"
    assert set(emitted) == set(blocks.patch_keys(name))
    assert ("middle", 0, 0) in emitted
    widths = {(b, i, t): w for b, i, t, w in seen}
    table_widths = [widths[key] for key in blocks.patch_keys(name)]
    assert table_widths == ipadapter_files.cross_attn_widths(arch), "layer order does not match the adapter files"
