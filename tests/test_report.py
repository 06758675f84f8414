"""`distillkit report`: one page for a student, an optimized student, a classifier, and a comparison.

The experiments are real and tiny (2 epochs at 64 px, a 32 px classifier), built once for the module.
Every number on a page carries its place in the ``--json`` document (``data-key``, a JSON pointer)
and its exact value (``data-value``): the tests read them back with the standard HTML parser and
compare them with the document, and check that the visible text is that value rounded. The page is
opened in headless Chromium (Debian's ``chromium``; skipped cleanly without it): the screenshot is
not blank and the page made no network request.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from distillkit.report import pareto_front
from tests.test_classify_train import FAST as CLASSIFIER_FAST
from tests.test_classify_train import make_tree
from tests.test_cli import run
from tests.test_train_student import FAST as STUDENT_FAST
from tests.test_train_student import make_shapes

STUDENT_SETTINGS = [item for item in STUDENT_FAST if not item.startswith("student.imgsz")] + ["student.imgsz=64"]
EXPERIMENT_SECTIONS = ("overview", "settings", "training", "metrics", "distillation", "optimize", "samples")


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTILLKIT_CACHE", str(tmp_path_factory.getbasetemp() / "distillkit-cache"))


def _train_student(train: Path, val: Path, output: Path, epochs: int) -> Path:
    args = ["train-student", "-d", str(train), "-v", str(val), "-o", str(output), "--epochs", str(epochs), "--quiet"]
    for item in STUDENT_SETTINGS:
        args += ["--set", item]
    code, _, stderr = run(*args)
    assert code == 0, stderr
    return output


@pytest.fixture(scope="module")
def experiments(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two students (one optimized to ONNX fp32 + INT8) and a classifier, each trained for seconds."""
    root = tmp_path_factory.mktemp("report")
    cache = tmp_path_factory.getbasetemp() / "distillkit-cache"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DISTILLKIT_CACHE", str(cache))
        train = make_shapes(root / "data" / "train", 16, 0)
        val = make_shapes(root / "data" / "val", 6, 1)
        student = _train_student(train, val, root / "exp" / "student", epochs=2)
        optimized = _train_student(train, val, root / "exp" / "optimized", epochs=1)
        code, _, stderr = run(
            "optimize",
            "--model",
            str(optimized / "best.pt"),
            "--calib-dir",
            str(train.parent / "images"),
            "--calib-images",
            "4",
            "--val-data",
            str(val),
            "--threads",
            "1",
            "--quiet",
        )
        assert code == 0, stderr
        from distillkit.classify.train import train_classifier

        tree = make_tree(root / "cls" / "train", 8, seed=0)
        classifier = root / "exp" / "classifier"
        train_classifier(
            tree, classifier, overrides=[*CLASSIFIER_FAST, "training_dynamics.epochs=2"], val_fraction=0.25
        )
    return {"student": student, "optimized": optimized, "classifier": classifier, "val": val, "root": root}


def _report(*args: str) -> tuple[dict[str, Any], str]:
    """Run the command with --json; return the document and the page it wrote."""
    output = next(args[i + 1] for i, a in enumerate(args) if a == "--output")
    code, stdout, stderr = run("report", *args, "--json")
    assert code == 0, stderr
    document = json.loads(stdout)  # exactly one JSON document on stdout
    return document, Path(output).read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def single(experiments: dict[str, Path]) -> tuple[dict[str, Any], str, Path]:
    page = experiments["root"] / "pages" / "student.html"
    document, html = _report(str(experiments["student"]), "--output", str(page))
    return document, html, page


@pytest.fixture(scope="module")
def comparison(experiments: dict[str, Path]) -> tuple[dict[str, Any], str, Path]:
    page = experiments["root"] / "pages" / "compare.html"
    document, html = _report(str(experiments["student"]), str(experiments["optimized"]), "--output", str(page))
    return document, html, page


@pytest.fixture(scope="module")
def classifier(experiments: dict[str, Path]) -> tuple[dict[str, Any], str, Path]:
    page = experiments["root"] / "pages" / "classifier.html"
    document, html = _report(str(experiments["classifier"]), "--output", str(page))
    return document, html, page


# --------------------------------------------------------------------------------------------------
# reading a page back


class _Page(HTMLParser):
    """Ids, numbers (pointer, exact value, visible text) and every src/href of a page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.numbers: list[tuple[str, str, str]] = []
        self.links: list[str] = []
        self._open: list[Any] = []  # [pointer, value, text parts] of the number element being read

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if "id" in values:
            self.ids.add(values["id"])
        for name in ("src", "href", "action", "poster", "data"):
            if name in values:
                self.links.append(values[name])
        if "data-key" in values:
            self._open.append([values["data-key"], values["data-value"], [], tag])

    def handle_data(self, data: str) -> None:
        for item in self._open:
            item[2].append(data)

    def handle_endtag(self, tag: str) -> None:
        if self._open and self._open[-1][3] == tag:
            key, value, text, _ = self._open.pop()
            self.numbers.append((key, value, "".join(text)))


def _parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    return page


def _resolve(document: Any, pointer: str) -> Any:
    node = document
    for raw in pointer.split("/")[1:]:
        part = raw.replace("~1", "/").replace("~0", "~")
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def _check_numbers(document: dict[str, Any], html: str, at_least: int) -> _Page:
    """Every tagged number equals the document's value at its pointer, and its text is that value rounded."""
    page = _parse(html)
    assert len(page.numbers) >= at_least, len(page.numbers)
    for key, exact, text in page.numbers:
        expected = _resolve(document, key)
        assert json.loads(exact) == expected, (key, exact, expected)
        shown = text.strip().replace(",", "").rstrip("×").removesuffix(" s")
        if expected is None or not re.fullmatch(r"[+-]?\d+(\.\d+)?", shown) or isinstance(expected, bool):
            continue
        decimals = len(shown.split(".")[1]) if "." in shown else 0
        tolerance = 0.5 * 10**-decimals + 1e-9
        if isinstance(expected, float) and abs(expected) < 10**-decimals and "e" not in shown:
            tolerance = max(tolerance, abs(expected))  # %.4g of a tiny number
        assert abs(float(shown) - expected) <= max(tolerance, abs(expected) * 5e-4), (key, text, expected)
    return page


def _check_self_contained(html: str, page: _Page) -> None:
    for link in page.links:
        assert link.startswith(("data:", "#")), link
    assert not re.search(r"(?:src|href)\s*=\s*[\"']?(?:https?:)?//", html, re.IGNORECASE)
    assert "http://" not in html and "https://" not in html
    assert "default-src 'none'" in html  # a Content-Security-Policy that forbids every fetch


# --------------------------------------------------------------------------------------------------
# one student


def test_single_student_page_shows_every_section_with_the_json_numbers(
    single: tuple[dict[str, Any], str, Path], experiments: dict[str, Path]
) -> None:
    document, html, _ = single
    assert document["comparison"] is None and len(document["experiments"]) == 1
    experiment = document["experiments"][0]
    assert experiment["kind"] == "detector" and experiment["task"] == "detect"
    page = _check_numbers(document, html, at_least=60)
    assert set(EXPERIMENT_SECTIONS) <= page.ids
    _check_self_contained(html, page)
    keys = {key for key, _, _ in page.numbers}
    for pointer in (
        "/experiments/0/summary/metric",
        "/experiments/0/summary/mAP50",
        "/experiments/0/evaluation/iou_types/bbox/AP",
        "/experiments/0/evaluation/iou_types/bbox/per_class/0/AP",
        "/experiments/0/training/epochs",
    ):
        assert pointer in keys, pointer
    # what ran: the data, the classes, the settings that differ from the shipped defaults, versions
    run_info = experiment["run"]
    assert run_info["classes"] == ["square", "disc"] and run_info["student"] == "yolov8n"
    assert run_info["validation"] == str(experiments["val"].resolve())
    assert run_info["versions"]["torch"] and run_info["epochs"] == 2
    settings = {s["key"]: s for s in experiment["settings"]}
    assert settings["student.imgsz"]["value"] == 64 and settings["student.imgsz"]["default"] == 640
    assert settings["student.imgsz"]["source"] == "--set"
    assert settings["distillation.logit_weight"]["source"] == "data"  # zeroed: no teacher
    assert "student.conf" not in settings  # at its default
    # training curves and the distillation components (all off: no teacher)
    assert experiment["training"]["source"] == "results.csv" and len(experiment["training"]["history"]) == 2
    distillation = experiment["distillation"]
    assert not distillation["active"] and {c["name"] for c in distillation["components"]} >= {"pseudo_labels"}
    assert experiment["optimize"] is None
    # figures: training curves, PR curve and confusion matrix inlined as PNG; samples as JPEG
    assert html.count("data:image/png;base64,") >= 3
    samples = experiment["samples"]["images"]
    assert 1 <= len(samples) <= 6 and html.count("data:image/jpeg;base64,") == len(samples)
    f1s = [s["f1"] for s in samples]
    assert f1s == sorted(f1s)  # worst first
    assert all(s["tp"] + s["fp"] + s["fn"] >= 0 and 0 <= s["f1"] <= 1 for s in samples)


def test_the_page_numbers_are_those_of_evaluate(
    single: tuple[dict[str, Any], str, Path], experiments: dict[str, Path]
) -> None:
    """The report scores best.pt with evaluate's evaluator: same AP, AP50 and per-class numbers."""
    document, _, _ = single
    evaluation = document["experiments"][0]["evaluation"]
    code, stdout, stderr = run(
        "evaluate", "-d", str(experiments["val"]), "-m", str(experiments["student"] / "best.pt"), "--json"
    )
    assert code == 0, stderr
    scored = json.loads(stdout)["results"][0]["bbox"]
    for key in ("AP", "AP50", "AP75", "precision", "recall", "f1", "confidence"):
        assert evaluation["iou_types"]["bbox"][key] == scored[key], key
    assert evaluation["iou_types"]["bbox"]["per_class"] == scored["per_class"]
    assert evaluation["split"] == "val" and evaluation["num_images"] == 6


# --------------------------------------------------------------------------------------------------
# an optimized student, and two students compared


def test_optimized_student_shows_the_optimize_matrix(
    comparison: tuple[dict[str, Any], str, Path], experiments: dict[str, Path]
) -> None:
    document, html, _ = comparison
    optimized = document["experiments"][1]
    written = json.loads((experiments["optimized"] / "optimized" / "report.json").read_text())
    rows = optimized["optimize"]["artefacts"]
    assert [(r["format"], r["precision"]) for r in rows] == [("pt", "fp32"), ("onnx", "fp32"), ("onnx", "int8")]
    for row, artefact in zip(rows, written["artefacts"], strict=True):
        assert row["size_mb"] == artefact["size_mb"]
        assert row["latency_ms"] == artefact["latency"]["median_ms"]
        assert row["accuracy"] == artefact["accuracy"]
        assert row["passed"] == (artefact["status"] in ("reference", "ok"))
    assert rows[2]["accuracy_drop_points"] == written["artefacts"][2]["accuracy_drop_points"]
    fastest = optimized["summary"]["fastest_export"]
    assert fastest is not None and fastest["latency_ms"] == min(r["latency_ms"] for r in rows if r["passed"])
    page = _parse(html)
    keys = {key for key, _, _ in page.numbers}
    assert "/experiments/1/optimize/artefacts/2/latency_ms" in keys
    assert "/experiments/1/optimize/artefacts/2/accuracy_drop_points" in keys


def test_comparison_page_table_pareto_and_config_differences(comparison: tuple[dict[str, Any], str, Path]) -> None:
    document, html, _ = comparison
    compared = document["comparison"]
    assert compared["metric_name"] == "mAP50-95 (bbox)"
    summaries = [e["summary"] for e in document["experiments"]]
    assert [s["name"] for s in summaries] == ["student", "optimized"]
    assert compared["pareto"] == pareto_front(summaries) and compared["pareto"]
    differences = {d["key"]: d["values"] for d in compared["config_differences"]}
    assert differences["student.epochs"] == [2, 1]
    assert compared["key_settings"][0]["student.epochs"] == 2
    page = _check_numbers(document, html, at_least=120)
    assert {"comparison", "pareto", "config-diff"} <= page.ids
    for index in (1, 2):
        assert {f"e{index}-{name}" for name in EXPERIMENT_SECTIONS} <= page.ids
    _check_self_contained(html, page)
    assert 'class="sortable"' in html and "<details>" in html  # sortable table; runs collapse without JS
    for s in summaries:
        for key in ("metric", "mAP", "mAP50", "size_mb", "latency_ms", "training_time_s"):
            assert s[key] is not None, key


def test_pareto_front_keeps_the_runs_nothing_beats() -> None:
    runs = [
        {"name": "a", "metric": 0.5, "latency_ms": 10.0},
        {"name": "b", "metric": 0.4, "latency_ms": 5.0},
        {"name": "c", "metric": 0.3, "latency_ms": 8.0},  # b is better and faster
        {"name": "d", "metric": 0.5, "latency_ms": 12.0},  # a is as good and faster
        {"name": "e", "metric": None, "latency_ms": 1.0},
    ]
    assert pareto_front(runs) == ["a", "b"]


# --------------------------------------------------------------------------------------------------
# a classifier


def test_classifier_page_accuracy_ece_reliability_and_gradcam(
    classifier: tuple[dict[str, Any], str, Path], experiments: dict[str, Path]
) -> None:
    document, html, _ = classifier
    experiment = document["experiments"][0]
    assert document["kind"] == "classifier" and experiment["task"] == "classify"
    evaluation = experiment["evaluation"]
    results = json.loads((experiments["classifier"] / "results.json").read_text())
    # the report re-scores the run's own held-out images (split.json): training's numbers come back
    assert evaluation["split"] == "val" and evaluation["num_images"] == results["val_images"]
    assert evaluation["accuracy"] == pytest.approx(results["metrics"]["accuracy"])
    assert evaluation["ece"] == pytest.approx(results["metrics"]["ece"], abs=1e-6)
    assert experiment["summary"]["metric_name"] == "accuracy"
    assert experiment["summary"]["metric"] == evaluation["accuracy"]
    page = _check_numbers(document, html, at_least=40)
    assert set(EXPERIMENT_SECTIONS) <= page.ids
    _check_self_contained(html, page)
    keys = {key for key, _, _ in page.numbers}
    assert {"/experiments/0/evaluation/accuracy", "/experiments/0/evaluation/ece"} <= keys
    assert "reliability diagram" in html and "Grad-CAM++" in html
    samples = experiment["samples"]["images"]
    assert len(samples) == results["val_images"] and html.count("data:image/jpeg;base64,") == len(samples)
    chances = [s["p_true"] for s in samples]
    assert chances == sorted(chances)  # least confident in the true class first
    assert all(s["file_name"].split("/")[0] in ("dots", "horizontal", "vertical") for s in samples)


# --------------------------------------------------------------------------------------------------
# the command line


def test_no_eval_reads_the_folders_only(experiments: dict[str, Path], tmp_path: Path) -> None:
    code, stdout, stderr = run("report", str(experiments["optimized"]), "--no-eval", "--json")
    assert code == 0, stderr
    experiment = json.loads(stdout)["experiments"][0]
    assert experiment["evaluation"] is None and experiment["samples"] is None
    assert experiment["summary"]["metric_source"].startswith("training log")
    reference = experiment["optimize"]["artefacts"][0]
    assert experiment["summary"]["latency_ms"] == reference["latency_ms"]
    page = tmp_path / "quick.html"
    code, _, stderr = run("report", str(experiments["optimized"]), "--no-eval", "-o", str(page), "--quiet")
    assert code == 0, stderr
    assert set(EXPERIMENT_SECTIONS) <= _parse(page.read_text()).ids


def test_data_option_scores_every_run_on_a_given_split(experiments: dict[str, Path], tmp_path: Path) -> None:
    code, stdout, stderr = run(
        "report", str(experiments["optimized"]), "--data", str(experiments["val"]), "--samples", "2", "--json"
    )
    assert code == 0, stderr
    document = json.loads(stdout)
    assert document["evaluation_data"] == str(experiments["val"])
    experiment = document["experiments"][0]
    assert experiment["evaluation"]["split"] == "given" and len(experiment["samples"]["images"]) == 2
    # a run whose validation file has gone is still reported, and says how to score it
    moved = tmp_path / "moved"
    shutil.copytree(experiments["optimized"], moved, ignore=shutil.ignore_patterns("yolo_data", "train", "optimized"))
    metadata = json.loads((moved / "metadata.json").read_text())
    metadata["extra"]["val"] = str(tmp_path / "gone.json")
    (moved / "metadata.json").write_text(json.dumps(metadata))
    code, stdout, stderr = run("report", str(moved), "--json")
    assert code == 0, stderr
    experiment = json.loads(stdout)["experiments"][0]
    assert experiment["evaluation"] is None and "pass --data" in experiment["evaluation_skipped"]
    assert experiment["summary"]["metric_source"].startswith("training log")


def test_bad_uses_are_one_line_errors(experiments: dict[str, Path], tmp_path: Path) -> None:
    student, val = experiments["student"], experiments["val"]
    cases = [
        ("report", str(student)),  # nothing to write
        ("report", str(student), "-o", str(val.parent / "images" / "r.html")),  # among the images it reads
        ("report", str(student), "-o", str(student / "metadata.json")),  # a file it reads
        ("report", str(student), "-o", str(tmp_path)),  # a folder
        ("report", str(tmp_path), "-o", str(tmp_path / "r.html")),  # not an experiment
        ("report", str(student), str(experiments["classifier"]), "--no-eval", "-o", str(tmp_path / "r.html")),
        ("report", str(student), str(student), "--no-eval", "--json"),
    ]
    for args in cases:
        code, _, stderr = run(*args)
        assert code == 2, (args, stderr)
        assert stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    assert not (tmp_path / "r.html").exists()
    # a report may live inside an experiment folder: the files it reads are untouched
    inside = student / "report.html"
    code, _, stderr = run("report", str(student), "--no-eval", "-o", str(inside), "--quiet")
    assert code == 0, stderr
    inside.unlink()


# --------------------------------------------------------------------------------------------------
# the page in a browser


def _chromium(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    assert binary is not None
    command = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        "--host-resolver-rules=MAP * ~NOTFOUND",  # even a request the page tried could not leave
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)


def _page_requests(net_log: Path) -> list[str]:
    """URLs the page itself asked for (the browser's own update/account pings are told apart by site)."""
    log = json.loads(net_log.read_text())
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    urls = []
    for event in log["events"]:
        params = event.get("params") or {}
        if event["type"] == start and "file://" in str(params.get("network_isolation_key", "")):
            urls.append(str(params.get("url")))
    return urls


@pytest.mark.skipif(
    shutil.which("chromium") is None and shutil.which("chromium-browser") is None,
    reason="headless Chromium is not installed (apt-get install chromium)",
)
def test_pages_render_in_headless_chromium_without_network(
    comparison: tuple[dict[str, Any], str, Path], classifier: tuple[dict[str, Any], str, Path], tmp_path: Path
) -> None:
    # the check itself: a page that fetches something is caught
    leak = tmp_path / "leak.html"
    leak.write_text('<!doctype html><p>x</p><img src="http://leak.invalid/x.png">')
    result = _chromium(
        f"--log-net-log={tmp_path / 'leak.json'}", f"--screenshot={tmp_path / 'leak.png'}", leak.as_uri()
    )
    assert (tmp_path / "leak.json").is_file(), result.stderr[-2000:]
    assert any("leak.invalid" in url for url in _page_requests(tmp_path / "leak.json"))

    for name, (_, _, page) in (("comparison", comparison), ("classifier", classifier)):
        shot, net = tmp_path / f"{name}.png", tmp_path / f"{name}.json"
        result = _chromium(f"--log-net-log={net}", f"--screenshot={shot}", "--window-size=1200,2000", page.as_uri())
        assert shot.is_file(), result.stderr[-2000:]
        pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
        assert pixels.shape == (2000, 1200)
        assert pixels.std() > 10, pixels.std()  # not a blank page
        assert (pixels < 128).mean() > 0.01  # text and figures, not a white sheet
        assert _page_requests(net) == [], _page_requests(net)

    # the script ran (sortable headers) and the page still draws with JavaScript off
    _, _, page = comparison
    dom = _chromium("--dump-dom", page.as_uri()).stdout
    assert 'aria-sort="none"' in dom and "js" in dom.split("<html", 1)[1].split(">", 1)[0]
    no_script = tmp_path / "no-script.html"  # the page as a browser with JavaScript off gets it
    no_script.write_text(re.sub(r"<script>.*?</script>", "", page.read_text(), flags=re.DOTALL))
    shot = tmp_path / "no-script.png"
    result = _chromium(f"--screenshot={shot}", "--window-size=1200,1600", no_script.as_uri())
    assert shot.is_file(), result.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.std() > 10 and (pixels < 128).mean() > 0.01
