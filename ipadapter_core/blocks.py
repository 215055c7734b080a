"""Which ComfyUI attn2 patch key feeds which adapter layer, per architecture (data, checked by tests).

Each row is (block, block id, transformers in that block), listed in the adapter files' layer order
(diffusers' processor order: down blocks, up blocks, mid block). Layer i uses ip_adapter.{2i+1}.
"""

LAYOUTS = {
    "SD1.5": [
        ("input", 1, 1), ("input", 2, 1), ("input", 4, 1), ("input", 5, 1), ("input", 7, 1), ("input", 8, 1),
        ("output", 3, 1), ("output", 4, 1), ("output", 5, 1), ("output", 6, 1), ("output", 7, 1),
        ("output", 8, 1), ("output", 9, 1), ("output", 10, 1), ("output", 11, 1),
        ("middle", 0, 1),
    ],
    "SDXL": [
        ("input", 4, 2), ("input", 5, 2), ("input", 7, 10), ("input", 8, 10),
        ("output", 0, 10), ("output", 1, 10), ("output", 2, 10), ("output", 3, 2), ("output", 4, 2),
        ("output", 5, 2),
        ("middle", 0, 10),
    ],
}


def patch_keys(arch):
    """[(block, block_id, transformer_index)] in adapter layer order."""
    return [(block, number, t) for block, number, depth in LAYOUTS[arch] for t in range(depth)]


def layer_of_key(arch):
    """{(block, block_id, transformer_index): adapter layer index}."""
    return {key: i for i, key in enumerate(patch_keys(arch))}
