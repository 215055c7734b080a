"""The example workflows as ComfyUI lists them among its templates: order (basic first), titles and descriptions.

ComfyUI serves `workflows/<name>.json` as a template of this pack and `workflows/<name>.jpg` as its thumbnail
(drawn by scripts/render_images.py from the graph, with the title and description written on it). Its frontends
show the file name as the template's title (and, dashes and underscores as spaces, as its description), so each file
is named by its title: a number that sorts basic first, then words, spaces and ( ) . - only, safe in a URL path
(the frontend does not escape it) and on Windows. Stdlib only.
"""
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / "workflows"

# (graph key in scripts/workflow_graphs.py, title = file stem, one-line description), in the order a new user should
# open them
TEMPLATES = [
    ("ipadapter_basic", "01 IP-Adapter basic image prompt (SD1.5)",
     "A reference image steers an SD1.5 picture: the adapter and CLIP-vision files, each in its own loader."),
    ("ipadapter_style_transfer", "02 Style transfer (SD1.5)",
     "Only the reference's style, through the style blocks (InstantStyle)."),
    ("ipadapter_composition", "03 Composition (SD1.5)",
     "Only the reference's layout, through the composition blocks."),
    ("ipadapter_style_and_composition", "04 Style and composition (SD1.5)",
     "Style from one reference, composition from another, each with its own weight."),
    ("ipadapter_masked_two_subjects", "05 Two subjects with masks (SD1.5)",
     "Two references in one node, each with its own weight and mask."),
    ("ipadapter_controlnet_lora", "06 IP-Adapter with ControlNet and LoRA (SD1.5)",
     "The image prompt with a LoRA on the model and a ControlNet on the conditioning."),
    ("ipadapter_embeds_save_load", "07 Save and load embeds (SD1.5)",
     "Encode once, save the embeds as .safetensors, load, combine and apply them."),
    ("ipadapter_tiled_non_square", "08 Tiled wide reference (SD1.5)",
     "A wide reference cut into tiles, so nothing is cropped."),
    ("ipadapter_animation_weights", "09 Frame weights for batches (SD1.5)",
     "The image prompt fades out frame by frame over a batch."),
    ("ipadapter_faceid", "10 FaceID Plus v2 (SD1.5)",
     "A face photo's identity (InsightFace) and CLIP crop steer the picture."),
    ("instantid_basic", "11 InstantID (SDXL)",
     "A face's identity plus IdentityNet following a pose image's keypoints."),
    ("pulid_sdxl", "12 PuLID (SDXL)",
     "A person's identity from one photo, fidelity method."),
    ("flux_ipadapter_xlabs", "13 Flux IP-Adapter (XLabs)",
     "Flux.1 dev steered by a reference image through XLabs' adapter and CLIP ViT-L."),
    ("flux_ipadapter_instantx", "14 Flux IP-Adapter with LoRA (InstantX)",
     "Flux.1 dev with InstantX's adapter (SigLIP) and a LoRA."),
    ("pulid_flux", "15 PuLID (Flux)",
     "A person's identity from one photo on Flux.1 dev."),
    ("sd35_ipadapter", "16 SD3.5 Large IP-Adapter",
     "SD3.5 Large steered by a reference image through InstantX's adapter (SigLIP)."),
]
TITLES = {key: title for key, title, _description in TEMPLATES}


def workflow_path(key):
    """The file a graph of scripts/workflow_graphs.py is saved as: its title, which the frontend shows."""
    return WORKFLOWS / f"{TITLES[key]}.json"


def workflow_stems():
    """The stems of the workflow files ComfyUI will list."""
    return sorted(p.stem for p in WORKFLOWS.glob("*.json"))


def thumbnail_path(stem):
    """Where ComfyUI looks for a template's thumbnail: the same name with .jpg."""
    return WORKFLOWS / f"{stem}.jpg"
