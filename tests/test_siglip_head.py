"""SigLIP attention-pooling head: parity with transformers' pooler_output, end to end through ComfyUI, errors."""
import json

import pytest
import torch
from safetensors.torch import save_file

import comfy.clip_vision
import comfy.model_management
import comfy.utils
from ipadapter_kit.ipadapter_core import siglip_head
from ipadapter_kit.ipadapter_core.errors import CorruptFileError, UnknownFormatError, UnsafeFileError

# A tiny SigLIP vision tower with the so400m geometry where it matters (384px, patch 14 -> 729 tokens).
TINY = dict(hidden_size=44, num_attention_heads=2, intermediate_size=88, image_size=384, patch_size=14,
            num_hidden_layers=2)
# The same model as a ComfyUI CLIP-vision config (cf. comfy/clip_vision_siglip_384.json).
COMFY_CONFIG = {
    "num_channels": 3, "hidden_act": "gelu_pytorch_tanh", "hidden_size": 44, "image_size": 384,
    "intermediate_size": 88, "model_type": "siglip_vision_model", "num_attention_heads": 2,
    "num_hidden_layers": 2, "patch_size": 14, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
}
HEAD = "vision_model.head."


def randomize(module, seed):
    """Seeded random values for every parameter (biases and norms too, so none of them goes untested)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if p.ndim >= 2:
                p.copy_(noise / p[0].numel() ** 0.5)
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * noise)
            else:
                p.copy_(0.1 * noise)
    return module


@pytest.fixture(scope="module")
def hf_model():
    transformers = pytest.importorskip("transformers")
    config = transformers.SiglipVisionConfig(**TINY)  # hidden_act gelu_pytorch_tanh, layer_norm_eps 1e-6
    torch.manual_seed(0)
    model = randomize(transformers.SiglipVisionModel(config), seed=0).eval()
    assert model.config.layer_norm_eps == 1e-6 and model.config.hidden_act == "gelu_pytorch_tanh"
    return model


@pytest.fixture(scope="module")
def file_sd(hf_model):
    """The model's tensors as they sit in google/siglip-so400m-patch14-384's file ('vision_model.*' keys).

    transformers 5 drops the 'vision_model.' prefix from SiglipVisionModel.state_dict() (older versions keep it).
    """
    sd = {k if k.startswith("vision_model.") else "vision_model." + k: v.detach().clone().contiguous()
          for k, v in hf_model.state_dict().items()}
    assert sum(k.startswith(HEAD) for k in sd) == len(siglip_head.HEAD_KEYS)
    return sd


@pytest.fixture(scope="module")
def siglip_file(file_sd, tmp_path_factory):
    path = tmp_path_factory.mktemp("siglip") / "model.safetensors"
    save_file(file_sd, str(path))
    return path


def hand_head(dim=8, inter=16, seed=0):
    """Head tensors (file keys) built by hand, for tests that need no transformers."""
    shapes = {
        "probe": (1, 1, dim), "attention.in_proj_weight": (3 * dim, dim), "attention.in_proj_bias": (3 * dim,),
        "attention.out_proj.weight": (dim, dim), "attention.out_proj.bias": (dim,),
        "layernorm.weight": (dim,), "layernorm.bias": (dim,), "mlp.fc1.weight": (inter, dim),
        "mlp.fc1.bias": (inter,), "mlp.fc2.weight": (dim, inter), "mlp.fc2.bias": (dim,),
    }
    gen = torch.Generator().manual_seed(seed)
    return {HEAD + k: torch.randn(s, generator=gen) * 0.1 for k, s in shapes.items()}


# --- parity with transformers ---------------------------------------------------------------------------

def test_attribute_names_are_the_checkpoint_keys(file_sd):
    head = siglip_head.SiglipPoolingHead(dim=44, heads=2, intermediate=88)
    assert set(head.state_dict()) == {k[len(HEAD):] for k in file_sd if k.startswith(HEAD)}
    assert set(head.state_dict()) == set(siglip_head.HEAD_KEYS)
    assert head.layernorm.eps == 1e-6


def test_head_equals_transformers_pooler_output(hf_model, file_sd):
    head = siglip_head.SiglipPoolingHead(dim=44, heads=2, intermediate=88)
    head.load_state_dict(siglip_head.head_state_dict(file_sd), strict=True)
    head.eval()
    pixels = torch.randn(3, 3, 384, 384, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        out = hf_model(pixel_values=pixels)
        pooled = head(out.last_hidden_state)
    assert out.last_hidden_state.shape == (3, 729, 44)
    assert pooled.shape == (3, 44)
    torch.testing.assert_close(pooled, out.pooler_output, atol=1e-5, rtol=0)
    # not trivially equal to some token or the mean: the probe really attends
    assert (pooled - out.last_hidden_state.mean(1)).abs().max() > 1e-2


def test_head_state_dict_accepts_keys_without_vision_model_prefix(file_sd):
    bare = {k[len("vision_model."):]: v for k, v in file_sd.items()}
    assert siglip_head.head_state_dict(bare).keys() == siglip_head.head_state_dict(file_sd).keys()
    head = siglip_head.build_head(siglip_head.head_state_dict(bare), heads=2)
    torch.testing.assert_close(head.probe, file_sd[HEAD + "probe"], atol=0, rtol=0)


@pytest.mark.parametrize("fp32", [True, False], ids=["fp32-text-enc", "comfy-default-fp16"])
def test_end_to_end_through_comfy_clip_vision(hf_model, siglip_file, tmp_path, monkeypatch, fp32):
    """ComfyUI's own SigLIP CLIP_VISION + our head == transformers' pooler_output on the same pixels."""
    monkeypatch.setattr(comfy.model_management.args, "fp32_text_enc", fp32)
    config_path = tmp_path / "siglip_tiny.json"
    config_path.write_text(json.dumps(COMFY_CONFIG))
    clip = comfy.clip_vision.ClipVisionModel(str(config_path))
    missing, unexpected = clip.load_sd(comfy.utils.load_torch_file(str(siglip_file)))
    assert missing == []
    assert sorted(unexpected) == sorted(HEAD + k for k in siglip_head.HEAD_KEYS)  # ComfyUI ignores the head

    image = torch.rand(2, 300, 420, 3, generator=torch.Generator().manual_seed(3))  # ComfyUI IMAGE, not square
    tokens = clip.encode_image(image)["last_hidden_state"]
    assert tokens.shape == (2, 729, 44)

    head = siglip_head.load_head(str(siglip_file), heads=2)
    pooled = head(tokens)

    pixels = comfy.clip_vision.clip_preprocess(image, size=384, mean=[0.5] * 3, std=[0.5] * 3).float()
    with torch.no_grad():
        expected = hf_model(pixel_values=pixels).pooler_output
    # ComfyUI's SigLIP LayerNorms use torch's default eps 1e-5 (SigLIP: 1e-6), and by default it keeps the
    # text/vision encoder weights in fp16: both shift the result slightly.
    torch.testing.assert_close(pooled, expected, atol=1e-4 if fp32 else 5e-3, rtol=0)


# --- choosing the head count ----------------------------------------------------------------------------

def test_pick_heads():
    assert siglip_head.pick_heads(1152) == 16  # so400m
    assert siglip_head.pick_heads(44, {"num_attention_heads": 2}) == 2
    with open(comfy.clip_vision.__file__.replace("clip_vision.py", "clip_vision_siglip_384.json")) as f:
        assert siglip_head.pick_heads(1152, json.load(f)) == 16
    with pytest.raises(UnknownFormatError, match="heads="):
        siglip_head.pick_heads(44)


def test_load_head_picks_heads_from_config(siglip_file):
    with pytest.raises(UnknownFormatError, match="width 44"):
        siglip_head.load_head(str(siglip_file))
    head = siglip_head.load_head(str(siglip_file), config=COMFY_CONFIG)
    assert head.attention.num_heads == 2 and not head.training


# --- errors ---------------------------------------------------------------------------------------------

def test_file_without_head_says_what_to_use(file_sd, tmp_path):
    path = tmp_path / "sigclip_vision_patch14_384.safetensors"
    save_file({k: v for k, v in file_sd.items() if not k.startswith(HEAD)}, str(path))
    with pytest.raises(UnknownFormatError) as info:
        siglip_head.load_head(str(path), heads=2)
    message = str(info.value)
    assert "sigclip_vision_patch14_384.safetensors" in message
    assert "no vision_model.head.* tensors" in message and "attention-pooling head" in message
    assert "google/siglip-so400m-patch14-384" in message and "model.safetensors" in message


def test_unrelated_head_weight_is_not_a_pooling_head(tmp_path):
    path = tmp_path / "classifier.safetensors"
    save_file({"head.weight": torch.zeros(4, 8), "head.bias": torch.zeros(4)}, str(path))
    with pytest.raises(UnknownFormatError, match="no vision_model.head"):
        siglip_head.load_head(str(path), heads=2)


@pytest.mark.parametrize("keep", [0.5, 0.999, 16])
def test_truncated_file_is_corrupt(siglip_file, tmp_path, keep):
    data = siglip_file.read_bytes()
    path = tmp_path / "model.safetensors"
    path.write_bytes(data[:int(len(data) * keep) if isinstance(keep, float) else keep])
    with pytest.raises(CorruptFileError, match="truncated or damaged"):
        siglip_head.load_head(str(path), heads=2)


def test_garbage_file_is_corrupt(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(CorruptFileError):
        siglip_head.load_head(str(path), heads=2)


@pytest.mark.parametrize("key, shape", [
    ("attention.in_proj_weight", (16, 8)),
    ("mlp.fc2.weight", (16, 8)),
    ("layernorm.bias", (9,)),
    ("probe", (1, 2, 8)),
])
def test_wrong_shape_names_key_and_shape(tmp_path, key, shape):
    sd = hand_head()
    sd[HEAD + key] = torch.zeros(shape)
    path = tmp_path / "model.safetensors"
    save_file(sd, str(path))
    with pytest.raises(UnknownFormatError) as info:
        siglip_head.load_head(str(path), heads=2)
    assert f"vision_model.head.{key}" in str(info.value) and str(tuple(shape)) in str(info.value)


def test_missing_head_tensor_is_named(tmp_path):
    sd = hand_head()
    del sd[HEAD + "mlp.fc1.bias"]
    path = tmp_path / "model.safetensors"
    save_file(sd, str(path))
    with pytest.raises(UnknownFormatError, match="mlp.fc1.bias"):
        siglip_head.load_head(str(path), heads=2)


def test_heads_must_divide_width():
    with pytest.raises(siglip_head.IncompatibleModelError, match="not divisible"):
        siglip_head.build_head(siglip_head.head_state_dict(hand_head(dim=8)), heads=3)


def test_pickle_files_are_refused(tmp_path):
    path = tmp_path / "pytorch_model.bin"
    torch.save(hand_head(), str(path))
    with pytest.raises(UnsafeFileError, match="safetensors"):
        siglip_head.load_head(str(path), heads=2)


# --- only the head is read ------------------------------------------------------------------------------

def test_only_head_tensors_are_read(tmp_path, monkeypatch):
    """The tower's other tensors (800 MB in so400m) are never materialised: only the 11 head tensors are."""
    sd = hand_head(dim=8, inter=16)
    sd["vision_model.encoder.layers.0.mlp.fc1.weight"] = torch.zeros(4096, 1024)  # 16 MiB the loader must skip
    sd["vision_model.post_layernorm.weight"] = torch.ones(8)
    path = tmp_path / "model.safetensors"
    save_file(sd, str(path))

    real_safe_open = siglip_head.safe_open
    read = []

    class Spy:
        def __init__(self, *args, **kwargs):
            self.handle = real_safe_open(*args, **kwargs)

        def __enter__(self):
            self.inner = self.handle.__enter__()
            return self

        def __exit__(self, *exc):
            return self.handle.__exit__(*exc)

        def keys(self):
            return self.inner.keys()

        def get_tensor(self, key):
            read.append(key)
            return self.inner.get_tensor(key)

        def get_slice(self, key):
            read.append(key)
            return self.inner.get_slice(key)

    monkeypatch.setattr(siglip_head, "safe_open", Spy)
    head = siglip_head.load_head(str(path), heads=2)
    assert sorted(read) == sorted(HEAD + k for k in siglip_head.HEAD_KEYS)
    torch.testing.assert_close(head.mlp.fc1.weight, sd[HEAD + "mlp.fc1.weight"], atol=0, rtol=0)
