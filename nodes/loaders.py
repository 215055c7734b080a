"""Loader nodes."""
from comfy_api.latest import io

from . import model_cache, paths
from .types import IPAdapter

CATEGORY = "ipadapter_kit"


class ModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="IPAKitModelLoader",
            display_name="IPAdapter Kit: Load IP-Adapter",
            category=CATEGORY,
            description="Loads an IP-Adapter file from models/ipadapter. The kind (base, light, plus, full-face, "
                        "FaceID...) is read from the weights; one copy is kept however many nodes use it.",
            inputs=[io.Combo.Input("ipadapter_file", options=paths.weight_files("ipadapter"),
                                   tooltip="An IP-Adapter release (.safetensors or .bin) in models/ipadapter.")],
            outputs=[IPAdapter.Output(display_name="IPADAPTER")],
        )

    @classmethod
    def execute(cls, ipadapter_file):
        return io.NodeOutput(model_cache.load_adapter(ipadapter_file))
