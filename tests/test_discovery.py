"""Files found by their tensors: encoders told apart by their shapes, the unified loaders picking files kept as
downloaded or renamed, errors listing what was found and what is missing, InsightFace packs by their ONNX models."""
import dataclasses
import importlib.util
import os
import pathlib
import shutil
import sys

import pytest
import torch
from safetensors.torch import save_file

import folder_paths
from ipadapter_kit.ipadapter_core import encoders
from ipadapter_kit.ipadapter_core.errors import CorruptFileError, InvalidInputError, UnsafeFileError
from ipadapter_kit.nodes import faceid, faces, presets, pulid
from tinymodels import comfy_models
from tinymodels.world import CLIP_VISION_FILES, FLUX_CLIP_VISION_FILES

needs_insightface = pytest.mark.skipif(importlib.util.find_spec("insightface") is None,
                                       reason="insightface is not installed")
# The names the files have once renamed or kept as downloaded: what each preset's encoder key must resolve to.
ODD_ENCODERS = {"vit-h": "model.safetensors", "vit-bigg": "encoder_a.safetensors",
                "vit-l-336": "pytorch_model.bin"}
PRESET_ENCODER_KEYS = {"vit-h": "vit-h", "vit-g": "vit-bigg", "vit-l-336": "vit-l-336"}  # presets' key -> world's
WORLD = pathlib.Path(__file__).resolve().parents[1] / ".fixtures" / "world"  # built by the world fixture


def _world_file(folder, name):
    return WORLD / "models" / folder / name


def clip_shapes(width, layers, positions, patch=14, projection=None, class_token=True, prefix="vision_model."):
    """The shapes of a transformers CLIP / SigLIP vision tower's main tensors."""
    shapes = {f"{prefix}embeddings.patch_embedding.weight": (width, 3, patch, patch),
              f"{prefix}embeddings.position_embedding.weight": (positions, width),
              f"{prefix}post_layernorm.weight": (width,)}
    if class_token:
        shapes[f"{prefix}embeddings.class_embedding"] = (width,)
    for i in range(layers):
        shapes[f"{prefix}encoder.layers.{i}.layer_norm1.weight"] = (width,)
    if projection:
        shapes["visual_projection.weight"] = (projection, width)
    return shapes


@pytest.mark.parametrize("shapes, name, projection", [
    (clip_shapes(1280, 32, 257, projection=1024), "CLIP-ViT-H-14", 1024),
    (clip_shapes(1664, 48, 257, projection=1280), "CLIP-ViT-bigG-14", 1280),
    (clip_shapes(1024, 24, 257, projection=768), "CLIP-ViT-L-14", 768),
    (clip_shapes(1024, 24, 577, projection=768), "CLIP-ViT-L-14-336", 768),
    (clip_shapes(1152, 27, 729, class_token=False), "SigLIP so400m-patch14-384", None),
    ({"visual.conv1.weight": (1280, 3, 14, 14), "visual.positional_embedding": (257, 1280), "visual.proj": (1280, 1024),
      **{f"visual.transformer.resblocks.{i}.attn.in_proj_weight": (3840, 1280) for i in range(32)}},
     "CLIP-ViT-H-14", 1024),
    ({"visual.patch_embed.proj.weight": (1024, 3, 14, 14), "visual.pos_embed": (1, 577, 1024),
      "visual.head.weight": (768, 1024), **{f"visual.blocks.{i}.attn.q_proj.weight": (1024, 1024) for i in range(24)}},
     "EVA02-CLIP-L-14-336", 768),
])
def test_known_encoders_are_named_from_their_shapes(shapes, name, projection):
    info = encoders.identify_encoder(shapes)
    assert info.name == name and info.projection == projection
    assert name in info.describe()


def test_a_changed_depth_or_size_is_not_taken_for_a_release_and_adapters_are_no_encoder():
    assert encoders.identify_encoder(clip_shapes(1280, 31, 257, projection=1024)).name is None
    assert encoders.identify_encoder(clip_shapes(1280, 32, 577, projection=1024)).name is None
    assert encoders.identify_encoder(clip_shapes(1280, 32, 257, prefix="model.")) is None  # ComfyUI cannot load it
    assert encoders.identify_encoder({"image_proj.proj.weight": (3072, 1024), "image_proj.norm.weight": (768,)}) \
        is None


def test_adapter_needs_map_to_the_known_encoders(world_paths):
    spec = encoders.adapter_spec(encoders.read_shapes(str(_world_file("ipadapter", "ip-adapter_sd15.safetensors"))))
    assert spec.kind == "linear" and spec.arch == "SD1.5"
    real = dataclasses.replace(spec, clip_dim=1024)
    assert encoders.known_encoders_for(real) == {"CLIP-ViT-H-14"}
    plus = dataclasses.replace(spec, kind="resampler", clip_dim=1024)
    assert encoders.known_encoders_for(plus) == {"CLIP-ViT-L-14", "CLIP-ViT-L-14-336"}
    assert encoders.known_encoders_for(spec) == set()  # the tiny width is no release's


def test_headers_are_read_without_the_data_and_reread_when_the_file_changes(tmp_path):
    path = tmp_path / "a.safetensors"
    save_file({"x.weight": torch.zeros(3, 4), "y": torch.zeros(5)}, str(path))
    data = path.read_bytes()
    path.write_bytes(data[:-16])  # the data cut short: the header alone still tells the shapes
    assert encoders.read_shapes(str(path)) == {"x.weight": (3, 4), "y": (5,)}
    save_file({"z": torch.zeros(2, 2, 2)}, str(path))
    assert encoders.read_shapes(str(path)) == {"z": (2, 2, 2)}
    path.write_bytes(b"\xff" * 8 + b"{}")
    with pytest.raises(CorruptFileError, match="a.safetensors: cannot read this .safetensors header"):
        encoders.read_shapes(str(path))


def test_pickled_files_are_read_weights_only_with_nested_groups_flattened(tmp_path):
    path = tmp_path / "adapter.bin"
    torch.save({"image_proj": {"proj.weight": torch.zeros(6, 4)}, "ip_adapter": {"1.to_k_ip.weight": torch.zeros(2)}},
               str(path))
    assert encoders.read_shapes(str(path)) == {"image_proj.proj.weight": (6, 4), "ip_adapter.1.to_k_ip.weight": (2,)}
    evil = tmp_path / "evil.bin"
    torch.save({"x": torch.zeros(1), "f": os.getcwd}, str(evil))
    with pytest.raises(UnsafeFileError, match="evil.bin: refused, the file holds the Python object"):
        encoders.read_shapes(str(evil))


@pytest.fixture
def model_folder(world_paths, monkeypatch, tmp_path):
    """use(folder, {name: world file}) registers a fresh tmp folder holding links to the world's files as folder."""
    def use(folder, files):
        root = tmp_path / folder
        root.mkdir()
        for name, source in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(source, root / name)
        extensions = folder_paths.folder_names_and_paths[folder][1]
        monkeypatch.setitem(folder_paths.folder_names_and_paths, folder, ([str(root)], extensions))
        folder_paths.filename_list_cache.clear()
        return root
    yield use
    folder_paths.filename_list_cache.clear()


def odd_encoders(model_folder, extra=()):
    """clip_vision holding the three preset encoders under names no pattern matches, plus extra (name, key)."""
    files = {ODD_ENCODERS[k]: _world_file("clip_vision", CLIP_VISION_FILES[k]) for k in ODD_ENCODERS}
    files.update({name: _world_file("clip_vision", CLIP_VISION_FILES[key]) for name, key in extra})
    return model_folder("clip_vision", files)


def unified_cases():
    return [(arch, preset) for preset, arches in presets.PRESETS.items() for arch in arches]


@pytest.mark.parametrize("arch, preset", unified_cases())
def test_every_preset_finds_its_encoder_kept_as_downloaded_or_renamed(sd15, model_folder, arch, preset):
    odd_encoders(model_folder)
    model = sd15[0] if arch == "SD1.5" else comfy_models.tiny_unet("sdxl")
    _, adapter, clip_vision = presets.UnifiedLoader.execute(model, preset).result
    wanted = ODD_ENCODERS[PRESET_ENCODER_KEYS[presets.PRESETS[preset][arch][1]]]
    assert clip_vision is presets.load_clip_vision(wanted) and adapter.clip_vision is clip_vision


@pytest.mark.parametrize("preset", ["FACEID PLUS V2", "FACEID PLUS - SD1.5 only"])
def test_faceid_plus_finds_vit_h_kept_as_downloaded(sd15, model_folder, preset):
    odd_encoders(model_folder)
    _, adapter, _, clip_vision = faceid.UnifiedFaceIDLoader.execute(sd15[0], preset, 0.0, faceid.LORA_SOURCES[0],
                                                                    "CPU", 640).result
    assert clip_vision is presets.load_clip_vision("model.safetensors")


def test_a_file_named_like_the_release_but_holding_another_encoder_is_passed_over(sd15, model_folder):
    odd_encoders(model_folder, extra=[(CLIP_VISION_FILES["vit-h"], "vit-bigg")])  # bigG under ViT-H's name
    _, _, clip_vision = presets.UnifiedLoader.execute(sd15[0], "STANDARD (medium strength)").result
    assert clip_vision is presets.load_clip_vision("model.safetensors")


def test_no_fitting_encoder_lists_what_was_found_and_what_is_missing(sd15, model_folder):
    model_folder("clip_vision", {"odd.safetensors": _world_file("clip_vision", FLUX_CLIP_VISION_FILES["siglip-384"]),
                                 "model.safetensors": _world_file("clip_vision", FLUX_CLIP_VISION_FILES["vit-l"]),
                                 "notes.bin": _world_file("ipadapter", "ip-adapter_sd15_light_v11.bin")})
    with pytest.raises(InvalidInputError) as info:
        presets.UnifiedLoader.execute(sd15[0], "STANDARD (medium strength)")
    message = str(info.value)
    for part in ("CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors", "huggingface.co/h94/IP-Adapter/tree/main/models/"
                 "image_encoder", "models/clip_vision/", "odd.safetensors -> SigLIP vision encoder (width 44",
                 "model.safetensors -> CLIP vision encoder (width 24, 2 layers, 224 px, image embeds 16)",
                 "notes.bin -> IP-Adapter: SD1.5 linear adapter"):
        assert part in message


def world_adapters(renames=()):
    """{name: world file} of the world's ipadapter folder with some files renamed (old -> new)."""
    renames = dict(renames)
    folder = WORLD / "models" / "ipadapter"
    return {renames.get(p.name, p.name): p for p in sorted(folder.iterdir())}


def test_a_renamed_adapter_is_found_and_the_named_ones_stay_with_their_presets(sd15, model_folder):
    model_folder("ipadapter", world_adapters({"ip-adapter_sd15.safetensors": "my_favourite.safetensors",
                                              "ip-adapter-faceid-plusv2_sd15.bin": "faceid v2 (copy).bin"}))
    assert presets.UnifiedLoader.execute(sd15[0], "STANDARD (medium strength)").result[1].name == \
        "my_favourite.safetensors"
    assert presets.UnifiedLoader.execute(sd15[0], "LIGHT - SD1.5 only (low strength)").result[1].name == \
        "ip-adapter_sd15_light_v11.bin"
    adapter = faceid.UnifiedFaceIDLoader.execute(sd15[0], "FACEID PLUS V2", 0.0, faceid.LORA_SOURCES[0], "CPU",
                                                 640).result[1]
    assert adapter.name == "faceid v2 (copy).bin" and adapter.plus_v2


def test_two_renamed_adapters_alike_are_an_error_naming_both(sd15, model_folder):
    files = world_adapters({"ip-adapter-plus_sd15.safetensors": "a.safetensors",
                            "ip-adapter-plus-face_sd15.safetensors": "b.safetensors"})
    model_folder("ipadapter", files)
    with pytest.raises(InvalidInputError, match=r"several files .*: a\.safetensors, b\.safetensors"):
        presets.UnifiedLoader.execute(sd15[0], "PLUS (high strength)")


def test_a_wrong_file_under_a_release_name_is_listed_with_what_it_is(sd15, model_folder):
    model_folder("ipadapter", {"ip-adapter_sd15.safetensors": _world_file("ipadapter", "ip-adapter_sdxl.safetensors")})
    with pytest.raises(InvalidInputError, match=r"ip-adapter_sd15\.safetensors -> IP-Adapter: SDXL linear adapter"):
        presets.UnifiedLoader.execute(sd15[0], "STANDARD (medium strength)")


def test_light_error_names_the_published_bin(sd15, model_folder):
    model_folder("ipadapter", {})
    with pytest.raises(InvalidInputError) as info:
        presets.UnifiedLoader.execute(sd15[0], "LIGHT - SD1.5 only (low strength)")
    message = str(info.value)
    assert "ip-adapter_sd15_light_v11.bin from https://huggingface.co/h94/IP-Adapter" in message
    assert "light_v11.safetensors" not in message and "Found there: no loadable files" in message


def test_pulid_names_what_a_non_eva_file_is_and_where_the_eva_file_is(world_paths):
    assert pulid.eva_files()[0] == "EVA02_CLIP_L_336_psz14_s6B.pt"
    with pytest.raises(InvalidInputError) as info:
        pulid.load_eva(CLIP_VISION_FILES["vit-h"], "parsing_bisenet.pth")
    message = str(info.value)
    assert "is not EVA-CLIP: it is CLIP vision encoder (width 32" in message
    assert "EVA-CLIP files here: EVA02_CLIP_L_336_psz14_s6B.pt" in message


def pack_copy(root, name, source_pack="buffalo_l", replace=None):
    """<root>/models/<name>/ holding a copy of a world pack's files (replace: {file: other world file})."""
    source = WORLD / "models" / "insightface" / "models" / source_pack
    folder = root / "models" / name
    folder.mkdir(parents=True)
    for f in source.iterdir():
        shutil.copyfile((replace or {}).get(f.name, f), folder / f.name)
    return folder


@pytest.fixture
def insightface_root(world_paths, monkeypatch, tmp_path):
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "insightface", ([str(tmp_path)], set()))
    return tmp_path


def test_onnx_models_get_the_routers_roles(world_paths):
    source = WORLD / "models" / "insightface" / "models" / "buffalo_l"
    assert faces.pack_roles(str(source)) == {"1k3d68.onnx": "landmark", "2d106det.onnx": "landmark",
                                             "det_10g.onnx": "detection", "genderage.onnx": "genderage",
                                             "w600k_r50.onnx": "recognition"}


@needs_insightface
def test_a_pack_in_an_oddly_named_folder_is_found_by_its_models(insightface_root):
    pack_copy(insightface_root, "antelopev2", "antelopev2")
    folder = pack_copy(insightface_root, "buffalo_l (1)")
    assert faces.find_pack("buffalo_l") == str(folder)
    assert faces.load_analyzer("buffalo_l").folder == str(folder)


@needs_insightface
def test_a_pack_whose_recognizer_is_another_model_is_refused_with_what_each_file_is(insightface_root):
    source = WORLD / "models" / "insightface" / "models" / "buffalo_l"
    pack_copy(insightface_root, "buffalo_l", replace={"w600k_r50.onnx": source / "genderage.onnx"})
    pack_copy(insightface_root, "faces", "antelopev2")
    with pytest.raises(InvalidInputError) as info:
        faces.find_pack("buffalo_l")
    message = str(info.value)
    assert "missing w600k_r50.onnx; has 1k3d68.onnx (landmark)" in message
    assert "w600k_r50.onnx (genderage)" in message
    assert "faces (antelopev2: " in message and "glintr100.onnx recognition" in message


def test_without_the_onnx_package_known_file_names_stand_for_their_roles(world_paths, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    monkeypatch.setattr(faces, "_roles", {})  # roles read earlier in the session would answer otherwise
    source = WORLD / "models" / "insightface" / "models" / "antelopev2"
    assert faces.pack_roles(str(source)) == {"1k3d68.onnx": None, "2d106det.onnx": None, "genderage.onnx": None,
                                             "glintr100.onnx": "recognition", "scrfd_10g_bnkps.onnx": "detection"}
