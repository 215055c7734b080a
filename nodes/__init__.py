"""ComfyUI adapters of the pack: V3 nodes over ipadapter_core."""
import logging

from comfy_api.latest import ComfyExtension

from . import checks
from . import (apply, clip_vision, composite, embeds_nodes, faceid, faces, image_nodes, instantid, loaders, presets,
               pulid, replacements, weights_nodes)

NODES = [loaders.ModelLoader, presets.UnifiedLoader, clip_vision.CLIPVisionLoader,
         apply.Encode, apply.Apply, apply.ApplyAdvanced,
         faces.InsightFaceLoader, faces.FaceCrops, faceid.UnifiedFaceIDLoader, faceid.ApplyFaceID, faceid.FaceIDLoRA,
         embeds_nodes.CombineEmbeds, embeds_nodes.SaveEmbeds, embeds_nodes.LoadEmbeds,
         image_nodes.PrepImage, image_nodes.NoiseImage,
         composite.StyleComposition, composite.ApplyTiled,
         composite.RegionalConditioning, composite.CombineParams, composite.ApplyRegions,
         weights_nodes.BlockWeights, weights_nodes.FrameWeights, *instantid.NODES,
         *pulid.NODES, *weights_nodes.NODES]
NODES = checks.guard_all(NODES)  # every FLOAT input finite, widget or link


class IPAdapterKitExtension(ComfyExtension):
    async def on_load(self):
        """Register the IPAdapter_plus node replacements (newer ComfyUI calls this; 0.3.75 does not)."""
        try:
            await replacements.register_plus_replacements()
        except Exception:  # the nodes still load; only opening IPAdapter_plus graphs directly is lost
            logging.exception("IPAdapter Kit: registering the IPAdapter_plus node replacements failed")

    async def get_node_list(self):
        return list(NODES)
