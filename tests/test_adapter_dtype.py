"""Adapter weights in memory: float32 on CPU, the file's own 16-bit dtype where ComfyUI runs 16-bit (no fp32 copy)."""
import pytest
import torch
from safetensors.torch import save_file

import comfy.model_management
from ipadapter_kit.ipadapter_core import adapter as core_adapter
from ipadapter_kit.nodes import model_cache
from tinymodels import ipadapter_files

NAME = "ip-adapter_sd15.safetensors"


@pytest.fixture
def adapter_file(tmp_path, monkeypatch):
    """Write the tiny SD1.5 adapter in a dtype; model_cache resolves its name to that file."""
    def write(dtype):
        flat = {f"{group}.{key}": t.to(dtype).contiguous()
                for group, sd in ipadapter_files.state_dict(*ipadapter_files.catalog()[NAME], seed=5).items()
                for key, t in sd.items()}
        path = tmp_path / f"{str(dtype).replace('torch.', '')}_{NAME}"
        save_file(flat, str(path))
        monkeypatch.setattr(model_cache, "resolve", lambda folder, name: str(path))
        return path
    return write


def dtypes(module):
    return {t.dtype for t in list(module.parameters()) + list(module.buffers()) if t.is_floating_point()}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_16_bit_file_is_float32_on_cpu(adapter_file, dtype):
    path = adapter_file(dtype)
    loaded = model_cache.load_adapter(path.name)
    assert loaded.patcher.load_device.type == "cpu" and dtypes(loaded.weights) == {torch.float32}
    assert dtypes(core_adapter.load(str(path))) == {torch.float32}  # the core's default: float32


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_16_bit_file_stays_16_bit_where_comfyui_runs_16_bit(adapter_file, monkeypatch, dtype):
    # a GPU as ComfyUI sees one: fp16 and bf16 both run there, so the file's own dtype is kept
    monkeypatch.setattr(comfy.model_management, "should_use_fp16", lambda *a, **kw: True)
    monkeypatch.setattr(comfy.model_management, "should_use_bf16", lambda *a, **kw: True)
    path = adapter_file(dtype)
    weights = model_cache.load_adapter(path.name).weights
    assert dtypes(weights) == {dtype}
    file_bytes = sum(t.numel() * t.element_size() for sd in core_adapter.load_adapter_file(str(path)).values()
                     for t in sd.values())
    assert sum(p.numel() * p.element_size() for p in weights.parameters()) == file_bytes  # no wider copy


def test_a_float32_file_follows_comfyuis_choice_for_the_device(adapter_file, monkeypatch):
    monkeypatch.setattr(comfy.model_management, "should_use_fp16", lambda *a, **kw: True)
    path = adapter_file(torch.float32)
    assert dtypes(model_cache.load_adapter(path.name).weights) == {torch.float16}


def test_keeping_the_files_dtype_makes_no_copy():
    nested = ipadapter_files.state_dict(*ipadapter_files.catalog()[NAME], seed=5)
    nested = {g: {k: t.half() for k, t in sd.items()} for g, sd in nested.items()}
    weights = core_adapter.from_state_dict(nested, NAME, dtype=torch.float16)
    assert weights.ip_adapter["1"].to_k_ip.weight.data_ptr() == nested["ip_adapter"]["1.to_k_ip.weight"].data_ptr()
    assert core_adapter.file_dtype(nested) == torch.float16


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_16_bit_weights_and_queries_on_cuda_give_the_float32_image_attention(dtype):
    import torch.nn.functional as F

    from ipadapter_kit.ipadapter_core.attention import ImagePrompt, IPAdapterPatch

    def sdpa(q, k, v, heads, attn_precision=None, transformer_options=None):
        b, _, c = q.shape
        q, k, v = (t.view(b, -1, heads, c // heads).transpose(1, 2) for t in (q, k, v))
        return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, -1, c)

    nested = ipadapter_files.state_dict(*ipadapter_files.catalog()[NAME], seed=5)
    g = torch.Generator().manual_seed(3)
    weights = {d: core_adapter.from_state_dict(nested, NAME, dtype=d) for d in (torch.float32, dtype)}
    q, k, v = (torch.randn(2, n, 32, generator=g) for n in (48, 77, 77))
    conds = [torch.randn(1, 4, 64, generator=g) for _ in range(4)]  # 4 chained adapters
    options = {"block": ("input", 1), "block_index": 0, "n_heads": 2, "cond_or_uncond": [1, 0],
               "original_shape": (2, 4, 6, 8)}
    outs = {}
    for d, w in weights.items():
        prompts = [ImagePrompt(weights=w.to("cuda"), cond=c.to(d), uncond=torch.zeros(1, 4, 64, dtype=d),
                               layer_weights=(1.0,) * 16) for c in conds]
        outs[d] = IPAdapterPatch("SD1.5", prompts, sdpa)(*(t.to("cuda", d) for t in (q, k, v)), options).float().cpu()
    assert torch.allclose(outs[dtype], outs[torch.float32], atol=3e-2, rtol=3e-2)
