"""IMAGE helpers: prepare references for CLIP vision, noise negatives."""
from comfy_api.latest import io

from ..ipadapter_core import image_ops
from . import clip_encode

CATEGORY = "ipadapter_kit/image"


class PrepImage(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="IPAKitPrepImage",
            display_name="IPAdapter Kit: Prep Image For CLIP Vision",
            category=CATEGORY,
            description="Crops (or pads) references to a square at the chosen position and resizes them to the "
                        "encoder size, so you decide what CLIP vision sees instead of its center crop.",
            inputs=[
                io.Image.Input("image", tooltip="Reference image(s)."),
                io.Combo.Input("interpolation", options=list(image_ops.INTERPOLATIONS),
                               default="lanczos (antialiased bicubic)",
                               tooltip="Resampling filter: lanczos is true Lanczos-3 (as PIL's LANCZOS, which "
                                       "IPAdapter_plus uses); 'lanczos (antialiased bicubic)' approximates it."),
                io.Combo.Input("crop_position", options=list(image_ops.CROP_POSITIONS), default="center",
                               tooltip="Which square to keep; pad keeps everything and adds black borders."),
                io.Float.Input("sharpening", default=0.0, min=0.0, max=1.0, step=0.05,
                               tooltip="Contrast-adaptive sharpening after resizing (as IPAdapter_plus): "
                                       "0 = none, 1 = strongest."),
                io.Int.Input("size", default=224, min=64, max=1024, step=8,
                             tooltip="Encoder input size (224 for ViT-H/bigG, 336 for Kolors' ViT-L)."),
            ],
            outputs=[io.Image.Output()],
        )

    @classmethod
    def execute(cls, image, interpolation, crop_position, sharpening, size):
        clip_encode.check_images(image)
        return io.NodeOutput(image_ops.prep_for_clip(clip_encode.to_rgb(image), size, interpolation, crop_position,
                                                     sharpening))


class NoiseImage(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="IPAKitNoiseImage",
            display_name="IPAdapter Kit: Noise Negative",
            category=CATEGORY,
            description="Makes a noise image to use as image_negative: often gives cleaner results than the "
                        "default black/zero negative.",
            inputs=[
                io.Combo.Input("type", options=list(image_ops.NOISE_TYPES), default="fade",
                               tooltip="fade: blend with noise; dissolve: replace random pixels; gaussian: add "
                                       "noise; shuffle: warp, flip and noise the image (as IPAdapter_plus)."),
                io.Float.Input("strength", default=0.5, min=0.0, max=1.0, step=0.05, tooltip="Amount of noise."),
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1, tooltip="Noise seed."),
                io.Image.Input("image", optional=True, tooltip="Image to noise (default: mid-gray 224x224)."),
                io.Int.Input("blur", default=0, min=0, max=32, step=1, optional=True,
                             tooltip="Gaussian blur of the result, kernel size in pixels (0 = none; even sizes "
                                     "are made odd)."),
            ],
            outputs=[io.Image.Output()],
        )

    @classmethod
    def execute(cls, type, strength, seed, image=None, blur=0):
        if image is not None:
            clip_encode.check_images(image)
            image = clip_encode.to_rgb(image)
        return io.NodeOutput(image_ops.noise_image(type, strength, image=image, seed=seed, blur=blur))
