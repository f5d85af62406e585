"""`repoforge lint` against a corpus of broken and sound model repositories.

tests/lint_corpus/invalid/<case>/ is a tiny repository that Triton 2.51 refuses to load, with
expect.txt holding a substring of the lint error that explains it. tests/lint_corpus/valid/<case>/
loads; an expect.txt there names a *warning* lint must give (Triton loads it, but it is likely a
mistake). The unit tests check lint against the corpus; the integration test proves the corpus
against the real tritonserver, so the rules are Triton's and not guesses.

The corpus describes the bundled CPU-only server with the python backend, hence CORPUS_FACTS.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import json
import re
import shutil
import time
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from repoforge.lint import (
    Finding,
    LintReport,
    backends_in,
    known_backends_of,
    lint_config,
    lint_repository,
)
from repoforge.lint.locate import Key, format_path, positions

ROOT = Path(__file__).resolve().parents[2]
CORPUS = Path(__file__).resolve().parents[1] / "lint_corpus"
INVALID = sorted(p for p in (CORPUS / "invalid").iterdir() if p.is_dir())
VALID = sorted(p for p in (CORPUS / "valid").iterdir() if p.is_dir())
#: The server the corpus was proven against: the PyTriton bundle (python backend only), no GPU.
CORPUS_FACTS = {"known_backends": {"python"}, "gpu_count": 0}


def expected(case: Path) -> str:
    return (case / "expect.txt").read_text(encoding="utf-8").strip()


def flags(case: Path, report: LintReport) -> bool:
    want = expected(case)
    return any(want in f.message or want in f.field for f in report.errors)


# --------------------------------------------------------------------------------------------
# The corpus, statically
# --------------------------------------------------------------------------------------------
def test_corpus_size() -> None:
    assert len(INVALID) >= 40, len(INVALID)
    assert len(VALID) >= 10, len(VALID)
    for case in INVALID:
        assert expected(case), f"{case.name}: empty expect.txt"


@pytest.mark.parametrize("case", INVALID, ids=lambda p: p.name)
def test_lint_flags_invalid_case(case: Path) -> None:
    report = lint_repository(case, **CORPUS_FACTS)
    assert not report.ok and report.exit_code == 1
    assert flags(case, report), f"expected an error containing {expected(case)!r}, got:\n{report.format()}"
    for f in report.findings:  # every finding names a model and a file, and says what to do
        assert f.model and f.file, f


def test_lint_flags_at_least_90_percent_of_the_invalid_corpus() -> None:
    flagged = [c.name for c in INVALID if flags(c, lint_repository(c, **CORPUS_FACTS))]
    assert len(flagged) / len(INVALID) >= 0.9, sorted({c.name for c in INVALID} - set(flagged))


@pytest.mark.parametrize("case", VALID, ids=lambda p: p.name)
def test_lint_passes_valid_case(case: Path) -> None:
    for facts in (CORPUS_FACTS, {}):
        report = lint_repository(case, **facts)
        assert report.ok and report.exit_code == 0, f"false error(s) with {facts}:\n{report.format()}"
    if (case / "expect.txt").exists():
        want = expected(case)
        assert any(want in f.message for f in report.warnings), f"expected a warning with {want!r}:\n{report.format()}"


# --------------------------------------------------------------------------------------------
# Details of the API
# --------------------------------------------------------------------------------------------
def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


SIMPLE = (
    'name: "m"\nbackend: "python"\nmax_batch_size: 8\n'
    'input [ { name: "IN" data_type: TYPE_FP32 dims: [ -1 ] } ]\n'
    'output [ { name: "OUT" data_type: TYPE_FP32 dims: [ -1 ] } ]\n'
)


def test_parse_error_carries_file_line_and_column() -> None:
    report = lint_repository(CORPUS / "invalid" / "parse_unknown_field")
    (err,) = report.errors
    assert (err.line, err.column) == (3, 1)
    assert err.file.endswith("parse_unknown_field/m/config.pbtxt")
    assert str(err).startswith(f"{err.file}:3:1: error: model 'm'")


def test_semantic_findings_point_at_the_field() -> None:
    report = lint_repository(CORPUS / "invalid" / "dims_zero")
    (err,) = report.errors
    assert err.field == "input[0].dims" and err.line == 5 and err.column is not None
    line = (CORPUS / "invalid" / "dims_zero" / "m" / "config.pbtxt").read_text().splitlines()[4]
    assert line[err.column - 1 :].startswith("dims: [ 0 ]")
    report = lint_repository(CORPUS / "invalid" / "ensemble_input_map_unknown_input")
    (err,) = [f for f in report.errors if "NOPE" in f.message]
    assert err.model == "pipe" and err.field == "ensemble_scheduling.step[0].input_map[NOPE]"
    text = (CORPUS / "invalid" / "ensemble_input_map_unknown_input" / "pipe" / "config.pbtxt").read_text()
    assert 'key: "NOPE"' in text.splitlines()[err.line - 1]


def test_positions_of_lists_maps_and_nested_messages() -> None:
    text = (CORPUS / "valid" / "dynamic_batching_priorities" / "m" / "config.pbtxt").read_text()
    pos = positions(text, mc.ModelConfig.DESCRIPTOR)
    lines = text.splitlines()
    assert lines[pos[("input", 0)][0] - 1].lstrip().startswith('{ name: "IN"')
    assert "priority_queue_policy" in lines[pos[("dynamic_batching", "priority_queue_policy", Key("1"))][0] - 1]
    assert "preferred_batch_size" in lines[pos[("dynamic_batching", "preferred_batch_size", 1)][0] - 1]
    assert (
        format_path(("ensemble_scheduling", "step", 2, "input_map", Key("A")))
        == "ensemble_scheduling.step[2].input_map[A]"
    )


def test_report_to_dict_and_exit_codes(tmp_path: Path) -> None:
    report = lint_repository(CORPUS / "valid" / "warn_instance_count_zero")
    data = report.to_dict()
    assert data["ok"] is True and data["errors"] == 0 and data["warnings"] >= 1 and data["models"] == ["m"]
    assert set(data["findings"][0]) == {"severity", "model", "field", "message", "file", "line", "column"}
    json.dumps(data)
    assert report.exit_code == 0 and "0 error(s)" in report.format()
    assert lint_repository(tmp_path / "nope").exit_code == 1


def test_unknown_backend_is_a_warning_unless_the_server_is_known(tmp_path: Path) -> None:
    repo = _write(tmp_path, {"m/config.pbtxt": SIMPLE.replace('"python"', '"mybackend"'), "m/1/model.mybackend": ""})
    soft = lint_repository(repo)
    assert soft.ok and any("mybackend" in w.message for w in soft.warnings)
    hard = lint_repository(repo, known_backends={"python", "onnxruntime"})
    assert not hard.ok and "not installed" in hard.errors[0].message


def test_kind_gpu_is_a_warning_unless_the_gpu_count_is_known() -> None:
    case = CORPUS / "invalid" / "kind_gpu_on_cpu_server"
    assert lint_repository(case).ok
    assert any("KIND_GPU" in w.message for w in lint_repository(case).warnings)
    assert not lint_repository(case, gpu_count=0).ok
    assert lint_repository(case, gpu_count=1).ok


def test_an_unset_instance_count_is_not_warned_about() -> None:
    """Triton uses its default count when `count` is left out; only a written 0 (or less) is worth a word."""
    report = lint_repository(CORPUS / "valid" / "instance_count_unset", **CORPUS_FACTS)
    assert report.ok and not [w for w in report.warnings if "count" in w.message], report.format()
    written = lint_repository(CORPUS / "valid" / "warn_instance_count_zero", **CORPUS_FACTS)
    assert [w.field for w in written.warnings if "count is 0" in w.message] == ["instance_group[0].count"]
    cfg = text_format.Parse(SIMPLE + "instance_group [ { kind: KIND_CPU } ]\n", mc.ModelConfig())
    assert not lint_config(cfg).warnings  # no text: an unset count cannot be told from 0, so no warning


def test_lint_config_checks_a_single_config(tmp_path: Path) -> None:
    cfg = text_format.Parse(SIMPLE, mc.ModelConfig())
    assert lint_config(cfg).ok  # no folder: only the config itself
    cfg.input[0].dims[:] = [0]
    cfg.dynamic_batching.preferred_batch_size.append(16)
    report = lint_config(cfg, text=text_format.MessageToString(cfg))
    assert {f.field for f in report.errors} == {"input[0].dims", "dynamic_batching.preferred_batch_size[0]"}
    assert all(f.line for f in report.errors)
    model_dir = _write(tmp_path, {"m/config.pbtxt": SIMPLE}) / "m"
    report = lint_config(text_format.Parse(SIMPLE, mc.ModelConfig()), model_dir)
    assert not report.ok and "no version folder" in report.errors[0].message


def test_model_without_config_is_auto_completed(tmp_path: Path) -> None:
    repo = _write(tmp_path, {"m/1/model.py": "", "n/1/weights.bin": ""})
    report = lint_repository(repo)
    assert any(f.model == "m" and "auto-completes" in f.message for f in report.warnings)
    assert report.models_with_errors() == {"n"}


def test_hidden_and_stray_folders_are_models_to_triton(tmp_path: Path) -> None:
    repo = _write(tmp_path, {"m/config.pbtxt": SIMPLE, "m/1/model.py": "", ".ipynb_checkpoints/x.txt": "",
                             "__pycache__/y.pyc": ""})  # fmt: skip
    report = lint_repository(repo)
    assert report.models_with_errors() == {".ipynb_checkpoints", "__pycache__"}
    assert "move it out" in report.for_model(".ipynb_checkpoints")[0].message


def test_known_backends_of_lists_the_backends_folder(tmp_path: Path) -> None:
    _write(tmp_path, {"backends/python/libtriton_python.so": "", "backends/vllm/model.py": "", "backends/junk/x": ""})
    assert backends_in(tmp_path / "backends") == {"python", "vllm"}
    bundled = shutil.which("tritonserver") or None
    try:
        found = known_backends_of(bundled)
    except FileNotFoundError:
        pytest.skip("no tritonserver installed")
    assert "python" in found
    if bundled is None:  # the pytriton-bundled server repoforge runs: with its Python-based native backends
        assert {"onnxruntime", "pytorch"} <= found


def test_repoforge_builds_lint_clean(tmp_path: Path) -> None:
    """A CPU build serves ONNX with backend onnxruntime (issue 21), which the bundled server as repoforge runs it
    has (a Python-based backend in its private backend folder): lint with that server's own facts."""
    from repoforge.build import build

    facts = {**CORPUS_FACTS, "known_backends": known_backends_of(None)}
    assert {"python", "onnxruntime", "pytorch"} <= facts["known_backends"]
    for example in ("ensemble", "versions"):
        out = build(ROOT / "examples" / example / "spec.yaml", tmp_path / example, device="cpu").output
        report = lint_repository(out, **facts)
        assert report.ok, report.format()


# --------------------------------------------------------------------------------------------
# The corpus against the real tritonserver
# --------------------------------------------------------------------------------------------
def _roots(case: Path) -> tuple[list[str], list[str]]:
    """(all model folders, the ones no ensemble of the case calls): loading a root loads its steps."""
    models, called = [], set()
    for model in sorted(p for p in case.iterdir() if p.is_dir()):
        models.append(model.name)
        with contextlib.suppress(OSError, text_format.ParseError):
            cfg = text_format.Parse((model / "config.pbtxt").read_text(), mc.ModelConfig())
            called |= {st.model_name for st in cfg.ensemble_scheduling.step}
    return models, [m for m in models if m not in called]


def _step_key(model: Path) -> str | None:
    """Content of a step model (config without its name, and every file), or None if it cannot be
    shared (no config, unparseable, an ensemble, a name that differs from the folder)."""
    try:
        cfg = text_format.Parse((model / "config.pbtxt").read_text(), mc.ModelConfig())
    except (OSError, text_format.ParseError):
        return None
    if cfg.platform == "ensemble" or cfg.name not in ("", model.name):
        return None
    cfg.ClearField("name")
    files = sorted((str(p.relative_to(model)), p.read_bytes().hex()) for p in model.rglob("*") if p.is_file()
                   and p.name != "config.pbtxt")  # fmt: skip
    return json.dumps([model.name, text_format.MessageToString(cfg), files])


def _copy_case(case: Path, repo: Path, prefix: str, shared: dict[str, str] | None = None) -> dict[str, str]:
    """Copy a case into a combined repository with every model name prefixed; returns folder -> name.

    Names are rewritten through the protobuf (config name and ensemble step model_name), so a name
    that did not match its folder still does not; a config that does not parse is copied as it is
    (none of those set a name). With ``shared``, step models (those an ensemble of the case calls)
    that are identical across cases are copied once, as ``shared<N>_<name>``: fewer python stubs.
    """
    called = set()
    for model in case.iterdir():
        with contextlib.suppress(OSError, text_format.ParseError):
            cfg = text_format.Parse((model / "config.pbtxt").read_text(), mc.ModelConfig())
            called |= {st.model_name for st in cfg.ensemble_scheduling.step}
    names: dict[str, str] = {}
    for item in sorted(case.iterdir()):
        if item.is_file():
            if item.name not in ("expect.txt", "server.txt"):
                assert not (repo / item.name).exists(), f"two cases need {item.name} beside their models"
                shutil.copy(item, repo / item.name)
            continue
        key = _step_key(item) if shared is not None and item.name in called else None
        if key is not None and key in shared:  # type: ignore[operator]
            names[item.name] = shared[key]  # type: ignore[index]
            continue
        names[item.name] = f"shared{len(shared)}_{item.name}" if key is not None else prefix + item.name  # type: ignore[arg-type]
        if key is not None:
            shared[key] = names[item.name]  # type: ignore[index]
        shutil.copytree(item, repo / names[item.name])
    for name in names.values():
        cfg_path = repo / name / "config.pbtxt"
        if not name.startswith(prefix):
            if name.startswith("shared") and cfg_path.exists():
                cfg = text_format.Parse(cfg_path.read_text(), mc.ModelConfig())
                if cfg.name and cfg.name != name:
                    cfg.name = name
                    cfg_path.write_text(text_format.MessageToString(cfg))
            continue
        try:
            cfg = text_format.Parse(cfg_path.read_text(), mc.ModelConfig())
        except (OSError, text_format.ParseError):
            assert not cfg_path.exists() or not re.search(r"^\s*name\s*:", cfg_path.read_text(), re.MULTILINE), cfg_path
            continue
        if cfg.name:
            cfg.name = names.get(cfg.name, prefix + cfg.name)
        for st in cfg.ensemble_scheduling.step:
            st.model_name = names.get(st.model_name, prefix + st.model_name)
        cfg_path.write_text(text_format.MessageToString(cfg))
    return names


def _load_all(server, names: list[str], timeout: float, workers: int = 4) -> dict[str, str | None]:  # type: ignore[no-untyped-def]
    from repoforge.servers.triton import TritonAPIError

    def load(name: str) -> tuple[str, str | None]:
        try:
            server.load_model(name, timeout=timeout)
            return name, None
        except TritonAPIError as exc:
            return name, str(exc)
        except OSError as exc:  # no answer in time: the model never became ready
            return name, f"no answer within {timeout:.0f} s ({exc})"

    with cf.ThreadPoolExecutor(workers) as pool:
        return dict(pool.map(load, names))


def _reasons_from_log(log: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for m in re.finditer(r"Poll failed for model directory '([^']+)': (.*?)\"?$", log, re.MULTILINE):
        out.setdefault(m.group(1), m.group(2))
    return out


def _server_note(case: Path) -> str:
    note = case / "server.txt"
    return note.read_text(encoding="utf-8").strip() if note.exists() else ""


def _cleanup_shm(log: str) -> None:
    """A killed or crashed tritonserver leaves its python stubs' shared-memory regions behind; the
    region names are in its (verbose) log."""
    for region in set(re.findall(r"triton_python_backend_shm_region_[0-9a-f-]+", log)):
        with contextlib.suppress(OSError):
            (Path("/dev/shm") / region).unlink()


def _fragile_verdicts(cases: list[tuple[Path, str]], work: Path) -> dict[str, tuple[str | None, str]]:
    """Cases that hang or crash tritonserver 2.51, each on its own throwaway server (explicit mode
    with nothing loaded starts in ~0.2 s). Returns root -> (load error or None, state)."""
    from repoforge.servers.triton import TritonServer

    out: dict[str, tuple[str | None, str]] = {}
    for case, prefix in cases:
        repo = work / prefix.rstrip("_")
        repo.mkdir(parents=True)
        _copy_case(case, repo, prefix)
        roots = [prefix + r for r in _roots(case)[1]]
        server = TritonServer(repo, model_control="explicit", exit_on_error=False, strict_readiness=False,
                              log_verbose=1, workdir=repo.parent / f"{repo.name}.server")  # fmt: skip
        server.start()
        try:
            results = _load_all(server, roots, timeout=10)
            try:
                states = {r["name"]: r["state"] for r in server.model_states()}
            except OSError:  # the server died while loading: that is a refusal too
                states = {}
            out.update({r: (results[r], states.get(r, "GONE")) for r in roots})
        finally:
            log = server.log_path.read_text(errors="replace") if server.log_path else ""
            server.stop(timeout=3)  # a model stuck LOADING blocks a clean shutdown: killed after 3 s
            _cleanup_shm(log)
    return out


@pytest.mark.integration
def test_corpus_against_real_tritonserver(tmp_path: Path) -> None:
    """Every invalid case is refused by tritonserver 2.51 and every valid case loads (READY).

    One server in explicit mode serves a combined repository (each case's models prefixed with the
    case id); each case's root models are loaded over the API, 4 at a time. Cases whose server.txt
    says they hang or crash the server (a python model without its model file stays LOADING forever;
    a warmup batch larger than max_batch_size segfaults Triton 2.51 in about half the runs) run
    meanwhile on throwaway servers of their own, one case each, which are then killed.
    """
    from repoforge.servers.triton import (
        TritonNotFoundError,
        TritonServer,
        find_tritonserver,
    )

    try:
        find_tritonserver()
    except TritonNotFoundError as exc:
        pytest.skip(str(exc))
    started = time.monotonic()
    main_repo = tmp_path / "repo"
    main_repo.mkdir()
    plan: dict[str, tuple[str, list[str], list[str], bool]] = {}  # case -> (kind, models, roots, fragile)
    fragile: list[tuple[Path, str]] = []
    shared: dict[str, str] = {}
    for kind, cases in (("invalid", INVALID), ("valid", VALID)):
        for i, case in enumerate(cases):
            prefix = f"{kind[0]}{i:03d}_"
            is_fragile = _server_note(case).startswith(("hangs", "crashes"))
            models, roots = _roots(case)
            if is_fragile:
                fragile.append((case, prefix))
                names = {m: prefix + m for m in models}
            else:
                names = _copy_case(case, main_repo, prefix, shared)
            plan[f"{kind}/{case.name}"] = (kind, [names[m] for m in models], [names[r] for r in roots], is_fragile)
    assert all(c.parent.name == "invalid" for c, _ in fragile), "only invalid cases may hang or crash the server"

    with cf.ThreadPoolExecutor(1) as side:
        fragile_future = side.submit(_fragile_verdicts, fragile, tmp_path / "fragile")
        server = TritonServer(main_repo, model_control="explicit", exit_on_error=False, strict_readiness=False,
                              cache_size_bytes=1 << 20, workdir=tmp_path / "server")  # fmt: skip
        with server:
            roots = [r for (_k, _m, rs, frag) in plan.values() if not frag for r in rs]
            t_load = time.monotonic()
            results = _load_all(server, roots, timeout=90)
            t_loaded = time.monotonic()
            states: dict[str, set[str]] = {}
            for row in server.model_states():
                states.setdefault(row["name"], set()).add(row["state"])
            log = server.log_path.read_text(errors="replace") if server.log_path else ""
            for name in [n for n, st in states.items() if "READY" in st]:  # unloading first: stubs stop in parallel
                with contextlib.suppress(Exception):
                    server.unload_model(name)
        t_stopped = time.monotonic()
        fragile_results = fragile_future.result()
    timing = (
        f"setup {t_load - started:.1f} s, loads {t_loaded - t_load:.1f} s, unload+stop {t_stopped - t_loaded:.1f} s, "
        f"then waited {time.monotonic() - t_stopped:.1f} s for {len(fragile)} fragile case(s)"
    )
    for root, (error, state) in fragile_results.items():
        results[root], states[root] = error, {state}
    reasons = _reasons_from_log(log)

    accepted, refused_valid = [], []
    for case, (kind, models, roots, _frag) in plan.items():
        failures = {r: reasons.get(r, results[r]) for r in roots if results[r] is not None}
        if kind == "invalid":
            if not failures:
                accepted.append(case)
        else:
            not_ready = [m for m in models if "READY" not in states.get(m, set())]
            if failures or not_ready:
                refused_valid.append(f"{case}: {failures or not_ready}")
    elapsed = time.monotonic() - started
    verdicts = {case: {r: reasons.get(r, results[r]) for r in roots} for case, (_k, _m, roots, _f) in plan.items()}
    (tmp_path / "server_verdicts.json").write_text(json.dumps(verdicts, indent=1))
    print(
        f"\n{len(INVALID)} invalid cases refused, {len(VALID)} valid cases loaded, in {elapsed:.1f} s ({timing}; "
        f"server verdicts: {tmp_path / 'server_verdicts.json'})"
    )
    assert not accepted, f"tritonserver ACCEPTED these 'invalid' cases (move them to valid/): {accepted}"
    assert not refused_valid, "tritonserver refused these 'valid' cases:\n" + "\n".join(refused_valid)
    # Lint agrees with the server on every case.
    for case, (kind, *_rest) in plan.items():
        report = lint_repository(CORPUS / case, **CORPUS_FACTS)
        assert report.ok == (kind == "valid"), f"{case}: lint disagrees with tritonserver\n{report.format()}"


def test_finding_str_without_position() -> None:
    f = Finding("warning", "m", "", "something", "repo/m")
    assert str(f) == "repo/m: warning: model 'm': something"
