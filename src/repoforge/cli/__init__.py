"""The `repoforge` command line: one module per command group. It only parses and prints: every command is a
function in the package, known errors become one clean line (cli/common.py) and Ctrl-C exits 130."""

from __future__ import annotations

import click

from repoforge import __version__
from repoforge.cli.common import LazyGroup

__all__ = ["main"]

#: Every command: name → ("module:attr" of its click command, the one line `repoforge --help` shows for it).
#: A command's module (and what it imports) is loaded only when that command runs or shows its own help.
COMMANDS: dict[str, tuple[str, str]] = {
    "init": ("repoforge.cli.spec:init", "Write a starter spec.yaml and a small example ONNX model into DIRECTORY."),
    "build": ("repoforge.cli.build:build", "Build SPEC (spec.yaml) into a model repository at OUTPUT."),
    "schema": ("repoforge.cli.spec:schema",
               "Print the JSON Schema of spec.yaml (for editor completion and validation)."),
    "lint": ("repoforge.cli.lint:lint", "Check any Triton model repository statically against Triton's "
             "load-time rules (no server started)."),
    "import": ("repoforge.cli.repository:import_", "Turn an existing Triton model repository into a spec, so "
               "`repoforge build` gives it back."),
    "validate": ("repoforge.cli.serving:validate", "Load REPOSITORY in a real Triton and smoke-infer every model."),
    "serve": ("repoforge.cli.serving:serve", "Serve REPOSITORY with a real tritonserver until Ctrl-C."),
    "doctor": ("repoforge.cli.doctor:doctor", "Report what this machine can serve (Triton, tracing, backends, "
               "perf_analyzer, GPU) and how to fill each gap, then the optional extras (Ray, OpenVINO, torch, "
               "TorchServe, promtool, Redis) and the commands each enables."),
    "perf": ("repoforge.cli.measure:perf", "Measure MODEL with perf_analyzer."),
    "tune": ("repoforge.cli.measure:tune", "Find MODEL's max_batch_size, preferred batch sizes, queue delay and "
             "instance count with the best throughput whose p99 stays within the budget (what Model Analyzer "
             "sweeps)."),
    "optimize": ("repoforge.cli.optimize:optimize", "Make each variant of SPEC's models (fp32, ort_optimized, int8, "
                 "fp16, ...), gate it on accuracy against the original on the validation data, time the variants "
                 "side by side and select one (the spec's `optimize:`)."),
    "batch": ("repoforge.cli.batch:batch", "Score every row of DATA with MODEL, resumably."),
    "deploy": ("repoforge.cli.release:deploy", "Deploy a build: Kubernetes manifests (k8s: autoscaling, alerts, a "
               "dashboard) or KServe (kserve)."),
    "image": ("repoforge.cli.release:image", "Write a Dockerfile and its complete context for BUILD_DIR's server "
              "image into OUTPUT."),
    "rollout": ("repoforge.cli.release:rollout", "Release CANDIDATE behind ROUTER on a live Triton, judged every "
                "--interval on the candidate's error rate, p99 and (before any traffic, where the router shadows "
                "it) agreement with the primary; rolled back after --threshold failed checks."),
    "drift": ("repoforge.cli.drift:drift", "Data drift: profile reference data once, then compare current data "
              "with it (PSI, Kolmogorov-Smirnov)."),
    "gateway": ("repoforge.cli.gateway:gateway_command", "Serve TARGET's models over HTTP, SSE, WebSocket and an "
                "asynchronous queue."),
    "worker": ("repoforge.cli.gateway:worker_command", "Answer the gateway's queued requests through TARGET (a "
               "Triton build folder or HOST:PORT)."),
}  # fmt: skip


@click.group(
    cls=LazyGroup,
    table=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="repoforge")
def main() -> None:
    """Build NVIDIA Triton model repositories from one declarative spec, and prove them in a real server.

    \b
    Typical flow:
      repoforge init my-project            # starter spec.yaml + a small ONNX model
      repoforge build my-project/spec.yaml -o repo
      repoforge validate repo              # load in a real Triton, smoke-infer every model
      repoforge lint any_triton_repo       # Triton's load-time rules, checked statically
      repoforge import any_triton_repo -o spec.yaml   # bring a hand-written repository under a spec
      repoforge serve repo                 # HTTP :8000, gRPC :8001, metrics :8002
    """
