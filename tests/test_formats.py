"""Every release layout round-trips through detection and strict loading; bad files raise typed errors."""
import os
import pathlib

import pytest
import torch
from safetensors.torch import save_file

from ipadapter_kit.ipadapter_core import adapter, formats, loading
from ipadapter_kit.ipadapter_core.errors import CorruptFileError, UnknownFormatError, UnsafeFileError
from tinymodels import ipadapter_files

CATALOG = ipadapter_files.catalog()
EXPECTED = {  # name -> (kind, arch, tokens, clip width source, LoRA)
    "ip-adapter_sd15.safetensors": ("linear", "SD1.5", 4, "vit-h embeds", False),
    "ip-adapter_sd15_light_v11.bin": ("linear", "SD1.5", 4, "vit-h embeds", False),
    "ip-adapter_sd15_vit-G.safetensors": ("linear", "SD1.5", 4, "vit-bigg embeds", False),
    "ip-adapter-plus_sd15.safetensors": ("resampler", "SD1.5", 16, "vit-h hidden", False),
    "ip-adapter-plus-face_sd15.safetensors": ("resampler", "SD1.5", 16, "vit-h hidden", False),
    "ip-adapter-full-face_sd15.safetensors": ("mlp", "SD1.5", None, "vit-h hidden", False),
    "ip-adapter_sdxl.safetensors": ("linear", "SDXL", 4, "vit-bigg embeds", False),
    "ip-adapter_sdxl_vit-h.safetensors": ("linear", "SDXL", 4, "vit-h embeds", False),
    "ip-adapter-plus_sdxl_vit-h.safetensors": ("resampler", "SDXL", 16, "vit-h hidden", False),
    "ip-adapter-plus-face_sdxl_vit-h.safetensors": ("resampler", "SDXL", 16, "vit-h hidden", False),
    "ip_plus_composition_sd15.safetensors": ("resampler", "SD1.5", 16, "vit-h hidden", False),
    "ip_plus_composition_sdxl.safetensors": ("resampler", "SDXL", 16, "vit-h hidden", False),
    "Kolors-IP-Adapter-Plus.bin": ("resampler", "SDXL", 16, "vit-l-336 hidden", False),
    "ip-adapter-faceid_sd15.bin": ("faceid", "SD1.5", 4, None, True),
    "ip-adapter-faceid-plus_sd15.bin": ("faceid_plus", "SD1.5", 4, "vit-h hidden", True),
    "ip-adapter-faceid-plusv2_sd15.bin": ("faceid_plus", "SD1.5", 4, "vit-h hidden", True),
    "ip-adapter-faceid-portrait_sdxl.bin": ("faceid", "SDXL", 16, None, False),
    "ip-adapter-faceid-portrait_sdxl_unnorm.bin": ("faceid", "SDXL", 16, None, False),
    "ip-adapter-faceid-portrait-v11_sd15.bin": ("faceid", "SD1.5", 16, None, False),
    "ip-adapter-faceid_sdxl.bin": ("faceid", "SDXL", 4, None, True),
    "ip-adapter-faceid-plusv2_sdxl.bin": ("faceid_plus", "SDXL", 4, "vit-h hidden", True),
}


def _clip_width(source):
    if source is None:
        return None
    encoder, output = source.split()
    embed, hidden = ipadapter_files.clip_dims(encoder)
    return embed if output == "embeds" else hidden


@pytest.mark.parametrize("suffix", [".safetensors", ".bin"])
@pytest.mark.parametrize("name", sorted(CATALOG))
def test_release_layout_detects_and_loads_strictly(name, suffix, tmp_path):
    arch, proj, lora = CATALOG[name]
    nested = ipadapter_files.state_dict(arch, proj, lora, seed=3)
    path = ipadapter_files.save(tmp_path / (pathlib.Path(name).stem + suffix), nested)
    model = adapter.load(str(path))
    kind, arch_name, tokens, clip_source, has_lora = EXPECTED[name]
    spec = model.spec
    assert (spec.kind, spec.arch, spec.tokens, spec.clip_dim, spec.lora_rank > 0) == (
        kind, arch_name, tokens, _clip_width(clip_source), has_lora)
    assert spec.layer_widths == tuple(ipadapter_files.cross_attn_widths(arch))
    loaded = dict(model.state_dict())
    for group, tensors in nested.items():
        for key, value in tensors.items():
            assert torch.equal(loaded[f"{group}.{key}"], value), key
    assert len(loaded) == sum(len(t) for t in nested.values())


def test_file_names_are_never_read(tmp_path):
    nested = ipadapter_files.state_dict(*CATALOG["ip-adapter-plus_sd15.safetensors"], seed=1)
    renamed = ipadapter_files.save(tmp_path / "ip-adapter_sdxl_vit-h.safetensors", nested)
    assert adapter.load(str(renamed)).spec.kind == "resampler"
    assert adapter.load(str(renamed)).spec.arch == "SD1.5"


def _write(tmp_path, name="ip-adapter_sd15.safetensors"):
    return ipadapter_files.save(tmp_path / name, ipadapter_files.state_dict(*CATALOG[name], seed=2))


def test_truncated_safetensors_is_a_corrupt_file(tmp_path):
    path = _write(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptFileError, match="truncated or damaged"):
        adapter.load(str(path))


def test_truncated_bin_is_a_corrupt_file(tmp_path):
    path = _write(tmp_path, "ip-adapter_sd15_light_v11.bin")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptFileError):
        adapter.load(str(path))


def test_renamed_keys_are_an_unknown_layout(tmp_path):
    nested = ipadapter_files.state_dict(*CATALOG["ip-adapter_sd15.safetensors"], seed=2)
    nested["ip_adapter"]["2.to_k_ip.weight"] = nested["ip_adapter"].pop("1.to_k_ip.weight")
    with pytest.raises(UnknownFormatError, match="numbered"):
        formats.detect(nested, "x")
    del nested["ip_adapter"]["2.to_k_ip.weight"]
    with pytest.raises(UnknownFormatError):
        formats.detect(nested, "x")


def test_mismatched_halves_are_refused():
    sd15 = ipadapter_files.state_dict(*CATALOG["ip-adapter_sd15.safetensors"], seed=2)
    sdxl = ipadapter_files.state_dict(*CATALOG["ip-adapter_sdxl.safetensors"], seed=2)
    with pytest.raises(UnknownFormatError, match="do not belong together"):
        formats.detect({"image_proj": sd15["image_proj"], "ip_adapter": sdxl["ip_adapter"]}, "x")


def test_unexpected_extra_tensor_fails_strict_loading():
    nested = ipadapter_files.state_dict(*CATALOG["ip-adapter-plus_sd15.safetensors"], seed=2)
    nested["image_proj"]["pos_emb.weight"] = torch.zeros(16, 64)
    with pytest.raises(UnknownFormatError, match="do not fit"):
        adapter.from_state_dict(nested, "x")


@pytest.mark.parametrize("keys", [
    {"lora_unet_input_blocks_1_1_transformer_blocks_0_attn2_to_k.lora_down.weight": (4, 64)},
    {"control_model.input_hint_block.0.weight": (16, 3, 3, 3), "control_model.zero_convs.0.0.weight": (32, 32, 1, 1)},
    {"model.diffusion_model.input_blocks.0.0.weight": (32, 4, 3, 3)},
])
def test_other_model_files_are_not_ip_adapters(keys, tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({k: torch.zeros(s) for k, s in keys.items()}, str(path))
    with pytest.raises(UnknownFormatError, match="not an IP-Adapter file"):
        adapter.load(str(path))


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    payload = _Payload()
    payload.marker = marker
    path = tmp_path / "ip-adapter_evil.bin"
    torch.save({"image_proj": {"proj.weight": payload}, "ip_adapter": {}}, str(path))
    with pytest.raises(UnsafeFileError, match="could run code"):
        adapter.load(str(path))
    assert not marker.exists()


def test_unknown_extension_is_refused(tmp_path):
    path = tmp_path / "adapter.pkl"
    path.write_bytes(b"\x80\x04N.")
    with pytest.raises(UnsafeFileError, match="unsupported file type"):
        loading.read_state_dict(str(path))


def test_unknown_projection_names_the_keys():
    nested = ipadapter_files.state_dict(*CATALOG["ip-adapter_sd15.safetensors"], seed=2)
    nested["image_proj"] = {"weird.weight": torch.zeros(3, 3)}
    with pytest.raises(UnknownFormatError, match="weird.weight"):
        formats.detect(nested, "x")
