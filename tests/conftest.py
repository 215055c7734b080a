"""Puts the ComfyUI test host on sys.path and loads this pack as the package `ipadapter_kit`."""
import importlib.util
import pathlib
import sys

import host_env

ROOT = pathlib.Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"


COMFYUI_ROOT = host_env.comfy_root()
for p in (str(COMFYUI_ROOT), str(TESTS)):
    if p not in sys.path:
        sys.path.insert(0, p)


import comfy.cli_args  # noqa: E402

comfy.cli_args.args.cpu = True  # the tests run on the CPU whatever torch build the host has


def _load_pack():
    spec = importlib.util.spec_from_file_location(
        "ipadapter_kit", ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["ipadapter_kit"] = module
    spec.loader.exec_module(module)
    return module


if "ipadapter_kit" not in sys.modules:
    _load_pack()


import pytest  # noqa: E402
import torch  # noqa: E402

WORLD_DIR = ROOT / ".fixtures" / "world"


@pytest.fixture
def one_thread():
    """One torch thread for the test: tiny models are many tiny matmuls, and two OpenMP threads on a busy 2-core
    machine run them several times slower (a tiny SD3.5 forward: 13 s instead of 0.1 s)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def world():
    """The tiny models/ and input/ folders (built once, cached across runs)."""
    from tinymodels import world as world_builder

    return world_builder.build(WORLD_DIR)


@pytest.fixture(scope="session")
def comfy_server(world, tmp_path_factory):
    """The real ComfyUI server with this pack, on the tiny models; stopped by PID at the end."""
    from comfy_server import ComfyServer

    server = ComfyServer(COMFYUI_ROOT, world, tmp_path_factory.mktemp("comfy"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def world_paths(world):
    """Registers the tiny world's model folders with the in-process folder_paths (as the server's yaml does)."""
    import folder_paths

    from ipadapter_kit.nodes import paths

    for name in ("checkpoints", "clip_vision", "ipadapter", "insightface", "loras", "controlnet", "instantid", "pulid",
                 "clip", "facexlib"):
        folder_paths.add_model_folder_path(name, str(world / "models" / name))
    for legacy in paths.LEGACY_IPADAPTER_FOLDERS:  # the Flux packs' folders, as users have them
        folder_paths.add_model_folder_path("ipadapter", str(world / "models" / legacy))
    paths.register_model_folders()
    folder_paths.filename_list_cache.clear()
    return world


@pytest.fixture(scope="session")
def sd15(world_paths):
    """(model, positive, negative) of the tiny SD1.5 checkpoint, loaded in-process."""
    import comfy.sd
    import host_support  # noqa: F401  (registers the tiny model configs)

    path = world_paths / "models" / "checkpoints" / "v1-5-pruned-emaonly.safetensors"
    model, clip, _, _ = comfy.sd.load_checkpoint_guess_config(str(path))
    positive = clip.encode_from_tokens_scheduled(clip.tokenize("a photo of a cat"))
    negative = clip.encode_from_tokens_scheduled(clip.tokenize("blurry"))
    return model, positive, negative


@pytest.fixture(scope="session")
def flux(world_paths):
    """(model, positive, negative) of the tiny Flux.1-dev checkpoint, in-process, with FluxGuidance 3.5."""
    import comfy.sd
    import host_support  # noqa: F401  (registers the tiny model configs)
    import node_helpers

    from tinymodels.world import CHECKPOINT_FLUX

    path = world_paths / "models" / "checkpoints" / CHECKPOINT_FLUX
    model, clip, _, _ = comfy.sd.load_checkpoint_guess_config(str(path))

    def encode(text):
        cond = clip.encode_from_tokens_scheduled(clip.tokenize(text))
        return node_helpers.conditioning_set_values(cond, {"guidance": 3.5})

    return model, encode("a photo of a cat"), encode("")


@pytest.fixture(scope="session")
def sd35(world_paths):
    """(model, positive, negative) of the tiny SD3.5 Large all-in-one checkpoint, loaded in-process."""
    import comfy.sd
    import host_support  # noqa: F401  (registers the tiny model configs)

    from tinymodels.world import CHECKPOINT_SD35

    path = world_paths / "models" / "checkpoints" / CHECKPOINT_SD35
    model, clip, _, _ = comfy.sd.load_checkpoint_guess_config(str(path))
    positive = clip.encode_from_tokens_scheduled(clip.tokenize("a photo of a cat"))
    negative = clip.encode_from_tokens_scheduled(clip.tokenize(""))
    return model, positive, negative


@pytest.fixture(scope="session")
def sdxl_ckpt(world_paths):
    """(model, positive, negative) of the tiny SDXL base all-in-one checkpoint (sd_xl_base_1.0), loaded in-process."""
    import comfy.sd
    import host_support  # noqa: F401  (registers the tiny model configs)

    from tinymodels.world import CHECKPOINT_SDXL

    path = world_paths / "models" / "checkpoints" / CHECKPOINT_SDXL
    model, clip, _, _ = comfy.sd.load_checkpoint_guess_config(str(path))
    positive = clip.encode_from_tokens_scheduled(clip.tokenize("a photo of a cat"))
    negative = clip.encode_from_tokens_scheduled(clip.tokenize("blurry"))
    return model, positive, negative
