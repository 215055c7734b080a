"""Reliability and safety inside the real ComfyUI server: bad inputs, unsafe files, no sticky patches.

A dedicated server runs on a copy of the tiny world (hard links, so the shared world is never touched) that also
holds bad files: pickle payloads, truncated and garbage weights, a LoRA / ControlNet / checkpoint under adapter
names, NaN and Inf embeds, images with two faces or none; one adapter file and one InsightFace pack are left out.
Every bad prompt must fail through ComfyUI's error reporting with a message naming what was received, what was
expected and the fix, and the same graph with the fix must then succeed in the same server.

Cases no core node can produce (an empty IMAGE batch, 1-channel images, NaN/Inf pixels, a 4096x4096 reference,
insightface missing) run in-process through the node classes. SD1.5 adapter on an SDXL model is in-process too
(tests/test_sdxl.py::test_sd15_adapter_on_sdxl_model_is_refused): the server has no tiny SDXL checkpoint.
"""
import contextlib
import itertools
import os
import pickle
import shlex
import shutil
import sys
import threading
import time

import numpy as np
import psutil
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import graphs
from comfy_server import ComfyServer, execution_error
from conftest import COMFYUI_ROOT
from tinymodels import insightface_pack, ipadapter_files

CLIP_H = "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors"
CLIP_G = "CLIP-ViT-bigG-14-laion2B-39B-b160k.safetensors"
SD15 = "ip-adapter_sd15.safetensors"
SEED, STEPS = 5, 2
OMITTED_ADAPTER = "ip-adapter-full-face_sd15.safetensors"  # the FULL FACE preset's file
OMITTED_PACK = "antelopev2"  # its folder stays, empty
EMBEDS_FORMAT = "ipadapter_kit.embeds/1"
_nonces = itertools.count(1)


# ---------------------------------------------------------------- graphs (API format, tiny SD1.5)

def txt2img(prefix="rel", seed=SEED, steps=STEPS, size=64):
    """graphs.txt2img whose latent passes through LatentFromBatch with a fresh (batch_index, length): the same
    latent and noise every time, but a new cache key, so ComfyUI really samples again instead of reusing a result."""
    prompt = graphs.txt2img(seed=seed, steps=steps, size=size, prefix=prefix)
    nonce = next(_nonces)
    prompt["fresh"] = {"class_type": "LatentFromBatch",
                       "inputs": {"samples": ["latent", 0], "batch_index": nonce // 64 % 64, "length": nonce % 64 + 1}}
    prompt["sampler"]["inputs"]["latent_image"] = ["fresh", 0]
    return prompt


def load_image(prompt, key, filename):
    prompt[key] = {"class_type": "LoadImage", "inputs": {"image": filename}}
    return [key, 0]


def weight_widgets(weight=1.0):
    return {"weight": weight, "weight_type": "linear", "start_at": 0.0, "end_at": 1.0}


def adapter_prompt(adapter_file=SD15, clip=CLIP_H, image="reference_a.png", weight=1.0, prefix="rel_adapter",
                   **kw):
    """Load IP-Adapter + Load CLIP Vision + Apply on the checkpoint's model."""
    prompt = txt2img(prefix, **kw)
    img = load_image(prompt, "img", image) if isinstance(image, str) else image(prompt)
    prompt.update({
        "ipa": {"class_type": "IPAKitModelLoader", "inputs": {"ipadapter_file": adapter_file}},
        "cv": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": clip}},
        "apply": {"class_type": "IPAKitApply", "inputs": {
            "model": ["ckpt", 0], "ipadapter": ["ipa", 0], "image": img, "clip_vision": ["cv", 0],
            **weight_widgets(weight)}},
    })
    prompt["sampler"]["inputs"]["model"] = ["apply", 0]
    return prompt


def advanced_prompt(mask=None, references=("reference_a.png",), combine="concat", adapter_file=SD15,
                    prefix="rel_advanced", weight=1.0, **kw):
    """Apply (advanced) with several references in one batch and an optional attn_mask built by mask(prompt)."""
    prompt = txt2img(prefix, **kw)
    image = load_image(prompt, "ref0", references[0])
    for i, name in enumerate(references[1:], 1):
        other = load_image(prompt, f"ref{i}", name)
        prompt[f"batch{i}"] = {"class_type": "ImageBatch", "inputs": {"image1": image, "image2": other}}
        image = [f"batch{i}", 0]
    prompt.update({
        "ipa": {"class_type": "IPAKitModelLoader", "inputs": {"ipadapter_file": adapter_file}},
        "cv": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": CLIP_H}},
        "apply": {"class_type": "IPAKitApplyAdvanced", "inputs": {
            "model": ["ckpt", 0], "ipadapter": ["ipa", 0], "image": image, "clip_vision": ["cv", 0],
            **weight_widgets(weight), "weight_composition": 1.0, "combine_embeds": combine,
            "embeds_scaling": "V only"}},
    })
    if mask is not None:
        prompt["apply"]["inputs"]["attn_mask"] = mask(prompt)
    prompt["sampler"]["inputs"]["model"] = ["apply", 0]
    return prompt


def solid_mask(value, width, height):
    def build(prompt):
        prompt["mask"] = {"class_type": "SolidMask", "inputs": {"value": value, "width": width, "height": height}}
        return ["mask", 0]
    return build


def half_mask(width, height):
    """Left half 1, right half 0, at a size unrelated to the 64x64 picture."""
    def build(prompt):
        prompt["canvas"] = {"class_type": "SolidMask", "inputs": {"value": 0.0, "width": width, "height": height}}
        prompt["half"] = {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": width // 2, "height": height}}
        prompt["mask"] = {"class_type": "MaskComposite", "inputs": {
            "destination": ["canvas", 0], "source": ["half", 0], "x": 0, "y": 0, "operation": "add"}}
        return ["mask", 0]
    return build


def mask_batch(count):
    """count masks in one MASK batch (EmptyImage batch -> ImageToMask)."""
    def build(prompt):
        prompt["mask_images"] = {"class_type": "EmptyImage", "inputs": {
            "width": 32, "height": 32, "batch_size": count, "color": 0xFFFFFF}}
        prompt["mask"] = {"class_type": "ImageToMask", "inputs": {"image": ["mask_images", 0], "channel": "red"}}
        return ["mask", 0]
    return build


def embeds_prompt(embeds_file, prefix="rel_embeds", **kw):
    """Load Embeds -> Apply (advanced) with embeds."""
    prompt = txt2img(prefix, **kw)
    prompt.update({
        "ipa": {"class_type": "IPAKitModelLoader", "inputs": {"ipadapter_file": SD15}},
        "embeds": {"class_type": "IPAKitLoadEmbeds", "inputs": {"embeds_file": embeds_file}},
        "apply": {"class_type": "IPAKitApplyAdvanced", "inputs": {
            "model": ["ckpt", 0], "ipadapter": ["ipa", 0], "embeds": ["embeds", 0], **weight_widgets(),
            "weight_composition": 1.0, "combine_embeds": "concat", "embeds_scaling": "V only"}},
    })
    prompt["sampler"]["inputs"]["model"] = ["apply", 0]
    return prompt


def unified_prompt(preset, prefix="rel_unified", **kw):
    prompt = txt2img(prefix, **kw)
    img = load_image(prompt, "img", "reference_a.png")
    prompt.update({
        "unified": {"class_type": "IPAKitUnifiedLoader", "inputs": {"model": ["ckpt", 0], "preset": preset}},
        "apply": {"class_type": "IPAKitApply", "inputs": {
            "model": ["unified", 0], "ipadapter": ["unified", 1], "image": img, "clip_vision": ["unified", 2],
            **weight_widgets()}},
    })
    prompt["sampler"]["inputs"]["model"] = ["apply", 0]
    return prompt


def faceid_prompt(images=("face_a.png",), pack="buffalo_l", prefix="rel_faceid", skip_no_face=False, **kw):
    """Unified FaceID loader (FaceID Plus v2 + LoRA) -> Apply FaceID; the face crops are saved as 'crops_*'."""
    prompt = txt2img(prefix, **kw)
    image = load_image(prompt, "face0", images[0])
    for i, name in enumerate(images[1:], 1):
        other = load_image(prompt, f"face{i}", name)
        prompt[f"faces{i}"] = {"class_type": "ImageBatch", "inputs": {"image1": image, "image2": other}}
        image = [f"faces{i}", 0]
    prompt.update({
        "unified": {"class_type": "IPAKitUnifiedFaceIDLoader", "inputs": {
            "model": ["ckpt", 0], "preset": "FACEID PLUS V2", "lora_strength": 0.6,
            "lora_source": "auto (file in models/loras, else embedded)", "provider": "CPU", "det_size": 640}},
        "apply": {"class_type": "IPAKitApplyFaceID", "inputs": {
            "model": ["unified", 0], "ipadapter": ["unified", 1], "insightface": ["unified", 2], "image": image,
            "clip_vision": ["unified", 3], **weight_widgets(), "weight_faceidv2": 1.0,
            "plus_version": "v2 (shortcut)", "embeddings": "normalized", "combine_embeds": "concat",
            "embeds_scaling": "V only", "skip_no_face": skip_no_face}},
        "save_crops": {"class_type": "SaveImage", "inputs": {"images": ["apply", 1], "filename_prefix": "crops"}},
    })
    if pack != "buffalo_l":  # the InsightFace loader node instead of the unified loader's buffalo_l
        prompt["insightface"] = {"class_type": "IPAKitInsightFaceLoader",
                                 "inputs": {"pack": pack, "provider": "CPU", "det_size": 640}}
        prompt["apply"]["inputs"]["insightface"] = ["insightface", 0]
    prompt["sampler"]["inputs"]["model"] = ["apply", 0]
    return prompt


def rgba_prompt(prefix="rel_rgba", **kw):
    """The reference with an alpha channel (JoinImageWithAlpha: a 4-channel IMAGE) into Apply."""
    def rgba(prompt):
        load_image(prompt, "img", "reference_a.png")
        prompt["alpha"] = {"class_type": "SolidMask", "inputs": {"value": 0.5, "width": 96, "height": 96}}
        prompt["rgba"] = {"class_type": "JoinImageWithAlpha", "inputs": {"image": ["img", 0], "alpha": ["alpha", 0]}}
        return ["rgba", 0]
    return adapter_prompt(image=rgba, prefix=prefix, **kw)


# ---------------------------------------------------------------- running prompts

def images(server, entry):
    """{filename prefix: uint8 pixel array} of the images a prompt saved."""
    out = {}
    for path in server.output_images(entry):
        out[path.name.rsplit("_", 2)[0]] = np.asarray(Image.open(path))
    return out


def cached_nodes(entry):
    """Node ids ComfyUI reused from its cache instead of executing."""
    return {node for kind, data in entry["status"].get("messages", []) if kind == "execution_cached"
            for node in data.get("nodes", [])}


def run_ok(server, prompt):
    """Run a prompt that must succeed with every sampler executed afresh; returns its saved images."""
    entry = server.run(prompt)
    assert entry["status"]["status_str"] == "success", (execution_error(entry) or entry["status"], server.log_tail())
    samplers = {key for key, node in prompt.items() if node["class_type"] == "KSampler"}
    assert not samplers & cached_nodes(entry), "a sampler result came from the cache: nothing was compared"
    return images(server, entry)


def run_image(server, prompt):
    saved = run_ok(server, prompt)
    prefix = prompt["save"]["inputs"]["filename_prefix"]
    return saved[prefix]


def run_error(server, prompt):
    entry = server.run(prompt)
    error = execution_error(entry)
    assert entry["status"]["status_str"] == "error" and error is not None, entry["status"]
    return error


# ---------------------------------------------------------------- the server's world

class Payload:
    """Pickles as a call to os.system: loading it unsafely touches the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(self.marker)}",)


def _link(src, dst):
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def linked_world(world, dest, omit=()):
    """A copy of the world made of hard links (instant; unaffected if the shared world is rebuilt)."""
    def ignore(folder, names):
        return [n for n in names if n in omit]
    shutil.copytree(world / "models", dest / "models", copy_function=_link, ignore=ignore)
    shutil.copytree(world / "input", dest / "input", copy_function=_link)
    return dest


def payload_adapter(marker):
    """A real SD1.5 adapter state dict with a code-running object next to the tensors."""
    arch, proj, lora = ipadapter_files.catalog()[SD15]
    nested = ipadapter_files.state_dict(arch, proj, lora)
    nested["config"] = Payload(marker)
    return nested


def write_embeds(path, value=None):
    """An embeds file as Save Embeds writes it for ip-adapter_sd15 (image_embeds of width 24); value poisons it."""
    cond = torch.rand(1, 24, generator=torch.Generator().manual_seed(3))
    if value is not None:
        cond[0, 5] = value
    save_file({"cond": cond, "uncond": torch.zeros(1, 24)}, str(path),
              metadata={"format": EMBEDS_FORMAT, "clip_output": "image_embeds", "shape": "[1, 24]"})


def write_bad_world(world, root):
    """The reliability world: the tiny world plus bad files, minus one adapter and one InsightFace pack."""
    dest = linked_world(world, root / "world", omit={OMITTED_ADAPTER})
    ipa, inputs, models = dest / "models" / "ipadapter", dest / "input", dest / "models"
    marker = root / "payload_ran"
    torch.save(payload_adapter(marker), ipa / "zz_payload.bin")
    torch.save(payload_adapter(marker), ipa / "zz_payload_legacy.bin", _use_new_zipfile_serialization=False)
    (ipa / "zz_payload_pickle.pt").write_bytes(pickle.dumps({"image_proj": Payload(marker)}))
    good = (world / "models" / "ipadapter" / SD15).read_bytes()
    (ipa / "zz_truncated.safetensors").write_bytes(good[: len(good) // 2])
    (ipa / "zz_garbage.safetensors").write_bytes(os.urandom(4096))
    zipped = (world / "models" / "ipadapter" / "ip-adapter_sd15_light_v11.bin").read_bytes()
    (ipa / "zz_truncated.bin").write_bytes(zipped[: len(zipped) // 2])
    _link(models / "loras" / "style_lora_sd15.safetensors", ipa / "zz_lora.safetensors")
    _link(models / "controlnet" / "control_v11p_sd15_canny_fp16.safetensors", ipa / "zz_controlnet.safetensors")
    _link(models / "checkpoints" / graphs.CHECKPOINT_SD15, ipa / "zz_checkpoint.safetensors")
    pack = models / "insightface" / "models" / OMITTED_PACK
    shutil.rmtree(pack)
    pack.mkdir()
    write_embeds(inputs / "zz_good_embeds.safetensors")
    write_embeds(inputs / "zz_nan_embeds.safetensors", float("nan"))
    write_embeds(inputs / "zz_inf_embeds.safetensors", float("inf"))
    small, large = (16, 64, 112, 160), (144, 40, 240, 200)
    faces = {"zz_two_faces.png": np.maximum(insightface_pack.bright_face_image(box=small, seed=1),
                                            insightface_pack.bright_face_image(box=large, seed=2)),
             "zz_large_face.png": insightface_pack.bright_face_image(box=large, seed=2),
             "zz_small_face.png": insightface_pack.bright_face_image(box=small, seed=1),
             "zz_no_face.png": insightface_pack.dark_image(seed=4)}
    for name, bgr in faces.items():
        Image.fromarray(np.ascontiguousarray(bgr[..., ::-1])).save(inputs / name)
    return dest, marker


@pytest.fixture(scope="module")
def bad_world(world, tmp_path_factory):
    return write_bad_world(world, tmp_path_factory.mktemp("reliability"))


@contextlib.contextmanager
def dedicated_server(world_dir, work_dir, env=(), extra_args=()):
    """A ComfyUI server of its own (one compute thread, plus env), stopped by PID at the end."""
    server = ComfyServer(COMFYUI_ROOT, world_dir, work_dir, extra_args=extra_args, env=dict(env))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def server(bad_world, tmp_path_factory):
    """A ComfyUI server of its own on the reliability world."""
    with dedicated_server(bad_world[0], tmp_path_factory.mktemp("reliability_server")) as server:
        yield server


@pytest.fixture(scope="module")
def references(server):
    """The plain and the adapter image (same seed), each computed once, for bitwise comparisons."""
    return {"plain": run_image(server, txt2img("ref_plain")), "adapter": run_image(server, adapter_prompt())}


# ---------------------------------------------------------------- safe loading

def test_the_payload_is_real(bad_world, tmp_path):
    """Control: unpickled without restrictions, the payload runs its command (so its refusal below means something)."""
    control = tmp_path / "control_marker"
    pickle.loads(pickle.dumps(payload_adapter(control)))
    assert control.exists()


@pytest.mark.parametrize("filename, exception, words", [
    ("zz_payload.bin", "UnsafeFileError", ["refused", f"the Python object {os.system.__module__}.system besides "
                                           "tensors", "could run code", "Use the .safetensors release"]),
    ("zz_payload_legacy.bin", "CorruptFileError", ["not a PyTorch zip archive", "convert it to .safetensors"]),
    ("zz_payload_pickle.pt", "CorruptFileError", ["not a PyTorch zip archive", "convert it to .safetensors"]),
])
def test_pickle_payload_is_refused_and_never_runs(server, bad_world, filename, exception, words):
    _, marker = bad_world
    error = run_error(server, adapter_prompt(filename))
    assert error["exception_type"].endswith(exception) and error["node_type"] == "IPAKitModelLoader"
    for word in [filename, *words]:
        assert word in error["exception_message"], error["exception_message"]
    assert error["exception_message"].rstrip("\n").isprintable(), "control codes or line breaks in the message"
    assert not marker.exists(), "the payload ran inside the server"
    assert server.process.poll() is None
    assert run_image(server, adapter_prompt("ip-adapter_sd15_light_v11.bin")).std() > 1.0
    assert not marker.exists()


# ---------------------------------------------------------------- the bad-input matrix

CASES = {
    # id: (bad prompt, the same graph fixed, exception type, node type, words the message must hold)
    "truncated_safetensors": (lambda: adapter_prompt("zz_truncated.safetensors"), lambda: adapter_prompt(SD15),
                              "CorruptFileError", "IPAKitModelLoader",
                              ["zz_truncated.safetensors", "cannot read", "truncated or damaged", "download it again"]),
    "garbage_safetensors": (lambda: adapter_prompt("zz_garbage.safetensors"), lambda: adapter_prompt(SD15),
                            "CorruptFileError", "IPAKitModelLoader", ["zz_garbage.safetensors", "download it again"]),
    "truncated_bin": (lambda: adapter_prompt("zz_truncated.bin"),
                      lambda: adapter_prompt("ip-adapter_sd15_light_v11.bin"),
                      "CorruptFileError", "IPAKitModelLoader", ["zz_truncated.bin", "Re-download it"]),
    "lora_as_adapter": (lambda: adapter_prompt("zz_lora.safetensors"), lambda: adapter_prompt(SD15),
                        "UnknownFormatError", "IPAKitModelLoader",
                        ["zz_lora.safetensors", "not an IP-Adapter file", "found keys", "image_proj.*",
                         "own loader"]),
    "controlnet_as_adapter": (lambda: adapter_prompt("zz_controlnet.safetensors"), lambda: adapter_prompt(SD15),
                              "UnknownFormatError", "IPAKitModelLoader",
                              ["zz_controlnet.safetensors", "not an IP-Adapter file", "ControlNet"]),
    "checkpoint_as_adapter": (lambda: adapter_prompt("zz_checkpoint.safetensors"), lambda: adapter_prompt(SD15),
                              "UnknownFormatError", "IPAKitModelLoader",
                              ["not an IP-Adapter file", "checkpoint belongs in its own loader"]),
    "sdxl_adapter_on_sd15": (lambda: adapter_prompt("ip-adapter_sdxl_vit-h.safetensors"),
                             lambda: adapter_prompt(SD15), "IncompatibleModelError", "IPAKitApply",
                             ["SDXL adapter", "model is SD1.5", "Use the SD1.5 version", "ip-adapter_sd15"]),
    "vit_h_adapter_with_bigg": (lambda: adapter_prompt(SD15, clip=CLIP_G), lambda: adapter_prompt(SD15),
                                "IncompatibleModelError", "IPAKitApply",
                                ["needs", "width 24", "gave width 28", "Load the matching CLIP vision file"]),
    "bigg_adapter_with_vit_h": (lambda: adapter_prompt("ip-adapter_sd15_vit-G.safetensors"),
                                lambda: adapter_prompt("ip-adapter_sd15_vit-G.safetensors", clip=CLIP_G),
                                "IncompatibleModelError", "IPAKitApply",
                                ["needs", "width 28", "gave width 24", "Load the matching CLIP vision file"]),
    "mask_count_differs": (lambda: advanced_prompt(mask_batch(3), ("reference_a.png", "reference_b.png"),
                                                   "separate"),
                           lambda: advanced_prompt(mask_batch(2), ("reference_a.png", "reference_b.png"),
                                                   "separate"),
                           "InvalidInputError", "IPAKitApplyAdvanced",
                           ["3 masks for 2 references", "one per reference image"]),
    "mask_count_for_one_reference": (lambda: advanced_prompt(mask_batch(2), ("reference_a.png", "reference_b.png")),
                                     lambda: advanced_prompt(mask_batch(1), ("reference_a.png", "reference_b.png")),
                                     "InvalidInputError", "IPAKitApplyAdvanced", ["2 masks for 1 reference. "]),
    "nan_embeds_file": (lambda: embeds_prompt("zz_nan_embeds.safetensors"),
                        lambda: embeds_prompt("zz_good_embeds.safetensors"), "InvalidInputError", "IPAKitLoadEmbeds",
                        ["zz_nan_embeds.safetensors", "NaN or infinite"]),
    "inf_embeds_file": (lambda: embeds_prompt("zz_inf_embeds.safetensors"),
                        lambda: embeds_prompt("zz_good_embeds.safetensors"), "InvalidInputError", "IPAKitLoadEmbeds",
                        ["zz_inf_embeds.safetensors", "NaN or infinite"]),
    "no_face": (lambda: faceid_prompt(("face_a.png", "zz_no_face.png")),
                lambda: faceid_prompt(("face_a.png", "face_b.png")), "InvalidInputError", "IPAKitApplyFaceID",
                ["reference 2 of 2", "no face found", "larger face", "skip_no_face"]),
    "adapter_file_missing": (lambda: unified_prompt("FULL FACE - SD1.5 only (portraits stronger)"),
                             lambda: unified_prompt("STANDARD (medium strength)"), "InvalidInputError",
                             "IPAKitUnifiedLoader", [OMITTED_ADAPTER, "models/ipadapter", "searched:"]),
    "insightface_pack_missing": (lambda: faceid_prompt(pack=OMITTED_PACK), lambda: faceid_prompt(),
                                 "InvalidInputError", "IPAKitInsightFaceLoader",
                                 [f"'{OMITTED_PACK}' was not found", "Searched", "scrfd_10g_bnkps.onnx",
                                  "never downloaded"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gives_a_clear_error_and_the_fixed_graph_then_works(server, case):
    bad, fixed, exception, node_type, words = CASES[case]
    error = run_error(server, bad())
    assert error["exception_type"].endswith(exception), error
    assert error["node_type"] == node_type, error
    for word in words:
        assert word in error["exception_message"], (word, error["exception_message"])
    assert server.process.poll() is None
    assert run_image(server, fixed()).std() > 1.0


def test_bad_prompts_back_to_back_leave_the_server_working(server, references):
    for case in ("lora_as_adapter", "vit_h_adapter_with_bigg", "no_face"):
        run_error(server, CASES[case][0]())
    assert np.array_equal(run_image(server, adapter_prompt()), references["adapter"])


# ---------------------------------------------------------------- inputs that must work

def test_rgba_reference_works_and_equals_its_rgb(server, references):
    """A 4-channel IMAGE from a core node: alpha is ignored, the picture equals the RGB reference's bit for bit."""
    assert np.array_equal(run_image(server, rgba_prompt()), references["adapter"])


def test_mask_of_another_size_is_resized(server, references):
    masked = run_image(server, advanced_prompt(half_mask(40, 24)))
    full = run_image(server, advanced_prompt(solid_mask(1.0, 40, 24)))
    assert np.array_equal(full, references["adapter"])  # an all-ones mask of any size is no mask
    assert np.abs(masked.astype(int) - references["adapter"]).mean() > 5.0
    assert np.abs(masked.astype(int) - references["plain"]).mean() > 5.0


def test_all_zeros_mask_is_the_plain_image(server, references):
    assert np.array_equal(run_image(server, advanced_prompt(solid_mask(0.0, 64, 64))), references["plain"])


def test_several_faces_use_the_largest(server):
    def crops(image):
        saved = run_ok(server, faceid_prompt((image,)))
        assert saved["rel_faceid"].std() > 1.0
        return saved["crops"].astype(int)
    two, large, small = crops("zz_two_faces.png"), crops("zz_large_face.png"), crops("zz_small_face.png")
    assert np.abs(two - large).mean() < np.abs(two - small).mean() / 4, "the crop is not the largest face"


# ---------------------------------------------------------------- no sticky patches

def test_removing_the_adapter_gives_the_plain_image(server, references):
    with_adapter = run_image(server, adapter_prompt())
    assert np.abs(with_adapter.astype(int) - references["plain"]).mean() > 5.0, "the adapter changed nothing"
    assert np.array_equal(run_image(server, txt2img("rel_b")), references["plain"])
    faceid = run_ok(server, faceid_prompt())["rel_faceid"]  # also with a LoRA and InsightFace on the model
    assert np.abs(faceid.astype(int) - references["plain"]).mean() > 5.0
    assert np.array_equal(run_image(server, txt2img("rel_b")), references["plain"])


def test_two_branches_from_one_model_are_independent(server, references):
    prompt = adapter_prompt(prefix="branch_adapter")
    plain = txt2img("branch_plain")
    for key in ("fresh", "sampler", "decode", "save"):
        prompt[f"{key}2"] = plain[key]
    prompt["sampler2"] = {**plain["sampler"], "inputs": {**plain["sampler"]["inputs"], "latent_image": ["fresh2", 0]}}
    prompt["decode2"] = {**plain["decode"], "inputs": {**plain["decode"]["inputs"], "samples": ["sampler2", 0]}}
    prompt["save2"] = {**plain["save"], "inputs": {**plain["save"]["inputs"], "images": ["decode2", 0]}}
    saved = run_ok(server, prompt)
    assert np.array_equal(saved["branch_plain"], references["plain"])
    assert np.array_equal(saved["branch_adapter"], references["adapter"])


def test_interrupted_prompt_leaves_the_next_unchanged(server, references):
    steps = 400
    long = adapter_prompt(steps=steps, prefix="rel_long")
    long["lora"] = {"class_type": "LoraLoader", "inputs": {
        "model": ["ckpt", 0], "clip": ["ckpt", 1], "lora_name": "style_lora_sd15.safetensors",
        "strength_model": 0.8, "strength_clip": 0.8}}
    long["apply"]["inputs"]["model"] = ["lora", 0]
    start = len(server.log_path.read_bytes())
    prompt_id, refused = server.queue(long)
    assert refused is None, refused
    deadline = time.time() + 120
    while not any(f"/{steps} [" in line for line in server.log_path.read_text(errors="replace")[start:].split("\r")):
        assert time.time() < deadline, server.log_tail()
        time.sleep(0.05)
    server.post("/interrupt", {})
    entry = server.wait(prompt_id)
    kinds = [kind for kind, _ in entry["status"]["messages"]]
    assert "execution_interrupted" in kinds and not server.output_images(entry), kinds
    assert np.array_equal(run_image(server, adapter_prompt()), references["adapter"])
    assert np.array_equal(run_image(server, txt2img("rel_after")), references["plain"])


# ---------------------------------------------------------------- in-process: what no core node can send

@pytest.fixture(scope="module")
def clip_h(world_paths):
    from ipadapter_kit.nodes.presets import load_clip_vision

    return load_clip_vision(CLIP_H)


def _apply(model, image, clip_vision, name=SD15):
    from ipadapter_kit.nodes import apply, model_cache

    adapter = model_cache.load_adapter(name)
    return apply.Apply.execute(model, adapter, image, 1.0, "linear", 0.0, 1.0, clip_vision=clip_vision).result[0]


def reference(channels=3, size=64):
    return torch.rand(1, size, size, channels, generator=torch.Generator().manual_seed(11))


def test_empty_image_batch_is_refused_by_every_image_node(sd15, clip_h):
    """No core node yields a 0-image batch (ImageFromBatch/RepeatImageBatch clamp to >= 1), so in-process."""
    from ipadapter_kit.ipadapter_core.errors import InvalidInputError
    from ipadapter_kit.nodes import apply, faceid, faces, model_cache

    empty = torch.rand(0, 64, 64, 3)
    adapter = model_cache.load_adapter(SD15)
    with pytest.raises(InvalidInputError, match="image batch is empty; connect at least one"):
        _apply(sd15[0], empty, clip_h)
    with pytest.raises(InvalidInputError, match="empty"):
        apply.ApplyAdvanced.execute(sd15[0], adapter, 1.0, "linear", 0.0, 1.0, 1.0, "concat", "V only",
                                    image=empty, clip_vision=clip_h)
    with pytest.raises(InvalidInputError, match="empty"):
        apply.Encode.execute(adapter, empty, clip_vision=clip_h)
    analyzer = faces.load_analyzer("buffalo_l", "CPU", 640)
    with pytest.raises(InvalidInputError, match="image batch is empty"):
        faces.FaceCrops.execute(analyzer, empty)
    with pytest.raises(InvalidInputError, match="image batch is empty"):
        faceid.ApplyFaceID.execute(sd15[0], model_cache.load_adapter("ip-adapter-faceid_sd15.bin"), analyzer, empty,
                                   1.0, "linear", 0.0, 1.0, 1.0, "v1", "normalized", "concat", "V only", False)


def test_gray_and_rgba_references_work_like_their_rgb(sd15, clip_h, one_thread):
    from test_invariants import sample

    model, pos, neg = sd15
    gray, rgb = reference(1), reference(3)
    expected_gray = sample(_apply(model, gray.repeat(1, 1, 1, 3), clip_h), pos, neg)
    assert torch.equal(sample(_apply(model, gray, clip_h), pos, neg), expected_gray)
    rgba = torch.cat([rgb, torch.rand(1, 64, 64, 1)], dim=-1)
    assert torch.equal(sample(_apply(model, rgba, clip_h), pos, neg), sample(_apply(model, rgb, clip_h), pos, neg))
    assert not torch.equal(expected_gray, sample(model, pos, neg))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_nan_or_inf_pixels_are_refused(sd15, clip_h, value):
    from ipadapter_kit.ipadapter_core.errors import InvalidInputError

    image = reference()
    image[0, 10, 10, 1] = value
    with pytest.raises(InvalidInputError, match=r"NaN or infinite values; expected pixel values from 0 to 1\. Check"):
        _apply(sd15[0], image, clip_h)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_or_inf_embeds_are_refused(sd15, value):
    """Embeds that did not come from a file (another node's output) are checked by the apply node itself."""
    from ipadapter_kit.ipadapter_core.errors import InvalidInputError
    from ipadapter_kit.nodes import apply, model_cache, patching

    cond = torch.rand(1, 24)
    cond[0, 3] = value
    embeds = patching.EncodedReferences(cond=cond, uncond=torch.zeros(1, 24), clip_output="image_embeds")
    with pytest.raises(InvalidInputError, match=r"NaN or infinite values; expected finite .*Encode the references"):
        apply.ApplyAdvanced.execute(sd15[0], model_cache.load_adapter(SD15), 1.0, "linear", 0.0, 1.0, 1.0, "concat",
                                    "V only", embeds=embeds)


class PeakRSS:
    """Highest resident memory of this process while the block runs (sampled every millisecond)."""

    def __enter__(self):
        self._process = psutil.Process()
        self.base = self.peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            time.sleep(0.001)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)

    @property
    def growth(self):
        return self.peak - self.base


def test_4096_reference_works_with_bounded_memory(sd15, clip_h, one_thread):
    from test_invariants import sample

    model, pos, neg = sd15
    big = torch.rand(1, 4096, 4096, 3, generator=torch.Generator().manual_seed(2))
    with PeakRSS() as memory:
        patched = _apply(model, big, clip_h, "ip-adapter-plus_sd15.safetensors")
    image_bytes = big.numel() * big.element_size()  # 192 MiB
    print(f"4096x4096 reference: peak RSS grew by {memory.growth / 2**20:.0f} MiB")
    assert memory.growth < 3 * image_bytes, f"peak grew by {memory.growth / 2**20:.0f} MiB"  # a few copies at most
    out = sample(patched, pos, neg)
    assert torch.isfinite(out).all() and not torch.equal(out, sample(model, pos, neg))


def test_insightface_not_installed_is_a_clear_error_and_nothing_else_breaks(sd15, clip_h, monkeypatch):
    """The loader tests in tests/test_faces.py cover load_analyzer; here the nodes a user runs."""
    from ipadapter_kit.ipadapter_core.errors import InvalidInputError
    from ipadapter_kit.nodes import faceid, faces

    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "insightface", None)
        with pytest.raises(InvalidInputError, match=r"pip install insightface onnxruntime.*restart ComfyUI"):
            faces.InsightFaceLoader.execute("buffalo_l", "CPU", 640)
        with pytest.raises(InvalidInputError, match="could not be imported"):
            faceid.UnifiedFaceIDLoader.execute(sd15[0], "FACEID PLUS V2", 0.6, faceid.LORA_SOURCES[0], "CPU", 640)
        assert _apply(sd15[0], reference(), clip_h) is not None  # the CLIP adapters do not need it
    assert faces.InsightFaceLoader.execute("buffalo_l", "CPU", 640).result[0] is not None
