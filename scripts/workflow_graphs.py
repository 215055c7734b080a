"""Compact descriptions of the example workflows: {key: (node type, widget values, {input: (source, slot)})}."""

CKPT = "v1-5-pruned-emaonly.safetensors"
CLIP_H = "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors"


def txt2img(model_source, prompt, prefix, **extra_nodes):
    """The usual SD1.5 text-to-image tail, sampling with model_source."""
    return {
        "ckpt": ("CheckpointLoaderSimple", {"ckpt_name": CKPT}, {}),
        **extra_nodes,
        "pos": ("CLIPTextEncode", {"text": prompt}, {"clip": ("ckpt", 1)}),
        "neg": ("CLIPTextEncode", {"text": "blurry, low quality, watermark"}, {"clip": ("ckpt", 1)}),
        "latent": ("EmptyLatentImage", {"width": 512, "height": 512, "batch_size": 1}, {}),
        "sampler": ("KSampler", {"seed": 42, "steps": 25, "cfg": 6.5, "sampler_name": "dpmpp_2m",
                                 "scheduler": "karras", "denoise": 1.0},
                    {"model": model_source, "positive": ("pos", 0), "negative": ("neg", 0),
                     "latent_image": ("latent", 0)}),
        "decode": ("VAEDecode", {}, {"samples": ("sampler", 0), "vae": ("ckpt", 2)}),
        "save": ("SaveImage", {"filename_prefix": prefix}, {"images": ("decode", 0)}),
    }


def advanced(weight_type, weight=1.0, **widgets):
    return {"weight": weight, "weight_type": weight_type, "start_at": 0.0, "end_at": 1.0, "weight_composition": 1.0,
            "combine_embeds": "concat", "embeds_scaling": "V only", **widgets}


def _loader_nodes(ipadapter_file="ip-adapter-plus_sd15.safetensors"):
    """The adapter and its CLIP-vision encoder by file name (widgets the frontend checks for missing files)."""
    return {
        "ipa_file": ("IPAKitModelLoader", {"ipadapter_file": ipadapter_file}, {}),
        "clip_vision": ("CLIPVisionLoader", {"clip_name": CLIP_H}, {}),
    }


WORKFLOWS = {
    "ipadapter_basic": {
        "description": "Image prompt: the reference image steers an SD1.5 picture (the STANDARD adapter and its "
                       "CLIP-vision encoder, each in its own loader).",
        "nodes": txt2img(("apply", 0), "a photo of a cat in a garden", "ipadapter_basic",
                         **_loader_nodes("ip-adapter_sd15.safetensors"),
                         reference=("LoadImage", {"image": "reference_a.png"}, {}),
                         apply=("IPAKitApply", {"weight": 0.8, "weight_type": "linear"},
                                {"model": ("ckpt", 0), "ipadapter": ("ipa_file", 0), "image": ("reference", 0),
                                 "clip_vision": ("clip_vision", 0)})),
    },
    "ipadapter_style_transfer": {
        "description": "Style transfer: the reference's style only, through the style blocks (InstantStyle).",
        "nodes": txt2img(("apply", 0), "a lighthouse on a cliff", "ipadapter_style",
                         **_loader_nodes(), reference=("LoadImage", {"image": "reference_a.png"}, {}),
                         apply=("IPAKitApplyAdvanced", advanced("style transfer", 1.0),
                                {"model": ("ckpt", 0), "ipadapter": ("ipa_file", 0), "image": ("reference", 0),
                                 "clip_vision": ("clip_vision", 0)})),
    },
    "ipadapter_composition": {
        "description": "Composition: the reference's layout only, through the composition blocks.",
        "nodes": txt2img(("apply", 0), "a watercolor painting of a harbour", "ipadapter_composition",
                         **_loader_nodes(), reference=("LoadImage", {"image": "reference_b.png"}, {}),
                         apply=("IPAKitApplyAdvanced", advanced("composition", 1.0),
                                {"model": ("ckpt", 0), "ipadapter": ("ipa_file", 0), "image": ("reference", 0),
                                 "clip_vision": ("clip_vision", 0)})),
    },
    "ipadapter_masked_two_subjects": {
        "description": "Two references in one node, each with its own weight and mask (left / right half).",
        "nodes": txt2img(("apply", 0), "two friends standing side by side", "ipadapter_two_subjects",
                         **_loader_nodes(),
                         left_image=("LoadImage", {"image": "reference_a.png"}, {}),
                         right_image=("LoadImage", {"image": "reference_b.png"}, {}),
                         references=("ImageBatch", {}, {"image1": ("left_image", 0), "image2": ("right_image", 0)}),
                         canvas=("SolidMask", {"value": 0.0, "width": 512, "height": 512}, {}),
                         half=("SolidMask", {"value": 1.0, "width": 256, "height": 512}, {}),
                         left_mask=("MaskComposite", {"x": 0, "y": 0, "operation": "add"},
                                    {"destination": ("canvas", 0), "source": ("half", 0)}),
                         right_mask=("MaskComposite", {"x": 256, "y": 0, "operation": "add"},
                                     {"destination": ("canvas", 0), "source": ("half", 0)}),
                         left_as_image=("MaskToImage", {}, {"mask": ("left_mask", 0)}),
                         right_as_image=("MaskToImage", {}, {"mask": ("right_mask", 0)}),
                         mask_batch=("ImageBatch", {}, {"image1": ("left_as_image", 0),
                                                        "image2": ("right_as_image", 0)}),
                         masks=("ImageToMask", {"channel": "red"}, {"image": ("mask_batch", 0)}),
                         apply=("IPAKitApplyAdvanced",
                                advanced("linear", 0.9, combine_embeds="separate", reference_weights="1.0, 0.8"),
                                {"model": ("ckpt", 0), "ipadapter": ("ipa_file", 0), "image": ("references", 0),
                                 "attn_mask": ("masks", 0), "clip_vision": ("clip_vision", 0)})),
    },
    "ipadapter_controlnet_lora": {
        "description": "IP-Adapter with a LoRA on the model and a ControlNet on the conditioning.",
        "nodes": {
            **txt2img(("apply", 0), "a portrait in a sunlit studio", "ipadapter_controlnet_lora",
                      lora=("LoraLoader", {"lora_name": "style_lora_sd15.safetensors", "strength_model": 0.8,
                                           "strength_clip": 0.8}, {"model": ("ckpt", 0), "clip": ("ckpt", 1)}),
                      **_loader_nodes(),
                      reference=("LoadImage", {"image": "reference_a.png"}, {}),
                      apply=("IPAKitApply", {"weight": 0.7},
                             {"model": ("lora", 0), "ipadapter": ("ipa_file", 0), "image": ("reference", 0),
                              "clip_vision": ("clip_vision", 0)}),
                      hint=("LoadImage", {"image": "reference_b.png"}, {}),
                      controlnet=("ControlNetLoader",
                                  {"control_net_name": "control_v11p_sd15_canny_fp16.safetensors"}, {}),
                      control=("ControlNetApplyAdvanced", {"strength": 0.8, "start_percent": 0.0, "end_percent": 1.0},
                               {"positive": ("pos", 0), "negative": ("neg", 0), "control_net": ("controlnet", 0),
                                "image": ("hint", 0)})),
        },
    },
}

WORKFLOWS["ipadapter_faceid"] = {
    "description": "FaceID Plus v2 with its LoRA: a face photo -> InsightFace identity + CLIP crop -> SD1.5. "
                   "Needs ip-adapter-faceid-plusv2_sd15.bin in models/ipadapter (h94/IP-Adapter-FaceID), its LoRA in "
                   "models/loras and the buffalo_l InsightFace pack in models/insightface/models/. Only use faces "
                   "of people who agreed to it.",
    # what the Unified FaceID Loader's FACEID PLUS V2 preset does, one file per loader: the LoRA file at 0.6 on the
    # model, the adapter (plus_version v2), ViT-H for the face crops and buffalo_l
    "nodes": txt2img(("apply", 0), "a portrait photo of a person in a park, natural light", "ipadapter_faceid",
                     lora=("LoraLoaderModelOnly", {"lora_name": "ip-adapter-faceid-plusv2_sd15_lora.safetensors",
                                                   "strength_model": 0.6}, {"model": ("ckpt", 0)}),
                     **_loader_nodes("ip-adapter-faceid-plusv2_sd15.bin"),
                     insightface=("IPAKitInsightFaceLoader", {"pack": "buffalo_l", "provider": "CPU",
                                                              "det_size": 640}, {}),
                     face=("LoadImage", {"image": "face_a.png"}, {}),
                     apply=("IPAKitApplyFaceID", {"weight": 0.85, "weight_faceidv2": 1.0,
                                                  "plus_version": "v2 (shortcut)"},
                            {"model": ("lora", 0), "ipadapter": ("ipa_file", 0), "insightface": ("insightface", 0),
                             "image": ("face", 0), "clip_vision": ("clip_vision", 0)}),
                     crops=("PreviewImage", {}, {"images": ("apply", 1)})),
}

WORKFLOWS["ipadapter_style_and_composition"] = {
    "description": "Style from one reference and composition from another, each with its own weight, in one node.",
    "nodes": txt2img(("apply", 0), "a cottage by a lake", "ipadapter_style_composition", **_loader_nodes(),
                     style=("LoadImage", {"image": "reference_a.png"}, {}),
                     layout=("LoadImage", {"image": "reference_b.png"}, {}),
                     apply=("IPAKitStyleComposition", {"weight_style": 1.0, "weight_composition": 0.8},
                            {"model": ("ckpt", 0), "ipadapter": ("ipa_file", 0), "image_style": ("style", 0),
                             "image_composition": ("layout", 0), "clip_vision": ("clip_vision", 0)})),
}
WORKFLOWS["ipadapter_tiled_non_square"] = {
    "description": "A wide reference cut into square tiles so nothing is cropped; each tile conditions its part "
                   "of a wide picture.",
    "nodes": txt2img(("apply", 0), "a wide mountain panorama", "ipadapter_tiled", **_loader_nodes(),
                     reference=("LoadImage", {"image": "reference_a.png"}, {}),
                     wide=("ImageScale", {"upscale_method": "bicubic", "width": 768, "height": 320, "crop": "disabled"},
                           {"image": ("reference", 0)}),
                     apply=("IPAKitApplyTiled", {"weight": 0.9, "mode": "tiles with masks", "overlap": 0.15},
                            {"model": ("ckpt", 0), "ipadapter": ("ipa_file", 0), "image": ("wide", 0),
                             "clip_vision": ("clip_vision", 0)}),
                     tiles=("PreviewImage", {}, {"images": ("apply", 1)})),
}
WORKFLOWS["ipadapter_embeds_save_load"] = {
    "description": "Encode once, save the embeds (.safetensors, never pickle), load saved ones, combine, apply.",
    "nodes": txt2img(("apply", 0), "a bowl of fruit on a table", "ipadapter_embeds", **_loader_nodes(),
                     reference=("LoadImage", {"image": "reference_a.png"}, {}),
                     encode=("IPAKitEncode", {"weight": 1.0}, {"ipadapter": ("ipa_file", 0), "image": ("reference", 0),
                                                               "clip_vision": ("clip_vision", 0)}),
                     save=("IPAKitSaveEmbeds", {"filename_prefix": "ipadapter_embeds"}, {"embeds": ("encode", 0)}),
                     saved=("IPAKitLoadEmbeds", {"embeds_file": "reference_embeds.safetensors"}, {}),
                     combined=("IPAKitCombineEmbeds", {"method": "average"},
                               {"embed1": ("encode", 0), "embed2": ("saved", 0)}),
                     apply=("IPAKitApplyAdvanced", advanced("linear", 0.9),
                            {"model": ("ckpt", 0), "ipadapter": ("ipa_file", 0), "embeds": ("combined", 0)})),
}
WORKFLOWS["ipadapter_animation_weights"] = {
    "description": "A batch (or AnimateDiff) of frames where the image prompt fades out frame by frame: Frame "
                   "Weights gives one weight per latent and plots the schedule.",
    "nodes": txt2img(("apply", 0), "a paper boat on a stream", "ipadapter_animation", **_loader_nodes(),
                     reference=("LoadImage", {"image": "reference_a.png"}, {}),
                     schedule=("IPAKitFrameWeights", {"weights": "1.0, 0.0", "schedule": "ease in-out",
                                                      "frames": 8}, {}),
                     plot=("PreviewImage", {}, {"images": ("schedule", 1)}),
                     apply=("IPAKitApplyAdvanced", advanced("linear", 1.0),
                            {"model": ("ckpt", 0), "ipadapter": ("ipa_file", 0), "image": ("reference", 0),
                             "clip_vision": ("clip_vision", 0), "frame_weights": ("schedule", 0)})),
}
_anim = WORKFLOWS["ipadapter_animation_weights"]["nodes"]
_anim["latent"] = (_anim["latent"][0], {"width": 512, "height": 512, "batch_size": 8}, {})
_xl = WORKFLOWS["ipadapter_tiled_non_square"]["nodes"]
_xl["latent"] = (_xl["latent"][0], {"width": 768, "height": 320, "batch_size": 1}, {})

# the LoRA also feeds the text encoders, and the sampler takes the ControlNet's conditioning
_cl = WORKFLOWS["ipadapter_controlnet_lora"]["nodes"]
for _key in ("pos", "neg"):
    _cl[_key] = (_cl[_key][0], _cl[_key][1], {"clip": ("lora", 1)})
_cl["sampler"] = (_cl["sampler"][0], _cl["sampler"][1],
                  {**_cl["sampler"][2], "positive": ("control", 0), "negative": ("control", 1)})

FLUX_CKPT = "flux1-dev-fp8.safetensors"


def flux_txt2img(model_source, prompt, prefix, **extra_nodes):
    """The usual Flux dev text-to-image tail (all-in-one checkpoint, guidance 3.5, cfg 1) sampling with model_source."""
    return {
        "ckpt": ("CheckpointLoaderSimple", {"ckpt_name": FLUX_CKPT}, {}),
        **extra_nodes,
        "text": ("CLIPTextEncode", {"text": prompt}, {"clip": ("ckpt", 1)}),
        "pos": ("FluxGuidance", {"guidance": 3.5}, {"conditioning": ("text", 0)}),
        "neg": ("CLIPTextEncode", {"text": ""}, {"clip": ("ckpt", 1)}),
        "latent": ("EmptySD3LatentImage", {"width": 1024, "height": 1024, "batch_size": 1}, {}),
        "sampler": ("KSampler", {"seed": 42, "steps": 20, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple",
                                 "denoise": 1.0},
                    {"model": model_source, "positive": ("pos", 0), "negative": ("neg", 0),
                     "latent_image": ("latent", 0)}),
        "decode": ("VAEDecode", {}, {"samples": ("sampler", 0), "vae": ("ckpt", 2)}),
        "save": ("SaveImage", {"filename_prefix": prefix}, {"images": ("decode", 0)}),
    }


WORKFLOWS["flux_ipadapter_xlabs"] = {
    "description": "Flux.1 dev with XLabs' flux-ip-adapter: the reference image steers the picture. Needs the XLabs "
                   "adapter in models/ipadapter (or models/xlabs/ipadapters) and CLIP ViT-L/14 in models/clip_vision.",
    "nodes": flux_txt2img(("apply", 0), "a cozy reading corner, warm light", "flux_ipadapter_xlabs",
                          ipa_file=("IPAKitModelLoader", {"ipadapter_file": "flux-ip-adapter.safetensors"}, {}),
                          clip_vision=("CLIPVisionLoader", {"clip_name": "clip-vit-large-patch14.safetensors"}, {}),
                          reference=("LoadImage", {"image": "reference_a.png"}, {}),
                          apply=("IPAKitApply", {"weight": 0.9, "weight_type": "linear"},
                                 {"model": ("ckpt", 0), "ipadapter": ("ipa_file", 0), "image": ("reference", 0),
                                  "clip_vision": ("clip_vision", 0)})),
}
WORKFLOWS["flux_ipadapter_instantx"] = {
    "description": "Flux.1 dev with a LoRA and InstantX's FLUX.1-dev-IP-Adapter (SigLIP, 128 image tokens), the "
                   "image prompt fading out over the last third. Load SigLIP with IPAdapter Kit: Load CLIP Vision: it "
                   "keeps the pooling head InstantX reads.",
    "nodes": flux_txt2img(("apply", 0), "a lighthouse at dusk, oil painting", "flux_ipadapter_instantx",
                          lora=("LoraLoaderModelOnly", {"lora_name": "flux_style_lora.safetensors",
                                                        "strength_model": 0.8}, {"model": ("ckpt", 0)}),
                          ipa_file=("IPAKitModelLoader", {"ipadapter_file": "ip-adapter.bin"}, {}),
                          clip_vision=("IPAKitCLIPVisionLoader",
                                       {"clip_name": "siglip-so400m-patch14-384.safetensors"}, {}),
                          reference=("LoadImage", {"image": "reference_b.png"}, {}),
                          apply=("IPAKitApplyAdvanced", advanced("linear", 0.8, end_at=0.7),
                                 {"model": ("lora", 0), "ipadapter": ("ipa_file", 0), "image": ("reference", 0),
                                  "clip_vision": ("clip_vision", 0)})),
}

SD35_CKPT = "sd3.5_large_fp8_scaled.safetensors"


def sd35_txt2img(model_source, prompt, prefix, **extra_nodes):
    """SD3.5 Large text-to-image as ComfyUI's SD3.5 template runs it (all-in-one checkpoint, cfg 4.5, sgm_uniform)."""
    return {
        "ckpt": ("CheckpointLoaderSimple", {"ckpt_name": SD35_CKPT}, {}),
        **extra_nodes,
        "pos": ("CLIPTextEncode", {"text": prompt}, {"clip": ("ckpt", 1)}),
        "neg": ("CLIPTextEncode", {"text": ""}, {"clip": ("ckpt", 1)}),
        "latent": ("EmptySD3LatentImage", {"width": 1024, "height": 1024, "batch_size": 1}, {}),
        "sampler": ("KSampler", {"seed": 42, "steps": 28, "cfg": 4.5, "sampler_name": "euler",
                                 "scheduler": "sgm_uniform", "denoise": 1.0},
                    {"model": model_source, "positive": ("pos", 0), "negative": ("neg", 0),
                     "latent_image": ("latent", 0)}),
        "decode": ("VAEDecode", {}, {"samples": ("sampler", 0), "vae": ("ckpt", 2)}),
        "save": ("SaveImage", {"filename_prefix": prefix}, {"images": ("decode", 0)}),
    }


WORKFLOWS["sd35_ipadapter"] = {
    "description": "SD3.5 Large with InstantX's SD3.5-Large-IP-Adapter: SigLIP (ComfyUI's Load CLIP Vision) reads the "
                   "reference, a timestep-aware resampler turns it into image tokens at every step. Keep the adapter "
                   "as models/ipadapter/ip-adapter_sd35_large.bin (InstantX names it ip-adapter.bin, as does the "
                   "Flux one).",
    "nodes": sd35_txt2img(("apply", 0), "a ceramic teapot on a wooden table, studio photo", "sd35_ipadapter",
                          ipa_file=("IPAKitModelLoader", {"ipadapter_file": "ip-adapter_sd35_large.bin"}, {}),
                          clip_vision=("CLIPVisionLoader", {"clip_name": "siglip-so400m-patch14-384.safetensors"}, {}),
                          reference=("LoadImage", {"image": "reference_a.png"}, {}),
                          apply=("IPAKitApply", {"weight": 0.6, "weight_type": "linear"},
                                 {"model": ("ckpt", 0), "ipadapter": ("ipa_file", 0), "image": ("reference", 0),
                                  "clip_vision": ("clip_vision", 0)})),
}

SDXL_CKPT = "sd_xl_base_1.0.safetensors"

WORKFLOWS["instantid_basic"] = {
    "description": "InstantID on SDXL: the reference face's identity (antelopev2 ArcFace embedding -> identity tokens) "
                   "and IdentityNet following the pose image's face keypoints. Needs InstantID's ip-adapter.bin in "
                   "models/instantid, its ControlNetModel in models/controlnet/instantid/ and the antelopev2 pack in "
                   "models/insightface/models/antelopev2/.",
    "nodes": {
        "ckpt": ("CheckpointLoaderSimple", {"ckpt_name": SDXL_CKPT}, {}),
        "instantid": ("IPAKitInstantIDLoader", {"instantid_file": "ip-adapter.bin"}, {}),
        "insightface": ("IPAKitInsightFaceLoader", {"pack": "antelopev2", "provider": "CPU", "det_size": 640}, {}),
        "identitynet": ("ControlNetLoader", {"control_net_name": "instantid/diffusion_pytorch_model.safetensors"},
                        {}),
        "face": ("LoadImage", {"image": "face_a.png"}, {}),
        "pose": ("LoadImage", {"image": "face_b.png"}, {}),
        "pos": ("CLIPTextEncode", {"text": "portrait of a woman in a sunlit library, film photo"},
                {"clip": ("ckpt", 1)}),
        "neg": ("CLIPTextEncode", {"text": "blurry, lowres, watermark, deformed"}, {"clip": ("ckpt", 1)}),
        "apply": ("IPAKitApplyInstantID", {"weight": 0.8, "start_at": 0.0, "end_at": 1.0},
                  {"model": ("ckpt", 0), "positive": ("pos", 0), "negative": ("neg", 0),
                   "instantid": ("instantid", 0), "insightface": ("insightface", 0),
                   "control_net": ("identitynet", 0), "image": ("face", 0), "image_kps": ("pose", 0)}),
        "keypoints": ("PreviewImage", {}, {"images": ("apply", 3)}),
        "latent": ("EmptyLatentImage", {"width": 1016, "height": 1016, "batch_size": 1}, {}),
        "sampler": ("KSampler", {"seed": 42, "steps": 30, "cfg": 4.5, "sampler_name": "dpmpp_2m",
                                 "scheduler": "karras", "denoise": 1.0},
                    {"model": ("apply", 0), "positive": ("apply", 1), "negative": ("apply", 2),
                     "latent_image": ("latent", 0)}),
        "decode": ("VAEDecode", {}, {"samples": ("sampler", 0), "vae": ("ckpt", 2)}),
        "save": ("SaveImage", {"filename_prefix": "instantid_basic"}, {"images": ("decode", 0)}),
    },
}

WORKFLOWS["pulid_sdxl"] = {
    "description": "PuLID on SDXL: a person's identity from one photo (antelopev2 ArcFace + EVA02-CLIP of the aligned, "
                   "background-free face), fidelity method. Needs ip-adapter_pulid_sdxl_fp16.safetensors in "
                   "models/pulid, EVA02_CLIP_L_336_psz14_s6B.pt in models/clip, parsing_bisenet.pth in "
                   "models/facexlib and the antelopev2 pack in models/insightface/models/antelopev2/.",
    "nodes": {
        "ckpt": ("CheckpointLoaderSimple", {"ckpt_name": SDXL_CKPT}, {}),
        "pulid": ("IPAKitPuLIDLoader", {"pulid_file": "ip-adapter_pulid_sdxl_fp16.safetensors"}, {}),
        "eva": ("IPAKitEVACLIPLoader", {"eva_file": "EVA02_CLIP_L_336_psz14_s6B.pt",
                                        "parser_file": "parsing_bisenet.pth"}, {}),
        "insightface": ("IPAKitInsightFaceLoader", {"pack": "antelopev2", "provider": "CPU", "det_size": 640}, {}),
        "face": ("LoadImage", {"image": "face_a.png"}, {}),
        "apply": ("IPAKitApplyPuLID", {"method": "fidelity", "weight": 1.0, "start_at": 0.0, "end_at": 1.0},
                  {"model": ("ckpt", 0), "pulid": ("pulid", 0), "eva_clip": ("eva", 0),
                   "insightface": ("insightface", 0), "image": ("face", 0)}),
        "pos": ("CLIPTextEncode", {"text": "portrait of a person as an astronaut, cinematic light"},
                {"clip": ("ckpt", 1)}),
        "neg": ("CLIPTextEncode", {"text": "blurry, lowres, watermark, deformed"}, {"clip": ("ckpt", 1)}),
        "latent": ("EmptyLatentImage", {"width": 1024, "height": 1024, "batch_size": 1}, {}),
        "sampler": ("KSampler", {"seed": 42, "steps": 25, "cfg": 5.0, "sampler_name": "dpmpp_2m",
                                 "scheduler": "karras", "denoise": 1.0},
                    {"model": ("apply", 0), "positive": ("pos", 0), "negative": ("neg", 0),
                     "latent_image": ("latent", 0)}),
        "decode": ("VAEDecode", {}, {"samples": ("sampler", 0), "vae": ("ckpt", 2)}),
        "save": ("SaveImage", {"filename_prefix": "pulid_sdxl"}, {"images": ("decode", 0)}),
    },
}

WORKFLOWS["pulid_flux"] = {
    "description": "PuLID-Flux on Flux.1 dev: a person's identity from one photo through PuLID's cross-attentions "
                   "(after every 2nd double and every 4th single block). Needs pulid_flux_v0.9.1.safetensors in "
                   "models/pulid, EVA02_CLIP_L_336_psz14_s6B.pt in models/clip, parsing_bisenet.pth in "
                   "models/facexlib and the antelopev2 pack in models/insightface/models/antelopev2/.",
    "nodes": flux_txt2img(("apply", 0), "portrait of a person as a medieval knight, oil painting", "pulid_flux",
                          pulid=("IPAKitPuLIDLoader", {"pulid_file": "pulid_flux_v0.9.1.safetensors"}, {}),
                          eva=("IPAKitEVACLIPLoader", {"eva_file": "EVA02_CLIP_L_336_psz14_s6B.pt",
                                                       "parser_file": "parsing_bisenet.pth"}, {}),
                          insightface=("IPAKitInsightFaceLoader",
                                       {"pack": "antelopev2", "provider": "CPU", "det_size": 640}, {}),
                          face=("LoadImage", {"image": "face_a.png"}, {}),
                          apply=("IPAKitApplyPuLIDFlux", {"weight": 1.0, "start_at": 0.0, "end_at": 1.0},
                                 {"model": ("ckpt", 0), "pulid": ("pulid", 0), "eva_clip": ("eva", 0),
                                  "insightface": ("insightface", 0), "image": ("face", 0)})),
}
