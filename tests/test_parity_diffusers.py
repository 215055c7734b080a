"""Parity with diffusers' IP-Adapter on the same tiny tencent-format checkpoints: projections and attention, fp32.

diffusers is the reference: its own converter turns the tencent state dict into its modules, its own
IPAdapterAttnProcessor2_0 runs the decoupled cross-attention. Ours loads the same files with adapter.load and
runs IPAdapterPatch the way ComfyUI calls it (q = to_q(x), k/v of the text, then to_out outside the patch).
"""
import pytest
import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from diffusers.models import embeddings
from diffusers.models.attention_processor import Attention, IPAdapterAttnProcessor2_0
from diffusers.models.model_loading_utils import load_state_dict as diffusers_read_file

from ipadapter_kit.ipadapter_core import adapter, attention, blocks
from tinymodels import ipadapter_files

ATOL = 1e-5  # fp32 throughout; nothing here needs a looser bound
CLIP_TOKENS = 257  # ViT-H/bigG at 224px: 256 patches + CLS
TEXT_TOKENS = 77
CONTEXT = 64  # tiny SD1.5 cross-attention width
HEADS = 2  # tiny SD1.5 heads per transformer (SD15_HEADS)
LATENT = (16, 24)  # non-square latent; every SD1.5 level (/1 .. /8) has an integer grid
LINEAR = "ip-adapter_sd15.safetensors"
PLUS = "ip-adapter-plus_sd15.safetensors"
DIFFUSERS_CLASS = {
    "linear": embeddings.ImageProjection,
    "mlp": embeddings.IPAdapterFullImageProjection,
    "resampler": embeddings.IPAdapterPlusImageProjection,
    "faceid": embeddings.IPAdapterFaceIDImageProjection,
    "faceid_plus": embeddings.IPAdapterFaceIDPlusImageProjection,
}
FACEID_PLUS = sorted(n for n, (_, proj, _) in ipadapter_files.catalog().items()
                     if any(k.startswith("perceiver_resampler.") for k in proj))


# ---------------------------------------------------------------- checkpoints


def with_random_norms(nested, seed):
    """The tiny checkpoint with every 1-D image_proj tensor randomised, so a swapped norm mapping shows."""
    gen = torch.Generator().manual_seed(seed)
    proj = dict(nested["image_proj"])
    for key, t in proj.items():
        if t.ndim == 1:
            noise = 0.3 * torch.randn(t.shape, generator=gen)
            proj[key] = (1.0 + noise) if key.endswith("weight") else noise
    return {"image_proj": proj, "ip_adapter": nested["ip_adapter"]}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Every catalogued release written once under its real name: {name: path}."""
    folder = tmp_path_factory.mktemp("parity")
    out = {}
    for i, (name, (arch, proj, lora)) in enumerate(sorted(ipadapter_files.catalog().items())):
        nested = with_random_norms(ipadapter_files.state_dict(arch, proj, lora, seed=100 + 10 * i), seed=i)
        out[name] = ipadapter_files.save(folder / name, nested)
    return out


def diffusers_state_dict(path):
    """The file read with diffusers' reader, grouped the way its loader hands it on: {image_proj, ip_adapter}."""
    sd = diffusers_read_file(str(path))
    if isinstance(sd.get("image_proj"), dict):
        return {"image_proj": sd["image_proj"], "ip_adapter": sd["ip_adapter"]}
    nested = {"image_proj": {}, "ip_adapter": {}}
    for key, value in sd.items():
        group, _, rest = key.partition(".")
        nested[group][rest] = value
    return nested


def diffusers_projection(image_proj_sd):
    """diffusers' own tencent -> diffusers conversion (unbound: with low_cpu_mem_usage off it never reads self)."""
    convert = UNet2DConditionModel._convert_ip_adapter_image_proj_to_diffusers
    return convert(None, image_proj_sd, low_cpu_mem_usage=False).eval()


# ---------------------------------------------------------------- projections


def projection_inputs(spec, batch, seed):
    """Random encoder outputs of the widths the spec reads: InsightFace ids and/or CLIP embeds / hidden states."""
    gen = torch.Generator().manual_seed(seed)
    inputs = {}
    if spec.id_dim:
        inputs["id"] = torch.randn(batch, spec.id_dim, generator=gen)
    if spec.kind == "linear":
        inputs["clip"] = torch.randn(batch, spec.clip_dim, generator=gen)
    elif spec.clip_dim:
        inputs["clip"] = torch.randn(batch, CLIP_TOKENS, spec.clip_dim, generator=gen)
    return inputs


def our_tokens(weights, inputs, shortcut=False, scale=1.0):
    """Image tokens from our projection."""
    kind = weights.spec.kind
    if kind == "faceid_plus":
        return weights.image_proj(inputs["id"], inputs["clip"], shortcut=shortcut, scale=scale)
    return weights.image_proj(inputs["id"] if kind == "faceid" else inputs["clip"])


def diffusers_tokens(proj, inputs, shortcut=False, scale=1.0):
    """Image tokens from diffusers' projection (FaceID Plus takes CLIP states and shortcut as attributes)."""
    if isinstance(proj, embeddings.IPAdapterFaceIDPlusImageProjection):
        proj.clip_embeds = inputs["clip"].unsqueeze(1)  # (batch, images, tokens, width) as its pipeline sets it
        proj.shortcut, proj.shortcut_scale = shortcut, scale
        return proj(inputs["id"])
    return proj(inputs["id"] if "id" in inputs and "clip" not in inputs else inputs["clip"])


@pytest.mark.parametrize("name", sorted(ipadapter_files.catalog()))
@torch.no_grad()
def test_projection_matches_diffusers(checkpoints, name):
    weights = adapter.load(str(checkpoints[name]))
    theirs = diffusers_projection(diffusers_state_dict(checkpoints[name])["image_proj"])
    assert isinstance(theirs, DIFFUSERS_CLASS[weights.spec.kind])
    inputs = projection_inputs(weights.spec, batch=3, seed=1)
    ours, ref = our_tokens(weights, inputs), diffusers_tokens(theirs, inputs)
    assert ours.shape == ref.shape and ours.shape[-1] == weights.spec.cross_dim
    torch.testing.assert_close(ours, ref, atol=ATOL, rtol=0)


@pytest.mark.parametrize("shortcut,scale", [(False, 1.0), (True, 1.0), (True, 0.6)])
@pytest.mark.parametrize("name", FACEID_PLUS)
@torch.no_grad()
def test_faceid_plus_shortcut_matches_diffusers(checkpoints, name, shortcut, scale):
    weights = adapter.load(str(checkpoints[name]))
    theirs = diffusers_projection(diffusers_state_dict(checkpoints[name])["image_proj"])
    inputs = projection_inputs(weights.spec, batch=2, seed=2)
    ours = our_tokens(weights, inputs, shortcut=shortcut, scale=scale)
    torch.testing.assert_close(ours, diffusers_tokens(theirs, inputs, shortcut, scale), atol=ATOL, rtol=0)


# ---------------------------------------------------------------- attention helpers


def sdpa_attention(q, k, v, heads, attn_precision=None, transformer_options=None):
    """ComfyUI's attention signature on plain SDPA: (B, N, heads*d) in and out."""
    b = q.shape[0]
    q, k, v = (t.view(b, -1, heads, t.shape[-1] // heads).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v)
    return out.transpose(1, 2).reshape(b, -1, out.shape[1] * out.shape[-1])


def grid(down):
    """(h, w) token grid of the tiny latent at a downsampling factor."""
    return LATENT[0] // down, LATENT[1] // down


def random_tokens(weights, references, seed):
    """Projected image tokens (R, T, cross) of R random reference images, from our (proven) projection."""
    with torch.no_grad():
        return our_tokens(weights, projection_inputs(weights.spec, references, seed))


def random_masks(references, hw, seed):
    """Soft masks (R, h, w) in [0, 1] given exactly at the attention grid (both resizes are then the identity)."""
    return torch.rand((references, *hw), generator=torch.Generator().manual_seed(seed))


def per_batch(cond, uncond, cond_or_uncond, per_chunk):
    """diffusers' ip_hidden_states (B, R, T, D): each batch row gets the tokens of its cond/uncond chunk."""
    return torch.stack([uncond if chunk == 1 else cond for chunk in cond_or_uncond for _ in range(per_chunk)])


def diffusers_processor(nested_list, layer, width, tokens, scales):
    """IPAdapterAttnProcessor2_0 for one layer, its to_k_ip/to_v_ip read from the tencent tensors of that layer."""
    proc = IPAdapterAttnProcessor2_0(hidden_size=width, cross_attention_dim=CONTEXT, num_tokens=tokens, scale=scales)
    for i, nested in enumerate(nested_list):
        proc.to_k_ip[i].weight.data.copy_(nested["ip_adapter"][f"{2 * layer + 1}.to_k_ip.weight"])
        proc.to_v_ip[i].weight.data.copy_(nested["ip_adapter"][f"{2 * layer + 1}.to_v_ip.weight"])
    return proc


def diffusers_attention(width, seed):
    """A random diffusers cross-attention of the tiny SD1.5 shape (HEADS heads of width // HEADS)."""
    torch.manual_seed(seed)
    return Attention(query_dim=width, cross_attention_dim=CONTEXT, heads=HEADS, dim_head=width // HEADS).eval()


def run_ours(attn, prompts, key, x, text, cond_or_uncond):
    """to_out(IPAdapterPatch(to_q(x), to_k(text), to_v(text))) as ComfyUI's attn2 replacement sees it."""
    patch = attention.IPAdapterPatch("SD1.5", prompts, sdpa_attention)
    opts = {"block": key[:2], "block_index": key[2], "n_heads": attn.heads, "cond_or_uncond": list(cond_or_uncond),
            "original_shape": (x.shape[0], 4, *LATENT)}
    with torch.no_grad():
        return attn.to_out[0](patch(attn.to_q(x), attn.to_k(text), attn.to_v(text), opts))


def run_diffusers(attn, x, text, ip_states, masks=None):
    """diffusers' processor through Attention.forward, masks as (1, R, h, w) per adapter."""
    kwargs = {} if masks is None else {"ip_adapter_masks": masks}
    with torch.no_grad():
        return attn(x, encoder_hidden_states=(text, ip_states), **kwargs)


def layer_weights(layer, scale):
    """Per-layer multipliers with scale at one layer only."""
    return tuple(scale if i == layer else 0.0 for i in range(len(blocks.patch_keys("SD1.5"))))


@pytest.fixture(scope="module")
def adapters(checkpoints):
    """The two SD1.5 adapters of the attention tests: ours and the raw tencent dicts diffusers reads."""
    return {name: (adapter.load(str(checkpoints[name])), diffusers_state_dict(checkpoints[name]))
            for name in (LINEAR, PLUS)}


def layer0_case(adapters, names, scales, cond_or_uncond, per_chunk, masked, references=1, concat=False):
    """Ours vs diffusers on SD1.5 layer 0 (input 1, width 32) for a set of adapters; returns both outputs."""
    key, layer, width, hw = ("input", 1, 0), 0, 32, grid(1)
    batch = len(cond_or_uncond) * per_chunk
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(batch, hw[0] * hw[1], width, generator=gen)
    text = torch.randn(batch, TEXT_TOKENS, CONTEXT, generator=gen)
    prompts, states, masks = [], [], []
    for i, (name, scale) in enumerate(zip(names, scales)):
        weights = adapters[name][0]
        cond, uncond = random_tokens(weights, references, 10 + i), random_tokens(weights, references, 20 + i)
        mask = random_masks(references, hw, 30 + i) if masked else None
        ref_weights = tuple(scale) if isinstance(scale, list) else (1.0,) * references
        lw = 1.0 if isinstance(scale, list) else scale
        states.append(per_batch(cond, uncond, cond_or_uncond, per_chunk))
        if concat:  # combine_embeds "concat": every reference's tokens in one softmax
            cond, uncond, ref_weights = cond.reshape(1, -1, cond.shape[-1]), uncond.reshape(1, -1, cond.shape[-1]), (1.0,)
        prompts.append(attention.ImagePrompt(weights, cond, uncond, layer_weights(layer, lw), ref_weights, mask))
        masks.append(None if mask is None else mask.unsqueeze(0))
    attn = diffusers_attention(width, seed=3)
    attn.set_processor(diffusers_processor([adapters[n][1] for n in names], layer, width,
                                           [s.shape[2] for s in states], list(scales)))
    ours = run_ours(attn, prompts, key, x, text, cond_or_uncond)
    theirs = run_diffusers(attn, x, text, states, masks if masked else None)
    return ours, theirs


# ---------------------------------------------------------------- attention: one layer


def test_layer0_is_input_1_on_sd15():
    assert blocks.layer_of_key("SD1.5")[("input", 1, 0)] == 0


@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
def test_one_adapter_matches_diffusers(adapters, masked):
    ours, theirs = layer0_case(adapters, [PLUS], [0.7], [1, 0], 1, masked)
    torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0)


@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
def test_two_adapters_match_diffusers(adapters, masked):
    ours, theirs = layer0_case(adapters, [LINEAR, PLUS], [0.7, 0.3], [1, 0], 1, masked)
    torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0)


@pytest.mark.parametrize("cond_or_uncond,per_chunk", [([1, 0], 2), ([0, 1], 1), ([0], 3), ([1], 1)])
def test_cond_uncond_chunks_match_diffusers_per_row_embeds(adapters, cond_or_uncond, per_chunk):
    ours, theirs = layer0_case(adapters, [LINEAR, PLUS], [0.7, 0.3], cond_or_uncond, per_chunk, masked=True)
    torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0)


def test_reference_weights_match_diffusers_per_image_scales(adapters):
    """Two references with masks: our ref_weights are diffusers' per-image scale list."""
    ours, theirs = layer0_case(adapters, [PLUS], [[0.7, 0.3]], [1, 0], 1, masked=True, references=2)
    torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0)


def test_unmasked_references_equal_diffusers_all_ones_masks(adapters):
    """Ours gives each reference its own softmax; diffusers does that only on its masked path (masks of ones)."""
    key, width = ("input", 1, 0), 32
    weights, nested = adapters[PLUS]
    cond, uncond = random_tokens(weights, 2, 11), random_tokens(weights, 2, 12)
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, grid(1)[0] * grid(1)[1], width, generator=gen)
    text = torch.randn(2, TEXT_TOKENS, CONTEXT, generator=gen)
    prompt = attention.ImagePrompt(weights, cond, uncond, layer_weights(0, 0.7), (1.0, 1.0))
    attn = diffusers_attention(width, seed=4)
    attn.set_processor(diffusers_processor([nested], 0, width, [cond.shape[1]], [0.7]))
    ours = run_ours(attn, [prompt], key, x, text, [1, 0])
    theirs = run_diffusers(attn, x, text, [per_batch(cond, uncond, [1, 0], 1)], [torch.ones(1, 2, *grid(1))])
    torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0)


def test_concat_references_equal_diffusers_joint_softmax(adapters):
    """combine_embeds 'concat' joins the references' tokens: diffusers' unmasked multi-image softmax."""
    ours, theirs = layer0_case(adapters, [PLUS], [0.7], [1, 0], 1, masked=False, references=2, concat=True)
    torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0)


def test_unfold_batch_matches_diffusers_per_row_images(adapters):
    """unfold_batch: reference r conditions latent r of each chunk, like diffusers' per-row image embeds."""
    key, width, per_chunk = ("input", 1, 0), 32, 2
    weights, nested = adapters[PLUS]
    cond, uncond = random_tokens(weights, per_chunk, 13), random_tokens(weights, per_chunk, 14)
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(2 * per_chunk, grid(1)[0] * grid(1)[1], width, generator=gen)
    text = torch.randn(2 * per_chunk, TEXT_TOKENS, CONTEXT, generator=gen)
    prompt = attention.ImagePrompt(weights, cond, uncond, layer_weights(0, 0.7), (1.0,) * per_chunk,
                                   unfold_batch=True)
    attn = diffusers_attention(width, seed=5)
    attn.set_processor(diffusers_processor([nested], 0, width, [cond.shape[1]], [0.7]))
    rows = torch.cat((uncond, cond)).unsqueeze(1)  # (B, 1, T, D): [u0, u1, c0, c1] for cond_or_uncond [1, 0]
    ours = run_ours(attn, [prompt], key, x, text, [1, 0])
    torch.testing.assert_close(ours, run_diffusers(attn, x, text, [rows]), atol=ATOL, rtol=0)


# ---------------------------------------------------------------- attention: every layer of a diffusers UNet


def our_key(diffusers_name):
    """ComfyUI attn2 key of a diffusers attn2 module name (SD1.5 block numbering)."""
    parts = diffusers_name.split(".")
    t = int(parts[parts.index("transformer_blocks") + 1])
    if parts[0] == "mid_block":
        return "middle", 0, t
    i, j = int(parts[1]), int(parts[3])
    return ("input", 3 * i + j + 1, t) if parts[0] == "down_blocks" else ("output", 3 * i + j, t)


def downsampling(diffusers_name):
    """Latent downsampling factor at a diffusers SD1.5 attention."""
    parts = diffusers_name.split(".")
    if parts[0] == "mid_block":
        return 8
    return 2 ** int(parts[1]) if parts[0] == "down_blocks" else 2 ** (3 - int(parts[1]))


@pytest.fixture(scope="module")
def tiny_unet(adapters):
    """A tiny diffusers SD1.5 UNet (widths 32/64/128/128, 2 heads, context 64), both adapters loaded by it."""
    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=LATENT[0], block_out_channels=(32, 64, 128, 128), layers_per_block=2,
                                cross_attention_dim=CONTEXT, attention_head_dim=HEADS).eval()
    unet._load_ip_adapter_weights([adapters[LINEAR][1], adapters[PLUS][1]], low_cpu_mem_usage=False)
    return unet


def test_diffusers_processor_order_is_our_layer_order(tiny_unet, adapters):
    """Each diffusers attn2 holds the to_k_ip/to_v_ip that our layer table assigns to its ComfyUI key."""
    layer_of = blocks.layer_of_key("SD1.5")
    attn2 = [(n, m) for n, m in tiny_unet.named_modules() if n.endswith("attn2")]
    assert sorted(layer_of[our_key(n)] for n, _ in attn2) == list(range(16))
    for name, module in attn2:
        layer = layer_of[our_key(name)]
        for i, adapter_name in enumerate((LINEAR, PLUS)):
            ip = adapters[adapter_name][0].ip_adapter[str(2 * layer + 1)]
            assert torch.equal(module.processor.to_k_ip[i].weight, ip.to_k_ip.weight), name
            assert torch.equal(module.processor.to_v_ip[i].weight, ip.to_v_ip.weight), name


@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
def test_every_sd15_layer_matches_diffusers_unet(tiny_unet, adapters, masked):
    """Files -> diffusers' encoder_hid_proj + processors vs files -> our projection + patch, at all 16 layers."""
    gen = torch.Generator().manual_seed(9)
    (lin, _), (plus, _) = adapters[LINEAR], adapters[PLUS]
    embeds = {n: (projection_inputs(adapters[n][0].spec, 1, 40 + i), projection_inputs(adapters[n][0].spec, 1, 50 + i))
              for i, n in enumerate((LINEAR, PLUS))}
    with torch.no_grad():
        ours_tokens = {n: (our_tokens(adapters[n][0], c), our_tokens(adapters[n][0], u))
                       for n, (c, u) in embeds.items()}
        # diffusers' pipeline layout: per adapter (batch, images, ...) with batch = [uncond, cond]
        theirs_states = tiny_unet.encoder_hid_proj([torch.stack((u["clip"], c["clip"])) for c, u in embeds.values()])
    scales = [0.7, 0.3]
    text = torch.randn(2, TEXT_TOKENS, CONTEXT, generator=gen)
    for name, module in tiny_unet.named_modules():
        if not name.endswith("attn2"):
            continue
        hw = grid(downsampling(name))
        width = module.to_q.in_features
        x = torch.randn(2, hw[0] * hw[1], width, generator=gen)
        masks = [random_masks(1, hw, 60 + i) if masked else None for i in range(2)]
        prompts = [attention.ImagePrompt(w, *ours_tokens[n], (s,) * 16, masks=m)
                   for (w, n, s, m) in ((lin, LINEAR, scales[0], masks[0]), (plus, PLUS, scales[1], masks[1]))]
        module.processor.scale = scales
        ours = run_ours(module, prompts, our_key(name), x, text, [1, 0])
        theirs = run_diffusers(module, x, text, theirs_states, [m.unsqueeze(0) for m in masks] if masked else None)
        torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0, msg=lambda m: f"{name}: {m}")
