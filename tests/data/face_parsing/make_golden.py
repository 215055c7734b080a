"""Golden outputs of facexlib's BiSeNet on seeded random weights, for tests/test_face_parsing.py.

Run in a venv with facexlib 0.3.0 and the host's torch version (the weights and inputs come from torch's seeded
generator, which the test replays in the host venv; it checks per-tensor checksums before comparing):

    python tests/data/face_parsing/make_golden.py      # writes tests/data/face_parsing/bisenet_golden.npz

Records: facexlib's state-dict keys and shapes; main logits for a seeded 64 x 64 network input; the two auxiliary
heads' logits for a seeded 32 x 32 input; and the argmax labels of PuLID's parsing path (`get_id_embedding`: BGR
uint8 crop -> img2tensor(bgr2rgb=True) / 255 -> torchvision normalize(ImageNet mean/std) -> out[0].argmax(1)) on
a seeded 512 x 512 face-sized picture. The functions above `main` use torch only, so the test imports them.
"""
import json
import pathlib

import torch

SEED = 20240531
OUT = pathlib.Path(__file__).with_name("bisenet_golden.npz")


def seeded_state_dict(shapes, seed=SEED):
    """Random but well-scaled BiSeNet weights for {key: shape}, drawn in sorted key order from one generator."""
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for key in sorted(shapes):
        shape = tuple(shapes[key])
        leaf = key.rsplit(".", 1)[-1]
        if leaf == "num_batches_tracked":
            sd[key] = torch.tensor(0, dtype=torch.long)
        elif leaf == "running_var":
            sd[key] = 0.5 + torch.rand(shape, generator=gen)
        elif leaf == "running_mean":
            sd[key] = 0.1 * torch.randn(shape, generator=gen)
        elif len(shape) == 4:
            fan_in = shape[1] * shape[2] * shape[3]
            sd[key] = torch.randn(shape, generator=gen) * (2.0 / fan_in) ** 0.5
        elif leaf == "weight":
            sd[key] = 1.0 + 0.1 * torch.randn(shape, generator=gen)
        else:
            sd[key] = 0.1 * torch.randn(shape, generator=gen)
    return sd


def seeded_inputs(seed=SEED + 1):
    """(x64 (1, 3, 64, 64) net input, x32 (1, 3, 32, 32) net input, face (512, 512, 3) uint8 RGB picture)."""
    gen = torch.Generator().manual_seed(seed)
    x64 = torch.randn((1, 3, 64, 64), generator=gen)
    x32 = torch.randn((1, 3, 32, 32), generator=gen)
    coarse = torch.randint(0, 256, (16, 16, 3), generator=gen)  # integer steps only: no rounding ties
    fine = torch.randint(-12, 13, (512, 512, 3), generator=gen)
    blocks = coarse.repeat_interleave(32, dim=0).repeat_interleave(32, dim=1)
    return x64, x32, (blocks + fine).clamp(0, 255).to(torch.uint8)


def checksums(tensors):
    """float64 sum and sum of squares of each tensor, in the given order: (N, 2)."""
    return torch.tensor([[t.double().sum().item(), t.double().square().sum().item()] for t in tensors],
                        dtype=torch.float64)


def main():
    """Build facexlib's BiSeNet on the seeded weights and write the golden file."""
    import cv2
    import numpy as np
    from facexlib.parsing.bisenet import BiSeNet
    from facexlib.utils import img2tensor
    from torchvision.transforms.functional import normalize

    torch.set_num_threads(1)
    net = BiSeNet(num_class=19)
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    sd = seeded_state_dict(shapes)
    net.load_state_dict(sd, strict=True)
    net.eval()
    x64, x32, face = seeded_inputs()
    with torch.no_grad():
        out64 = net(x64)[0]
        _, aux16, aux32 = net(x32)
        # PuLID: align_face is facexlib's BGR uint8 crop.
        align_face = cv2.cvtColor(face.numpy(), cv2.COLOR_RGB2BGR)
        pixels = img2tensor(align_face, bgr2rgb=True).unsqueeze(0) / 255.0
        labels = net(normalize(pixels, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]))[0].argmax(dim=1)
    keys = sorted(shapes)
    np.savez_compressed(
        OUT, torch_version=np.array(torch.__version__), keys=np.array(list(net.state_dict())),
        shapes=np.array(json.dumps({k: list(s) for k, s in shapes.items()})),
        weight_checksums=checksums([sd[k] for k in keys]).numpy(),
        input_checksums=checksums([x64, x32, face]).numpy(),
        out64=out64.numpy(), aux16_32=aux16.numpy(), aux32_32=aux32.numpy(),
        labels512=labels[0].to(torch.uint8).numpy())
    counts = torch.bincount(labels.flatten(), minlength=19).tolist()
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes); torch {torch.__version__}; label counts at 512: {counts}")


if __name__ == "__main__":
    main()
