"""What a TorchServe build adds to its lock file for `deploy` and `image`: every archive runs on the build's
device, and the stock image is TorchServe's of the TorchServe it was built with."""

from __future__ import annotations

from repoforge.deploy.build_info import BuildInfo, StockImage, every_model_runs

#: TorchServe's published images, per version and device.
TORCHSERVE_IMAGE = "pytorch/torchserve:{version}-{device}"


def describe_build(info: BuildInfo) -> BuildInfo:
    every_model_runs(info)
    version = str(info.versions.get("torchserve") or "0.12.0")
    info.image = StockImage(
        base=TORCHSERVE_IMAGE.format(version=version, device="gpu" if info.device == "gpu" else "cpu"),
        server="torchserve",
        python="python",
        runs="TorchServe's workers",
    )
    return info
