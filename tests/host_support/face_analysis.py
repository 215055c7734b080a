"""Test host only: stand-ins for the cubiq/ComfyUI_FaceAnalysis nodes the IPAdapter_plus examples use.

Same ids, inputs, widgets and outputs as the April 2024 version the examples were saved with (FaceBoundingBox:
padding, index; its outputs are lists). A simplification: there is no face detector here, so every image holds
exactly one face whose box is the whole picture (padding cannot grow it; index picks among the images' boxes).
"""
CATEGORY = "FaceAnalysis (test stand-in)"


class FaceAnalysisModels:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"library": (["insightface", "auraface", "dlib"],),
                             "provider": (["CPU", "CUDA", "DirectML", "OpenVINO", "ROCM", "CoreML"],)}}

    RETURN_TYPES = ("ANALYSIS_MODELS",)
    FUNCTION = "load_models"
    CATEGORY = CATEGORY

    def load_models(self, library, provider):
        return ({"library": library, "provider": provider},)


class FaceBoundingBox:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"analysis_models": ("ANALYSIS_MODELS",), "image": ("IMAGE",),
                             "padding": ("INT", {"default": 0, "min": 0, "max": 4096, "step": 1}),
                             "index": ("INT", {"default": -1, "min": -1, "max": 4096, "step": 1})}}

    RETURN_TYPES = ("IMAGE", "INT", "INT", "INT", "INT")
    RETURN_NAMES = ("IMAGE", "x", "y", "width", "height")
    FUNCTION = "bbox"
    CATEGORY = CATEGORY
    OUTPUT_IS_LIST = (True, True, True, True, True)

    def bbox(self, analysis_models, image, padding, index=-1):
        faces = [frame[None].clone() for frame in image]  # one face per image, boxed by the whole picture
        boxes = [(0, 0, int(face.shape[2]), int(face.shape[1])) for face in faces]
        if index != -1:
            index = min(index, len(faces) - 1)
            faces, boxes = faces[index:index + 1], boxes[index:index + 1]
        xs, ys, widths, heights = (list(column) for column in zip(*boxes))
        return (faces, xs, ys, widths, heights)


NODE_CLASS_MAPPINGS = {"FaceAnalysisModels": FaceAnalysisModels, "FaceBoundingBox": FaceBoundingBox}
