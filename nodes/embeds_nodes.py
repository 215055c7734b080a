"""Embeds nodes: combine encoded references, save them as .safetensors and load them back."""
import json
import os

import torch
from safetensors import safe_open
from safetensors.torch import save_file

import folder_paths
from comfy_api.latest import io

from ..ipadapter_core.embeds import COMBINE_EMBEDS, combine
from ..ipadapter_core.errors import InvalidInputError
from .patching import EncodedReferences
from .types import Embeds

CATEGORY = "ipadapter_kit/embeds"
FORMAT = "ipadapter_kit.embeds/1"


class CombineEmbeds(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="IPAKitCombineEmbeds",
            display_name="IPAdapter Kit: Combine Embeds",
            category=CATEGORY,
            description="Joins or merges several encoded references (from Encode or Load Embeds) into one.",
            inputs=[
                Embeds.Input("embed1", tooltip="First encoded references."),
                io.Combo.Input("method", options=list(COMBINE_EMBEDS), default="concat",
                               tooltip="concat/separate keep every reference; add, subtract (first minus the mean of "
                                       "the rest), average, norm average, max and min (element-wise) merge them "
                                       "into one."),
                *[Embeds.Input(f"embed{i}", optional=True, tooltip=f"Encoded references {i} (optional).")
                  for i in range(2, 6)],
            ],
            outputs=[Embeds.Output(display_name="embeds")],
        )

    @classmethod
    def execute(cls, embed1, method, **others):
        parts = [embed1] + [others[k] for k in sorted(others) if others[k] is not None]
        kinds = {p.cond.shape[1:] for p in parts}
        if len(kinds) > 1:
            raise InvalidInputError(f"these embeds have different shapes {sorted(str(tuple(k)) for k in kinds)}: "
                                    "they were encoded for different adapters or CLIP vision models.")
        cond = torch.cat([p.cond for p in parts])
        uncond = torch.cat([p.uncond for p in parts])
        if method not in ("concat", "separate"):
            cond, uncond = combine(cond, method), uncond[:1]
        return io.NodeOutput(EncodedReferences(cond=cond, uncond=uncond, clip_output=embed1.clip_output))


class SaveEmbeds(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="IPAKitSaveEmbeds",
            display_name="IPAdapter Kit: Save Embeds",
            category=CATEGORY,
            description="Saves encoded references to ComfyUI's output folder as .safetensors (never pickle); "
                        "move the file to the input folder to load it in another graph.",
            inputs=[Embeds.Input("embeds", tooltip="Encoded references."),
                    io.String.Input("filename_prefix", default="ipadapter_embeds",
                                    tooltip="File name prefix inside the output folder.")],
            outputs=[io.String.Output(display_name="path")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, embeds, filename_prefix):
        folder, name, counter, _, _ = folder_paths.get_save_image_path(filename_prefix,
                                                                       folder_paths.get_output_directory())
        path = os.path.join(folder, f"{name}_{counter:05}.safetensors")
        metadata = {"format": FORMAT, "clip_output": embeds.clip_output,
                    "shape": json.dumps(list(embeds.cond.shape))}
        save_file({"cond": embeds.cond.float().contiguous().cpu(), "uncond": embeds.uncond.float().contiguous().cpu()},
                  path, metadata=metadata)
        return io.NodeOutput(path)


def embeds_files():
    folder = folder_paths.get_input_directory()
    files = [f for f in os.listdir(folder) if f.endswith(".safetensors")] if os.path.isdir(folder) else []
    return sorted(files) or ["(put .safetensors embeds in the input folder)"]


def read_embeds(path):
    """EncodedReferences from a file written by Save Embeds; refuses anything else with a clear error."""
    name = os.path.basename(path)
    try:
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises several types for damaged files
        raise InvalidInputError(f"{name}: cannot read it as .safetensors ({e}).") from e
    if metadata.get("format") != FORMAT or set(tensors) != {"cond", "uncond"}:
        raise InvalidInputError(f"{name}: not an IPAdapter Kit embeds file (format {metadata.get('format')!r}, "
                                f"tensors {sorted(tensors)}); save embeds with the Save Embeds node.")
    for key, tensor in tensors.items():
        if not torch.isfinite(tensor).all():
            raise InvalidInputError(f"{name}: the {key} embeds contain NaN or infinite values; expected finite "
                                    "encoder outputs. Encode the references again and re-save the file.")
    return EncodedReferences(cond=tensors["cond"], uncond=tensors["uncond"], clip_output=metadata.get("clip_output", ""))


class LoadEmbeds(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="IPAKitLoadEmbeds",
            display_name="IPAdapter Kit: Load Embeds",
            category=CATEGORY,
            description="Loads references saved by Save Embeds from ComfyUI's input folder. The apply node "
                        "checks they fit its adapter.",
            inputs=[io.Combo.Input("embeds_file", options=embeds_files(),
                                   tooltip="A .safetensors embeds file in the input folder.")],
            outputs=[Embeds.Output(display_name="embeds")],
        )

    @classmethod
    def execute(cls, embeds_file):
        path = os.path.join(folder_paths.get_input_directory(), embeds_file)
        if not os.path.isfile(path):
            raise InvalidInputError(f"{embeds_file} is not in the input folder ({folder_paths.get_input_directory()}).")
        return io.NodeOutput(read_embeds(path))
