"""Socket types of this pack (distinct from IPAdapter_plus's, whose objects differ)."""
from comfy_api.latest import io

IPAdapter = io.Custom("IPADAPTER_KIT")
Embeds = io.Custom("IPADAPTER_KIT_EMBEDS")
InsightFace = io.Custom("INSIGHTFACE_KIT")
Params = io.Custom("IPADAPTER_KIT_PARAMS")
FrameWeights = io.Custom("IPADAPTER_KIT_FRAME_WEIGHTS")
FaceTokens = io.Custom("IPAKIT_FACE_TOKENS")
EVAClip = io.Custom("IPAKIT_EVA_CLIP")
WeightsStrategy = io.Custom("IPADAPTER_KIT_WEIGHTS_STRATEGY")
