"""IPAdapter Kit: IP-Adapter nodes for ComfyUI. Registration happens in comfy_entrypoint (nothing at import)."""


async def comfy_entrypoint():
    """Register the model folders and return the pack's ComfyExtension."""
    import logging

    try:
        from .nodes import IPAdapterKitExtension, paths

        paths.register_model_folders()
        return IPAdapterKitExtension()
    except Exception:
        logging.exception("IPAdapter Kit: registering the nodes failed")
        raise
