"""Test host only: stand-ins for MinusZone's ComfyUI-Kolors-MZ nodes the IPAdapter_plus Kolors examples use, on a
tiny Kolors (tiny_configs.KOLORS_UNET, a tiny ChatGLM3 of width KOLORS_CHATGLM_WIDTH).

Same node ids, inputs, widgets and outputs as MZ's. What they load is the tiny world's:
- MZ_KolorsUNETLoaderV2: a diffusers-layout Kolors UNet from models/unet; the diffusion model keeps encoder_hid_proj
  and maps the (ChatGLM-wide) context through it in its forward, as MZ's KolorsUNetModel does; attn2 sees the
  projected context, so ComfyUI's attn2 patches work unchanged.
- MZ_KolorsUNETLoader (MZ's legacy loader): the same file as a plain SDXL-layout UNet plus encoder_hid_proj as a
  separate TorchLinear, which MZ_ChatGLM3 applies to the text.
- MZ_ChatGLM3Loader / MZ_ChatGLM3_V2 / MZ_ChatGLM3: NOT ChatGLM3. A two-layer byte-level encoder read from
  models/LLM (the tiny world's chatglm3-8bit.safetensors) giving MZ's outputs at the tiny width: 256 token states
  of the penultimate layer and the last token of the last layer as pooled output. Text in, CONDITIONING out;
  different prompts give different conditionings, nothing more is claimed.
"""
import os

import torch

import comfy.model_base
import comfy.model_management
import comfy.model_patcher
import comfy.supported_models
import comfy.utils
import folder_paths
from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

import tiny_configs

folder_paths.add_model_folder_path("LLM", os.path.join(folder_paths.models_dir, "LLM"))
CATEGORY = "MinusZone - Kolors (test stand-in)"
HID_PROJ_KEYS = ("encoder_hid_proj.weight", "encoder_hid_proj.bias")


class TinyKolorsUNet(UNetModel):
    """The SDXL-layout UNet that first maps the ChatGLM-wide context through encoder_hid_proj (MZ's V2)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.encoder_hid_proj = kwargs["operations"].Linear(
            tiny_configs.KOLORS_CHATGLM_WIDTH, kwargs["context_dim"], dtype=self.dtype, device=kwargs.get("device"))

    def forward(self, x, timesteps=None, context=None, y=None, **kwargs):
        if context is not None:
            context = self.encoder_hid_proj(context.to(self.encoder_hid_proj.weight.dtype))
        return super().forward(x, timesteps, context, y, **kwargs)


class TinyKolorsModel(comfy.model_base.SDXL):
    """SDXL conditioning (pooled text + six size embeddings) on Kolors' noise schedule."""

    def __init__(self, model_config, model_type=comfy.model_base.ModelType.EPS, device=None, unet_model=UNetModel):
        comfy.model_base.BaseModel.__init__(self, model_config, model_type, device=device, unet_model=unet_model)
        self.embedder = comfy.model_base.Timestep(256)
        self.noise_augmentor = comfy.model_base.CLIPEmbeddingNoiseAugmentation(
            noise_schedule_config=dict(tiny_configs.KOLORS_SAMPLING), timestep_dim=tiny_configs.KOLORS_CHATGLM_WIDTH)


class TinyKolors(comfy.supported_models.SDXL):
    unet_config = dict(tiny_configs.KOLORS_UNET)
    unet_extra_config = dict(tiny_configs.SDXL_HEADS)
    sampling_settings = dict(tiny_configs.KOLORS_SAMPLING)
    keep_hid_proj = True  # V2: encoder_hid_proj lives on the diffusion model

    def get_model(self, state_dict, prefix="", device=None):
        unet = TinyKolorsUNet if self.keep_hid_proj else UNetModel
        return TinyKolorsModel(self, self.model_type(state_dict, prefix), device=device, unet_model=unet)


def kolors_config(keep_hid_proj=True):
    """The tiny Kolors model config (V2 keeps encoder_hid_proj on the diffusion model, the legacy loader does not)."""
    config = TinyKolors(dict(tiny_configs.KOLORS_UNET))
    config.keep_hid_proj = keep_hid_proj
    return config


def from_diffusers(sd, config):
    """ComfyUI-layout UNet weights from a diffusers-layout Kolors state dict (encoder_hid_proj left in sd)."""
    if any(key not in sd for key in HID_PROJ_KEYS):
        raise RuntimeError(f"not a Kolors UNet: no {' / '.join(HID_PROJ_KEYS)}")
    names = comfy.utils.unet_to_diffusers(config.unet_config)
    return {comfy_key: sd[key] for key, comfy_key in names.items() if key in sd}


def load_kolors_unet(unet_name, keep_hid_proj):
    """(ModelPatcher, encoder_hid_proj Linear) for a tiny Kolors UNet file in models/unet."""
    sd = comfy.utils.load_torch_file(folder_paths.get_full_path_or_raise("unet", unet_name))
    config = kolors_config(keep_hid_proj)
    weights = from_diffusers(sd, config)
    hid_proj = torch.nn.Linear(*reversed(sd[HID_PROJ_KEYS[0]].shape))
    hid_proj.load_state_dict({"weight": sd[HID_PROJ_KEYS[0]], "bias": sd[HID_PROJ_KEYS[1]]})
    if keep_hid_proj:
        weights.update({key: sd[key] for key in HID_PROJ_KEYS})
    mm = comfy.model_management
    dtype = mm.unet_dtype(model_params=comfy.utils.calculate_parameters(weights),
                          supported_dtypes=config.supported_inference_dtypes)
    config.set_inference_dtype(dtype, mm.unet_manual_cast(dtype, mm.get_torch_device(),
                                                          config.supported_inference_dtypes))
    model = config.get_model(weights, "")
    missing = sorted(set(model.diffusion_model.state_dict()) - set(weights))
    if missing:
        raise RuntimeError(f"{unet_name} is not the tiny Kolors UNet: it lacks {missing[:5]}")
    model.load_model_weights(weights, "")
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(),
                                               offload_device=mm.unet_offload_device())
    return patcher, hid_proj


class MZ_KolorsUNETLoaderV2:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"unet_name": (folder_paths.get_filename_list("unet"),)}}

    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("model",)
    FUNCTION = "load_unet"
    CATEGORY = CATEGORY

    def load_unet(self, unet_name):
        return (load_kolors_unet(unet_name, keep_hid_proj=True)[0],)


class MZ_KolorsUNETLoader:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"unet_name": (folder_paths.get_filename_list("unet"),)}}

    RETURN_TYPES = ("MODEL", "TorchLinear")
    RETURN_NAMES = ("model", "hid_proj")
    FUNCTION = "load_unet"
    CATEGORY = CATEGORY + "/Legacy"

    def load_unet(self, unet_name):
        return load_kolors_unet(unet_name, keep_hid_proj=False)


class TinyChatGLM(torch.nn.Module):
    """Byte tokens -> embedding -> two tanh layers (the stand-in for ChatGLM3's penultimate and last states)."""

    def __init__(self, sd):
        super().__init__()
        self.embedding = torch.nn.Embedding.from_pretrained(sd["embedding.weight"])
        self.layers = torch.nn.ModuleList(torch.nn.Linear(*reversed(sd[f"layers.{i}.weight"].shape)) for i in (0, 1))
        self.load_state_dict(sd)

    def forward(self, text):
        ids = list(text.encode("utf-8"))[:tiny_configs.KOLORS_CHATGLM_TOKENS]
        ids = [0] * (tiny_configs.KOLORS_CHATGLM_TOKENS - len(ids)) + ids  # padded on the left, as ChatGLM pads
        states = self.embedding(torch.tensor([ids]))
        penultimate = torch.tanh(self.layers[0](states))
        last = torch.tanh(self.layers[1](penultimate))
        return penultimate, last[:, -1]


class MZ_ChatGLM3Loader:
    @classmethod
    def INPUT_TYPES(cls):
        names = [name for name in folder_paths.get_filename_list("LLM") if name.endswith("safetensors")]
        return {"required": {"chatglm3_checkpoint": (names,)}}

    RETURN_TYPES = ("CHATGLM3MODEL",)
    RETURN_NAMES = ("chatglm3_model",)
    FUNCTION = "load_chatglm3"
    CATEGORY = CATEGORY

    def load_chatglm3(self, chatglm3_checkpoint):
        sd = comfy.utils.load_torch_file(folder_paths.get_full_path_or_raise("LLM", chatglm3_checkpoint))
        return ({"text_encoder": TinyChatGLM(sd).eval()},)


def encode(chatglm3_model, text):
    """(prompt states (1, 256, width), pooled (1, width)) of the tiny ChatGLM."""
    with torch.no_grad():
        return chatglm3_model["text_encoder"](text)


class MZ_ChatGLM3TextEncodeV2:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"chatglm3_model": ("CHATGLM3MODEL",),
                             "text": ("STRING", {"multiline": True, "dynamicPrompts": True})}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"
    CATEGORY = CATEGORY

    def encode(self, chatglm3_model, text):
        states, pooled = encode(chatglm3_model, text)
        return ([[states, {"pooled_output": pooled}]],)


class MZ_ChatGLM3TextEncode:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"chatglm3_model": ("CHATGLM3MODEL",),
                             "text": ("STRING", {"multiline": True, "dynamicPrompts": True}),
                             "hid_proj": ("TorchLinear",)}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"
    CATEGORY = CATEGORY + "/Legacy"

    def encode(self, chatglm3_model, text, hid_proj):
        states, pooled = encode(chatglm3_model, text)
        with torch.no_grad():
            states = hid_proj(states.to(hid_proj.weight.dtype))
        return ([[states, {"pooled_output": pooled}]],)


NODE_CLASS_MAPPINGS = {
    "MZ_KolorsUNETLoaderV2": MZ_KolorsUNETLoaderV2,
    "MZ_KolorsUNETLoader": MZ_KolorsUNETLoader,
    "MZ_ChatGLM3Loader": MZ_ChatGLM3Loader,
    "MZ_ChatGLM3_V2": MZ_ChatGLM3TextEncodeV2,
    "MZ_ChatGLM3": MZ_ChatGLM3TextEncode,
}
