"""The example workflows as ComfyUI lists them among its templates: order (basic first), titles and descriptions.

ComfyUI serves `workflows/<name>.json` as a template of this pack and `workflows/<name>.jpg` as its thumbnail
(drawn by scripts/render_images.py from the graph, with the title below written on it). Stdlib only.
"""
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / "workflows"

# (file stem, title, one-line description), in the order a new user should open them
TEMPLATES = [
    ("ipadapter_basic", "IP-Adapter: basic image prompt",
     "A reference image steers an SD1.5 picture; the Unified Loader finds the adapter and CLIP-vision files."),
    ("ipadapter_style_transfer", "Style transfer",
     "Only the reference's style, through the style blocks (InstantStyle)."),
    ("ipadapter_composition", "Composition",
     "Only the reference's layout, through the composition blocks."),
    ("ipadapter_style_and_composition", "Style & composition",
     "Style from one reference, composition from another, each with its own weight."),
    ("ipadapter_masked_two_subjects", "Two subjects with masks",
     "Two references in one node, each with its own weight and mask."),
    ("ipadapter_controlnet_lora", "IP-Adapter + ControlNet + LoRA",
     "The image prompt with a LoRA on the model and a ControlNet on the conditioning."),
    ("ipadapter_embeds_save_load", "Save and load embeds",
     "Encode once, save the embeds as .safetensors, load, combine and apply them."),
    ("ipadapter_tiled_non_square", "Tiled wide reference",
     "A wide reference cut into tiles, so nothing is cropped."),
    ("ipadapter_animation_weights", "Frame weights for batches",
     "The image prompt fades out frame by frame over a batch."),
    ("ipadapter_faceid", "FaceID Plus v2 (SD1.5)",
     "A face photo's identity (InsightFace) and CLIP crop steer the picture."),
    ("instantid_basic", "InstantID (SDXL)",
     "A face's identity plus IdentityNet following a pose image's keypoints."),
    ("pulid_sdxl", "PuLID (SDXL)",
     "A person's identity from one photo, fidelity method."),
    ("flux_ipadapter_xlabs", "Flux IP-Adapter (XLabs)",
     "Flux.1 dev steered by a reference image through XLabs' adapter and CLIP ViT-L."),
    ("flux_ipadapter_instantx", "Flux IP-Adapter (InstantX) + LoRA",
     "Flux.1 dev with InstantX's adapter (SigLIP) and a LoRA."),
    ("pulid_flux", "PuLID (Flux)",
     "A person's identity from one photo on Flux.1 dev."),
    ("sd35_ipadapter", "SD3.5 Large IP-Adapter",
     "SD3.5 Large steered by a reference image through InstantX's adapter (SigLIP)."),
]


def workflow_stems():
    """The stems of the workflow files ComfyUI will list."""
    return sorted(p.stem for p in WORKFLOWS.glob("*.json"))


def thumbnail_path(stem):
    """Where ComfyUI looks for a template's thumbnail: the same name with .jpg."""
    return WORKFLOWS / f"{stem}.jpg"
