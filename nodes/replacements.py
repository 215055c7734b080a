"""Registers the exact IPAdapter_plus node replacements with ComfyUI's Node Replacement API, on hosts that have it."""
from ..migrate.replacements import plus_replacements


async def register_plus_replacements():
    """Register every exact IPAdapter_plus -> IPAKit replacement; how many (0 where the host has no such API)."""
    from comfy_api.latest import ComfyAPI, io

    node_replace = getattr(io, "NodeReplace", None)  # ComfyUI 0.3.75 has neither of the two
    registry = getattr(ComfyAPI(), "node_replacement", None) if node_replace is not None else None
    if registry is None:
        return 0
    found = plus_replacements()
    for arguments in found:
        await registry.register(node_replace(**arguments))
    return len(found)
