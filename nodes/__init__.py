"""ComfyUI adapters of the pack: V3 nodes over ipadapter_core."""
from comfy_api.latest import ComfyExtension

from . import checks
from . import (apply, clip_vision, composite, embeds_nodes, faceid, faces, image_nodes, instantid, loaders, presets,
               pulid, weights_nodes)

NODES = [loaders.ModelLoader, presets.UnifiedLoader, clip_vision.CLIPVisionLoader,
         apply.Encode, apply.Apply, apply.ApplyAdvanced,
         faces.InsightFaceLoader, faces.FaceCrops, faceid.UnifiedFaceIDLoader, faceid.ApplyFaceID, faceid.FaceIDLoRA,
         embeds_nodes.CombineEmbeds, embeds_nodes.SaveEmbeds, embeds_nodes.LoadEmbeds,
         image_nodes.PrepImage, image_nodes.NoiseImage,
         composite.StyleComposition, composite.ApplyTiled,
         composite.RegionalConditioning, composite.CombineParams, composite.ApplyRegions,
         weights_nodes.BlockWeights, weights_nodes.FrameWeights, *instantid.NODES,
         *pulid.NODES]
NODES = checks.guard_all(NODES)  # every FLOAT input finite, widget or link


class IPAdapterKitExtension(ComfyExtension):
    async def get_node_list(self):
        return list(NODES)
