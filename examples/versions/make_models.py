"""Regenerate this example's models next to its spec; deterministic, so it rewrites the committed bytes."""

from pathlib import Path

from repoforge.modelgen import mlp, save_all

HERE = Path(__file__).resolve().parent


def main() -> None:
    # Same architecture, different seeds: the two scorer versions give different scores.
    models = {f"models/scorer_v{v}.onnx": mlp([4, 8, 1], seed=10 + v, output_name="score") for v in (1, 2)}
    models["models/ranker.onnx"] = mlp([4, 8, 2], seed=13, output_name="logits")
    for rel, digest in save_all(models, HERE).items():
        print(f"{digest}  {rel}")


if __name__ == "__main__":
    main()
