"""ComfyUI adapters of the pack: V3 nodes over ipadapter_core."""
from comfy_api.latest import ComfyExtension

from . import loaders


class IPAdapterKitExtension(ComfyExtension):
    async def get_node_list(self):
        return [loaders.ModelLoader]
