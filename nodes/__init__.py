"""ComfyUI adapters of the pack: V3 nodes over ipadapter_core."""
from comfy_api.latest import ComfyExtension

from . import apply, faceid, faces, loaders, presets

NODES = [loaders.ModelLoader, presets.UnifiedLoader, apply.Encode, apply.Apply, apply.ApplyAdvanced,
         faces.InsightFaceLoader, faces.FaceCrops, faceid.UnifiedFaceIDLoader, faceid.ApplyFaceID, faceid.FaceIDLoRA]


class IPAdapterKitExtension(ComfyExtension):
    async def get_node_list(self):
        return list(NODES)
