"""Regenerate this example's scorers next to its spec; deterministic, so it rewrites the committed bytes.

The scorers' input width is the features plugin's output width, computed from spec.yaml itself.
"""

from pathlib import Path

from repoforge.modelgen import mlp, save_all
from repoforge.spec import load_spec
from repoforge.spec.plugins import FeaturesPlugin, output_dim

HERE = Path(__file__).resolve().parent


def feature_width() -> int:
    spec = load_spec(HERE / "spec.yaml").spec
    return next(output_dim(m.plugin) for m in spec.models if isinstance(m.plugin, FeaturesPlugin))


def main() -> None:
    width = feature_width()
    models = {
        f"models/scorer_{name}.onnx": mlp([width, 16, 1], seed=seed, input_name="features", output_name="score")
        for name, seed in (("a", 11), ("b", 12), ("c", 13))
    }
    for rel, digest in save_all(models, HERE).items():
        print(f"{digest}  {rel}")


if __name__ == "__main__":
    main()
