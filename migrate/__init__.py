"""Converter for ComfyUI_IPAdapter_plus, Flux IP-Adapter (x-flux-comfyui, ComfyUI-IPAdapter-Flux), SD3.5
IP-Adapter (ComfyUI-InstantX-IPAdapter-SD3), InstantID (ComfyUI_InstantID) and PuLID (PuLID_ComfyUI for SDXL,
ComfyUI-PuLID-Flux and its forks for Flux) workflows (UI or API format) to IPAdapter Kit nodes.

Standard library only: it runs without ComfyUI, as `python -m migrate in.json out.json` from the pack folder
(or `python path/to/pack/migrate in.json out.json`). ComfyUI imports it only for
the node replacements (replacements.py) it registers on newer hosts.

    from migrate import convert
    result = convert(workflow)        # result.workflow, result.report (list of str), result.exit_code
"""
from .converter import Conversion, convert, convert_file

__all__ = ["Conversion", "convert", "convert_file"]
