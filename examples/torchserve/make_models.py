"""Generate this example's PyTorch models next to its spec (or into OUT_DIR/models).

    python examples/torchserve/make_models.py [OUT_DIR]

Weights are seeded, so the models compute the same numbers every time; the files themselves are not
byte-stable (torch's archives carry a random id), so unlike the ONNX examples they are not committed.
The ONNX classifier is reused from examples/tabular.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from scaler import Scaler  # noqa: E402
from tinynet import TinyNet  # noqa: E402


def main(out_dir: Path = HERE) -> dict[str, Path]:
    models = out_dir / "models"
    models.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    tiny = TinyNet().eval()
    torch.jit.script(tiny).save(str(models / "tinynet.pt"))
    scaler = Scaler()
    with torch.no_grad():
        scaler.scale.copy_(torch.linspace(0.5, 2.0, 8))
        scaler.shift.copy_(torch.linspace(-1.0, 1.0, 8))
    torch.save(scaler.state_dict(), models / "scaler.pth")
    written = {"tinynet.pt": models / "tinynet.pt", "scaler.pth": models / "scaler.pth"}
    for name, path in written.items():
        print(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  models/{name}")
    return written


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else HERE)
