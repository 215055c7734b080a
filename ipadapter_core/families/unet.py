"""SD1.5 and SDXL (and Kolors, an SDXL layout): ComfyUI's UNet, adapters on its cross-attentions (attn2)."""
from .. import blocks, weight_types
from ..attention import ATTN2_TABLE_KEY, IPAdapterPatch

OPTIONS_ARG = 5  # position of transformer_options in the UNet's DIFFUSION_MODEL call


def expose_attn2_table(executor, *args, **kwargs):
    """DIFFUSION_MODEL wrapper: a copy of transformer_options that also hands our attn2 patches the replace table,
    so they can run a (block, id) patch registered after them that their longer key would otherwise hide."""
    args = list(args)
    in_args = len(args) > OPTIONS_ARG
    options = args[OPTIONS_ARG] if in_args else kwargs.get("transformer_options")
    if isinstance(options, dict):
        table = options.get("patches_replace", {}).get("attn2", {})
        options = {**options, ATTN2_TABLE_KEY: table}
        if in_args:
            args[OPTIONS_ARG] = options
        else:
            kwargs["transformer_options"] = options
    return executor(*args, **kwargs)


class UNetFamily:
    """A UNet layout from blocks.LAYOUTS, its weight tables in weight_types."""

    hook = "attn2"
    wrapper_type = "diffusion_model"  # ComfyUI's WrappersMP.DIFFUSION_MODEL
    model_wrapper = staticmethod(expose_attn2_table)

    def __init__(self, name, example_adapter):
        self.name = name
        self.example_adapter = example_adapter
        self.adapter_layer_counts = (len(blocks.patch_keys(name)),)

    def keys(self):
        """attn2 keys (block, id, transformer_index) in adapter layer order."""
        return blocks.patch_keys(self.name)

    @staticmethod
    def _cross_attentions(diffusion_model):
        if not hasattr(diffusion_model, "input_blocks"):
            return []
        return [m for name, m in diffusion_model.named_modules() if name.endswith(".attn2")]

    def matches(self, diffusion_model):
        return len(self._cross_attentions(diffusion_model)) == self.adapter_layer_counts[0]

    def mismatch(self, diffusion_model):
        """What about this model differs from the family, for messages."""
        found = len(self._cross_attentions(diffusion_model))
        return f"a UNet with {self.adapter_layer_counts[0]} cross-attention layers (this model has {found})"

    def context_dim(self, diffusion_model):
        return self._cross_attentions(diffusion_model)[0].to_k.in_features

    def make_patch(self, prompts, diffusion_model, base_patches, models, attention=None, **host):
        return IPAdapterPatch(self.name, prompts, attention, base_patches, models)

    def owner(self, installed):
        """Our patch installed at an attn2 key, or None for another pack's."""
        return installed if isinstance(installed, IPAdapterPatch) else None

    def layer_weights(self, weight_type, weight, weight_composition=None, layers=None):
        return tuple(weight_types.layer_weights(weight_type, self.name, weight, weight_composition))

    def inverted_layers(self, weight_type):
        return weight_types.inverted_layers(weight_type, self.name)

    def parse_block_weights(self, text):
        table = weight_types.parse_block_weights(text, self.name)
        return tuple(table[i] for i in range(len(table)))

    @staticmethod
    def module_path(key):
        """ComfyUI (ldm) path of the transformer block behind an attn2 key."""
        block, number, index = key
        prefix = {"input": f"input_blocks.{number}.1", "middle": "middle_block.1",
                  "output": f"output_blocks.{number}.1"}
        return f"{prefix[block]}.transformer_blocks.{index}"


SD15 = UNetFamily("SD1.5", "ip-adapter_sd15")
SDXL = UNetFamily("SDXL", "ip-adapter_sdxl_vit-h")
