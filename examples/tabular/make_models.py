"""Regenerate this example's model next to its spec; deterministic, so it rewrites the committed bytes."""

from pathlib import Path

from repoforge.modelgen import mlp, save_all

HERE = Path(__file__).resolve().parent


def main() -> None:
    classifier = mlp([8, 32, 3], seed=1, output_name="probabilities", softmax=True)
    for rel, digest in save_all({"models/classifier.onnx": classifier}, HERE).items():
        print(f"{digest}  {rel}")


if __name__ == "__main__":
    main()
