"""The tiny InstantID (SDXL) files: InstantX's released formats, proved against diffusers and ComfyUI's own loaders.

models/instantid/ip-adapter.bin: torch.save of {"image_proj": ..., "ip_adapter": ...}
                                           real                 tiny
  image_proj (tencent Resampler, input one ArcFace embedding as (B, 1, 512), 16 queries, depth 4, ff_mult 4)
    latents                                (1, 16, 1280)        (1, 16, 96)
    proj_in.weight / .bias                 (1280, 512) (1280)   (96, 512) (96)
    proj_out.weight / .bias                (2048, 1280) (2048)  (80, 96) (80)     SDXL context width
    norm_out.weight / .bias                (2048)               (80)
    layers.{0..3}.0.norm1 / .norm2         (1280)               (96)
    layers.{i}.0.to_q.weight               (1280, 1280)         (128, 96)         20 / 2 heads of 64, no bias
    layers.{i}.0.to_kv.weight              (2560, 1280)         (256, 96)
    layers.{i}.0.to_out.weight             (1280, 1280)         (96, 128)
    layers.{i}.1.0.weight / .bias          (1280)               (96)
    layers.{i}.1.1.weight / 1.3.weight     (5120, 1280) / (1280, 5120)   (384, 96) / (96, 384)
  ip_adapter: {1, 3, ..., 139}.to_k_ip.weight / .to_v_ip.weight, diffusers' processor order (down, up, mid)
                                           (640|1280, 2048)     (64|128, 80)      10 at 2M, 60 at 4M wide
models/controlnet/instantid/diffusion_pytorch_model.safetensors: IdentityNet, diffusers ControlNetModel, float16
    conv_in.weight                         (320, 4, 3, 3)       (32, 4, 3, 3)
    add_embedding.linear_1.weight          (1280, 2816)         (128, 1584)
    down_blocks.2...attn2.to_k.weight      (1280, 2048)         (128, 80)         reads the 16 face tokens
    controlnet_down_blocks.{0..8}          zero-initialised convs, (320|640|1280, ..)  non-zero, (32|64|128, ..)
    controlnet_mid_block.weight            (1280, 1280, 1, 1)   (128, 128, 1, 1)
  The same 844 keys as the release's config (transformer depths 2 / 10, middle 10).

ComfyUI 0.3.75 detects diffusers ControlNets against fixed real-size configs, so the test support
(tests/host_support) adds the tiny SDXL config when none of core's matches.
"""
import logging
import math

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import comfy.cldm.cldm
import comfy.controlnet
import comfy.model_detection
import comfy.sample
import comfy.supported_models
import folder_paths
import host_support
import nodes
from graphs import txt2img
from host_support import tiny_configs
from tinymodels import comfy_models, instantid_files
from tinymodels.world import INSTANTID_ADAPTER, INSTANTID_CONTROLNET

C = tiny_configs.SDXL_UNET["context_dim"]  # 80 (real 2048)
M = tiny_configs.SDXL_UNET["model_channels"]  # 32 (real 320)
POOLED = tiny_configs.SDXL_UNET["adm_in_channels"] - 6 * 256  # 48 (real 1280)
ID_DIM, QUERIES, DEPTH, DIM, HEADS, HEAD_DIM, FF_MULT = 512, 16, 4, 96, 2, 64, 4
LAYERS = 70
ATOL = 1e-5


pytestmark = pytest.mark.usefixtures("one_thread")  # many tiny matmuls: one thread is far faster here


@pytest.fixture(scope="module")
def adapter_sd(world):
    return torch.load(str(world / "models" / "instantid" / INSTANTID_ADAPTER), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def identitynet_path(world):
    folder_paths.add_model_folder_path("controlnet", str(world / "models" / "controlnet"))
    return world / "models" / "controlnet" / INSTANTID_CONTROLNET


# ---------------------------------------------------------------- the adapter: tencent's Resampler, written here


class PerceiverAttention(torch.nn.Module):
    def __init__(self, dim, dim_head, heads):
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        inner = dim_head * heads
        self.norm1, self.norm2 = torch.nn.LayerNorm(dim), torch.nn.LayerNorm(dim)
        self.to_q = torch.nn.Linear(dim, inner, bias=False)
        self.to_kv = torch.nn.Linear(dim, inner * 2, bias=False)
        self.to_out = torch.nn.Linear(inner, dim, bias=False)

    def forward(self, x, latents):
        x, latents = self.norm1(x), self.norm2(latents)
        b, n, _ = latents.shape
        q = self.to_q(latents)
        k, v = self.to_kv(torch.cat((x, latents), dim=-2)).chunk(2, dim=-1)
        q, k, v = (t.reshape(b, -1, self.heads, self.dim_head).transpose(1, 2) for t in (q, k, v))
        scale = 1 / math.sqrt(math.sqrt(self.dim_head))
        weight = torch.softmax((q * scale) @ (k * scale).transpose(-2, -1), dim=-1)
        return self.to_out((weight @ v).transpose(1, 2).reshape(b, n, -1))


class Resampler(torch.nn.Module):
    """InstantID's image_proj_model: Resampler(dim, depth, dim_head, heads, num_queries, embedding_dim, output_dim)."""

    def __init__(self, dim, depth, dim_head, heads, num_queries, embedding_dim, output_dim, ff_mult):
        super().__init__()
        self.latents = torch.nn.Parameter(torch.zeros(1, num_queries, dim))
        self.proj_in = torch.nn.Linear(embedding_dim, dim)
        self.proj_out = torch.nn.Linear(dim, output_dim)
        self.norm_out = torch.nn.LayerNorm(output_dim)
        self.layers = torch.nn.ModuleList(torch.nn.ModuleList([
            PerceiverAttention(dim, dim_head, heads),
            torch.nn.Sequential(torch.nn.LayerNorm(dim), torch.nn.Linear(dim, dim * ff_mult, bias=False),
                                torch.nn.GELU(), torch.nn.Linear(dim * ff_mult, dim, bias=False))])
            for _ in range(depth))

    def forward(self, x):
        latents = self.latents.repeat(x.shape[0], 1, 1)
        x = self.proj_in(x)
        for attn, ff in self.layers:
            latents = attn(x, latents) + latents
            latents = ff(latents) + latents
        return self.norm_out(self.proj_out(latents))


def resampler(adapter_sd):
    model = Resampler(DIM, DEPTH, HEAD_DIM, HEADS, QUERIES, ID_DIM, C, FF_MULT)
    model.load_state_dict(adapter_sd["image_proj"], strict=True)
    return model.eval()


def face_tokens(adapter_sd, seed=0):
    """(cond, uncond) tokens as InstantID makes them: a unit ArcFace embedding, and zeros for the negative."""
    embed = torch.nn.functional.normalize(torch.randn(1, 1, ID_DIM, generator=torch.Generator().manual_seed(seed)),
                                          dim=-1)
    with torch.no_grad():
        return resampler(adapter_sd)(embed), resampler(adapter_sd)(torch.zeros_like(embed))


def released_image_proj_keys():
    keys = {"latents", "proj_in.weight", "proj_in.bias", "proj_out.weight", "proj_out.bias", "norm_out.weight",
            "norm_out.bias"}
    for i in range(DEPTH):
        keys |= {f"layers.{i}.0.{n}.{p}" for n in ("norm1", "norm2") for p in ("weight", "bias")}
        keys |= {f"layers.{i}.0.{n}.weight" for n in ("to_q", "to_kv", "to_out")}
        keys |= {f"layers.{i}.1.0.weight", f"layers.{i}.1.0.bias", f"layers.{i}.1.1.weight", f"layers.{i}.1.3.weight"}
    return keys


def test_adapter_has_the_released_keys_and_shapes(adapter_sd):
    assert set(adapter_sd) == {"image_proj", "ip_adapter"}
    proj, ip = adapter_sd["image_proj"], adapter_sd["ip_adapter"]
    assert set(proj) == released_image_proj_keys() and len(proj) == 51
    inner = HEADS * HEAD_DIM
    assert proj["latents"].shape == (1, QUERIES, DIM)
    assert proj["proj_in.weight"].shape == (DIM, ID_DIM) and proj["proj_out.weight"].shape == (C, DIM)
    assert proj["norm_out.weight"].shape == (C,)
    for i in range(DEPTH):
        assert proj[f"layers.{i}.0.to_q.weight"].shape == (inner, DIM)
        assert proj[f"layers.{i}.0.to_kv.weight"].shape == (2 * inner, DIM)
        assert proj[f"layers.{i}.0.to_out.weight"].shape == (DIM, inner)
        assert proj[f"layers.{i}.1.1.weight"].shape == (DIM * FF_MULT, DIM)
        assert proj[f"layers.{i}.1.3.weight"].shape == (DIM, DIM * FF_MULT)
    assert set(ip) == {f"{n}.to_{kv}_ip.weight" for n in range(1, 2 * LAYERS, 2) for kv in "kv"}
    widths = [ip[f"{n}.to_k_ip.weight"].shape[0] for n in range(1, 2 * LAYERS, 2)]
    assert widths == [2 * M] * 4 + [4 * M] * 20 + [4 * M] * 30 + [2 * M] * 6 + [4 * M] * 10
    assert all(ip[f"{n}.to_{kv}_ip.weight"].shape[1] == C for n in range(1, 2 * LAYERS, 2) for kv in "kv")
    assert all(t.dtype == torch.float32 for group in adapter_sd.values() for t in group.values())


def test_resampler_loads_strictly_and_makes_16_face_tokens(adapter_sd):
    cond, uncond = face_tokens(adapter_sd)
    assert cond.shape == uncond.shape == (1, QUERIES, C)
    assert torch.isfinite(cond).all() and (cond - uncond).abs().max() > 1e-2
    assert (face_tokens(adapter_sd, seed=1)[0] - cond).abs().max() > 1e-3


def tiny_diffusers_sdxl_unet():
    """diffusers' SDXL UNet config at the tiny widths (on the meta device: only its processor table is read)."""
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        return UNet2DConditionModel(
            sample_size=32, in_channels=4, out_channels=4, layers_per_block=2,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            block_out_channels=(M, 2 * M, 4 * M), transformer_layers_per_block=(1, 2, 10),
            attention_head_dim=(2, 4, 8), cross_attention_dim=C, use_linear_projection=True,
            addition_embed_type="text_time", addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=tiny_configs.SDXL_UNET["adm_in_channels"])


def test_adapter_loads_strictly_into_diffusers(adapter_sd):
    """diffusers' own IP-Adapter loading: every to_k_ip / to_v_ip lands on its SDXL cross-attention, strictly, and
    its IPAdapterPlusImageProjection gives the tokens of tencent's Resampler."""
    from diffusers.models.embeddings import IPAdapterPlusImageProjection

    unet = tiny_diffusers_sdxl_unet()
    procs = unet._convert_ip_adapter_attn_to_diffusers([adapter_sd], low_cpu_mem_usage=False)
    ip_procs = [(name, p) for name, p in procs.items() if hasattr(p, "to_k_ip")]
    assert len(ip_procs) == LAYERS and [n.split(".")[0] for n, _ in ip_procs[:1] + ip_procs[-1:]] == [
        "down_blocks", "mid_block"]
    for i, (name, proc) in enumerate(ip_procs):
        n = 2 * i + 1
        assert proc.num_tokens == [QUERIES], name
        assert torch.equal(proc.to_k_ip[0].weight, adapter_sd["ip_adapter"][f"{n}.to_k_ip.weight"]), name
        assert torch.equal(proc.to_v_ip[0].weight, adapter_sd["ip_adapter"][f"{n}.to_v_ip.weight"]), name
    proj = unet._convert_ip_adapter_image_proj_to_diffusers(adapter_sd["image_proj"], low_cpu_mem_usage=False)
    assert isinstance(proj, IPAdapterPlusImageProjection)
    embeds = torch.randn(2, 1, ID_DIM, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(proj.eval()(embeds), resampler(adapter_sd)(embeds), atol=ATOL, rtol=0)


# ---------------------------------------------------------------- IdentityNet


def test_identitynet_file_is_diffusers_format_with_the_release_key_set(identitynet_path):
    from diffusers import ControlNetModel

    sd = load_file(str(identitynet_path))
    with safe_open(str(identitynet_path), "pt") as f:
        assert f.metadata() == {"format": "pt"}
    with torch.device("meta"):
        real = ControlNetModel(**instantid_files.REAL_IDENTITYNET_CONFIG).state_dict()
    assert set(sd) == set(real) and len(sd) == 844
    assert all(t.dtype == torch.float16 for t in sd.values())
    assert sd["conv_in.weight"].shape == (M, 4, 3, 3) and real["conv_in.weight"].shape == (320, 4, 3, 3)
    assert sd["add_embedding.linear_1.weight"].shape == (4 * M, tiny_configs.SDXL_UNET["adm_in_channels"])
    for block, width in ((1, 2 * M), (2, 4 * M)):
        key = f"down_blocks.{block}.attentions.0.transformer_blocks.0.attn2.to_k.weight"
        assert sd[key].shape == (width, C) and real[key].shape == (width * 10, 2048)
    assert sd["mid_block.attentions.0.transformer_blocks.9.attn2.to_k.weight"].shape == (4 * M, C)
    zero_convs = [k for k in sd if k.startswith("controlnet_down_blocks.") and k.endswith(".weight")]
    assert len(zero_convs) == 9 and all(sd[k].abs().sum() > 0 for k in zero_convs + ["controlnet_mid_block.weight"])


def test_identitynet_loads_with_comfy_and_is_detected_as_sdxl(identitynet_path, caplog):
    sd = load_file(str(identitynet_path))
    assert host_support._core_unet_config_from_diffusers_unet(dict(sd)) is None  # core knows real sizes only
    config = comfy.model_detection.unet_config_from_diffusers_unet(dict(sd))
    assert (config["context_dim"], config["model_channels"], config["adm_in_channels"]) == (
        C, M, tiny_configs.SDXL_UNET["adm_in_channels"])
    assert config["transformer_depth"] == [0, 0, 2, 2, 10, 10] and config["transformer_depth_middle"] == 10
    assert isinstance(comfy.model_detection.model_config_from_unet_config(config), comfy.supported_models.SDXL)
    with caplog.at_level(logging.DEBUG):
        control = comfy.controlnet.load_controlnet(str(identitynet_path))
    assert isinstance(control, comfy.controlnet.ControlNet), caplog.text
    for complaint in ("leftover keys", "missing controlnet keys", "unexpected controlnet keys", "could not detect"):
        assert complaint not in caplog.text
    net = control.control_model
    assert isinstance(net, comfy.cldm.cldm.ControlNet) and len(net.zero_convs) == 9
    assert net.label_emb[0][0].weight.shape == (4 * M, tiny_configs.SDXL_UNET["adm_in_channels"])
    attn2 = net.middle_block[1].transformer_blocks[0].attn2
    assert attn2.to_k.weight.shape == (4 * M, C) and attn2.heads == 4 * M // 16
    with torch.no_grad():  # ComfyUI's own conversion put the diffusers weights where they belong
        assert torch.equal(net.zero_convs[3][0].weight, sd["controlnet_down_blocks.3.weight"].float())
        assert torch.equal(net.input_hint_block[14].weight, sd["controlnet_cond_embedding.conv_out.weight"].float())
    assert INSTANTID_CONTROLNET in folder_paths.get_filename_list("controlnet")
    assert isinstance(nodes.ControlNetLoader().load_controlnet(INSTANTID_CONTROLNET)[0], comfy.controlnet.ControlNet)


def keypoint_hint(size=64):
    """A face-keypoint image like InstantID's draw_kps: four limbs to the nose and five coloured dots on black."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    kps = np.array([[0.35, 0.4], [0.65, 0.4], [0.5, 0.55], [0.38, 0.72], [0.62, 0.72]]) * size
    colours = np.array([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255)], dtype=np.float32)
    img = np.zeros((size, size, 3), np.float32)
    for a in (0, 1, 3, 4):
        (x0, y0), (x1, y1) = kps[a], kps[2]
        t = np.clip(((x - x0) * (x1 - x0) + (y - y0) * (y1 - y0)) / ((x1 - x0) ** 2 + (y1 - y0) ** 2), 0, 1)
        img[(x - x0 - t * (x1 - x0)) ** 2 + (y - y0 - t * (y1 - y0)) ** 2 < 2.0 ** 2] = colours[a] * 0.6
    for (cx, cy), colour in zip(kps, colours):
        img[(x - cx) ** 2 + (y - cy) ** 2 < 3.5 ** 2] = colour
    return torch.from_numpy(img / 255.0)[None]


@pytest.fixture(scope="module")
def sdxl():
    return comfy_models.tiny_unet("sdxl")


def _conditioning(seed):
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, 77, C, generator=gen), {"pooled_output": torch.randn(1, POOLED, generator=gen)}]]


def _sample(model, positive, negative):
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    return comfy.sample.sample(model, noise, 2, 5.0, "euler", "normal", positive, negative, torch.zeros_like(noise),
                               seed=0, disable_pbar=True)


def _with_tokens(conditioning, tokens):
    return [[c, {**d, "cross_attn_controlnet": tokens}] for c, d in conditioning]


def test_identitynet_steers_sampling_and_reads_the_face_tokens_as_its_context(sdxl, identitynet_path, adapter_sd):
    control = comfy.controlnet.load_controlnet(str(identitynet_path))
    positive, negative = _conditioning(1), _conditioning(2)
    cond_tokens, uncond_tokens = face_tokens(adapter_sd)
    contexts = []

    def record(module, args, kwargs):
        contexts.append(kwargs["context"].detach().clone())

    hook = control.control_model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        base = _sample(sdxl, positive, negative)
        pos_cn, neg_cn = nodes.ControlNetApplyAdvanced().apply_controlnet(
            positive, negative, control, keypoint_hint(), 1.0, 0.0, 1.0)
        text_context = _sample(sdxl, pos_cn, neg_cn)
        assert contexts and all(c.shape[1:] == (77, C) for c in contexts)  # no tokens given: ComfyUI uses the text
        contexts.clear()
        controlled = _sample(sdxl, _with_tokens(pos_cn, cond_tokens), _with_tokens(neg_cn, uncond_tokens))
    finally:
        hook.remove()
    assert torch.isfinite(controlled).all()
    assert (controlled - base).abs().max() > 1e-3 and (controlled - text_context).abs().max() > 1e-3
    assert contexts and all(c.shape[1:] == (QUERIES, C) for c in contexts)
    rows = [row for c in contexts for row in c]
    assert all(torch.allclose(r, cond_tokens[0]) or torch.allclose(r, uncond_tokens[0]) for r in rows)
    assert any(torch.allclose(r, cond_tokens[0]) for r in rows)
    assert any(torch.allclose(r, uncond_tokens[0]) for r in rows)


def test_identitynet_loads_in_the_server(comfy_server):
    """ComfyUI's ControlNetLoader lists and loads it in the server (applied at strength 0 to the SD1.5 graph, the
    only checkpoint of the world: it cannot steer SD1.5, but the loader runs)."""
    listed = comfy_server.get("/object_info/ControlNetLoader")["ControlNetLoader"]["input"]["required"]
    assert INSTANTID_CONTROLNET in listed["control_net_name"][0]
    prompt = txt2img(steps=1, prefix="instantid_identitynet")
    prompt["hint"] = {"class_type": "LoadImage", "inputs": {"image": "face_a.png"}}
    prompt["cn"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": INSTANTID_CONTROLNET}}
    prompt["apply"] = {"class_type": "ControlNetApplyAdvanced", "inputs": {
        "positive": ["pos", 0], "negative": ["neg", 0], "control_net": ["cn", 0], "image": ["hint", 0],
        "strength": 0.0, "start_percent": 0.0, "end_percent": 1.0}}
    prompt["sampler"]["inputs"].update(positive=["apply", 0], negative=["apply", 1])
    entry = comfy_server.run(prompt)
    assert entry["status"]["status_str"] == "success", (entry["status"], comfy_server.log_tail())
    log = comfy_server.log_tail(200_000)
    for complaint in ("leftover keys", "missing controlnet keys", "could not detect", "controlnet file is invalid"):
        assert complaint not in log
