"""Generate the perf benchmark model next to its spec (deterministic; `models.sha256` pins the bytes).

The model (about 1.6 MB) is not committed; run this before using the spec.
"""

from pathlib import Path

from repoforge.modelgen import SMALL_MLP, mlp, save_all

HERE = Path(__file__).resolve().parent


def main() -> None:
    model = mlp(SMALL_MLP, seed=0, input_name="x", output_name="y")
    for rel, digest in save_all({"models/mlp.onnx": model}, HERE).items():
        print(f"{digest}  {rel}")


if __name__ == "__main__":
    main()
