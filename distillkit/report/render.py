"""The report as one self-contained HTML page: no template engine, no external URL, images inlined.

Every number on the page is written from ``Report.document`` (the ``--json`` document) by ``_num``,
which also writes the number's place in that document (``data-key``, a JSON pointer) and its exact
value (``data-value``) on the element — so a test, or a reader with the developer tools, can check
that the page says what the JSON says, and the sortable tables sort by exact values. Figures are PNG
and sample pictures JPEG ``data:`` URIs. The page reads complete without JavaScript; the only script
makes table columns sortable. A Content-Security-Policy forbids every network fetch.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from distillkit.report.document import ExperimentReport, Report
from distillkit.report.figures import is_loss_column

_HERE = Path(__file__).resolve().parent
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"
EXPERIMENT_SECTIONS = ("overview", "settings", "training", "metrics", "distillation", "optimize", "samples")
COMPARISON_SECTIONS = ("comparison", "pareto", "config-diff")
SECTION_TITLES = {
    "overview": "What ran",
    "settings": "Settings that differ from the defaults",
    "training": "Training",
    "metrics": "Validation / test metrics",
    "distillation": "Distillation",
    "optimize": "Optimized exports",
    "samples": "Sample predictions, worst first",
    "comparison": "Comparison",
    "pareto": "Metric vs latency",
    "config-diff": "Settings side by side",
}


def render_html(report: Report) -> str:
    """The whole page as a string (UTF-8 when written)."""
    document = report.document
    experiments = report.experiments
    several = len(experiments) > 1
    title = "distillkit report: " + (
        f"{len(experiments)} experiments" if several else str(experiments[0].document["name"])
    )
    parts = [
        "<!doctype html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title>",
        f"<style>\n{_asset('page.css')}</style>",
        "</head>",
        "<body>",
        '<header class="top">',
        f"<h1>{_e(title)}</h1>",
        f'<p class="meta">{_e(document["kind"])} · created {_e(document["created"])} · distillkit '
        f"{_e(document['distillkit_version'])}"
        + (f" · evaluated on {_e(document['evaluation_data'])}" if document["evaluation_data"] else "")
        + "</p>",
        _toc(experiments, several),
        "</header>",
        "<main>",
    ]
    if several:
        parts += [_comparison(report), _pareto(report), _config_diff(report)]
    for index, experiment in enumerate(experiments):
        parts.append(_experiment(experiment, index, several))
    parts += [
        "</main>",
        "<footer>One self-contained file: every image is inlined, nothing is fetched from the network. "
        "Numbers come from the document <code>distillkit report --json</code> prints.</footer>",
        f"<script>\n{_asset('page.js')}</script>",
        "</body>",
        "</html>",
    ]
    return "\n".join(parts) + "\n"


def _asset(name: str) -> str:
    """The page's stylesheet or script, shipped beside this module."""
    return (_HERE / name).read_text(encoding="utf-8")


def section_id(index: int, name: str, several: bool) -> str:
    """The element id of one experiment's section: ``metrics``, or ``e2-metrics`` on a comparison page."""
    return f"e{index + 1}-{name}" if several else name


# --------------------------------------------------------------------------------------------------
# numbers


def pointer(*parts: Any) -> str:
    """RFC 6901 JSON pointer of a place in the report document."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def _num(where: Sequence[Any], value: Any, kind: str = "frac", tag: str = "span", extra: str = "") -> str:
    """An element showing ``value`` formatted, carrying its JSON pointer and exact value."""
    if isinstance(value, float) and not math.isfinite(value):
        value = None  # the JSON document says null (orjson writes non-finite numbers so)
    elif hasattr(value, "item") and not isinstance(value, (int, float)):
        value = value.item()  # a numpy scalar
    exact = "null" if value is None else json.dumps(value)
    text = _format(value, kind)
    classes = "num" + (f" {extra}" if extra else "")
    return f'<{tag} class="{classes}" data-key="{_e(pointer(*where))}" data-value="{_e(exact)}">{_e(text)}</{tag}>'


def _format(value: Any, kind: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if not isinstance(value, (int, float)):
        return str(value)
    if kind == "frac":
        return "–" if value < 0 else f"{value:.3f}"  # -1: pycocotools' "no such objects"
    if kind == "ms":
        return f"{value:.2f}" if value < 10 else f"{value:.1f}"
    if kind == "mb":
        return f"{value:.2f}"
    if kind == "int":
        return f"{int(value):,}"
    if kind == "ratio":
        return f"{value:.2f}×"
    if kind == "points":
        return f"{value:+.2f}" if value else "0.00"
    if kind == "s":
        return _duration(float(value))
    if kind == "delta":
        return f"{value:+.3f}"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _value(where: Sequence[Any], value: Any, tag: str = "td", left: bool = False) -> str:
    """A cell of mixed content: numbers tagged like ``_num``, everything else as compact text."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _num(where, value, "float" if isinstance(value, float) else "int", tag, "left" if left else "")
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return f"<{tag}><code>{_e(text)}</code></{tag}>"


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _img(data: bytes | None, alt: str, mime: str = "image/png") -> str:
    """An image inlined as a data: URI (never a link to a file or a server)."""
    if not data:
        return ""
    return f'<img src="data:{mime};base64,{base64.b64encode(data).decode("ascii")}" alt="{_e(alt)}">'


def _figure(data: bytes | None, alt: str, caption: str) -> str:
    if not data:
        return ""
    return f"<figure>{_img(data, alt)}<figcaption>{caption}</figcaption></figure>"


def _table(headers: Sequence[str], rows: Iterable[str], css: str = "", numeric: Iterable[int] | None = None) -> str:
    """A table; the ``numeric`` columns (default: all but the first) get right-aligned headers."""
    right = set(range(1, len(headers)) if numeric is None else numeric)
    head = "".join(
        f'<th scope="col" class="n">{_e(h)}</th>' if i in right else f'<th scope="col">{_e(h)}</th>'
        for i, h in enumerate(headers)
    )
    body = "".join(f"<tr>{row}</tr>" for row in rows)
    return f'<div class="scroll"><table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _section(sid: str, name: str, content: str, level: int = 2) -> str:
    return f'<section id="{_e(sid)}"><h{level}>{_e(SECTION_TITLES[name])}</h{level}>{content}</section>'


def _note(text: str) -> str:
    return f'<p class="note">{text}</p>'


# --------------------------------------------------------------------------------------------------
# page parts


def _toc(experiments: Sequence[ExperimentReport], several: bool) -> str:
    links = []
    if several:
        links += [f'<a href="#{sid}">{_e(SECTION_TITLES[sid])}</a>' for sid in COMPARISON_SECTIONS]
        links += [f'<a href="#e{i + 1}">{_e(e.document["name"])}</a>' for i, e in enumerate(experiments)]
    else:
        links += [f'<a href="#{sid}">{_e(SECTION_TITLES[sid])}</a>' for sid in EXPERIMENT_SECTIONS]
    return '<nav class="toc">' + " ".join(links) + "</nav>"


def _comparison(report: Report) -> str:
    experiments = report.experiments
    comparison = report.document["comparison"]
    detector = report.document["kind"] == "detector"
    pareto = set(comparison["pareto"])
    headers = ["experiment", "student", "teacher"]
    headers += ["mAP50-95", "mAP50"] if detector else ["accuracy", "macro F1", "ECE"]
    exported = any(e.document["summary"]["fastest_export"] for e in experiments)
    headers += ["size MB", "latency ms", *(["export ms"] if exported else []), "training", "epochs", "key settings"]
    rows = []
    for index, experiment in enumerate(experiments):
        s = experiment.document["summary"]
        at = ("experiments", index, "summary")
        star = ' <span class="badge front" title="on the Pareto front">front</span>' if s["name"] in pareto else ""
        cells = [
            f'<td data-value="{_e(s["name"])}"><a href="#e{index + 1}">{_e(s["name"])}</a>{star}</td>',
            f"<td>{_e(s['student'])}</td>",
            f"<td title='{_e(s['teacher'] or '')}'>{_e(_short_teacher(s['teacher']))}</td>",
        ]
        metrics = ("mAP", "mAP50") if detector else ("accuracy", "macro_f1", "ece")
        cells += [_num((*at, key), s.get(key), "frac", "td") for key in metrics]
        cells += [
            _num((*at, "size_mb"), s["size_mb"], "mb", "td"),
            _num((*at, "latency_ms"), s["latency_ms"], "ms", "td"),
        ]
        fastest = s["fastest_export"]
        if fastest:
            latency = _num((*at, "fastest_export", "latency_ms"), fastest["latency_ms"], "ms", "td")
            cells.append(latency.replace("</td>", f" <small>{_e(fastest['name'])}</small></td>"))
        elif exported:
            cells.append('<td class="num" data-value="null">–</td>')
        cells += [
            _num((*at, "training_time_s"), s["training_time_s"], "s", "td"),
            _num((*at, "epochs"), s["epochs"], "int", "td"),
        ]
        settings = comparison["key_settings"][index]
        cells.append(
            "<td class='settings'>"
            + "".join(f"<code>{_e(k.split('.', 1)[-1])}={_e(json.dumps(v))}</code>" for k, v in settings.items())
            + "</td>"
        )
        rows.append("".join(cells))
    metric_source = {e.document["summary"]["metric_source"] for e in experiments}
    intro = _note(
        "Metrics: "
        + _e("; ".join(sorted(str(m) for m in metric_source)))
        + ". Latency: median per image, batch 1, on the machine that built this report (pre- and post-processing "
        "included); fastest export: the quickest artefact of <code>optimize</code> that passed its accuracy guard. "
        '<span class="js-only">Click a column header to sort.</span>'
    )
    return _section("comparison", "comparison", intro + _table(headers, rows, "sortable", range(3, len(headers) - 1)))


def _short_teacher(teacher: str | None) -> str:
    """``--teacher /long/path/exp/big/best.pt`` as ``big/best.pt`` (the full text is the cell's title)."""
    if not teacher:
        return "–"
    return ", ".join("/".join(Path(part.split(" ", 1)[-1]).parts[-2:]) for part in teacher.split(", "))


def _pareto(report: Report) -> str:
    comparison = report.document["comparison"]
    front = comparison["pareto"]
    text = (
        "On the Pareto front (no other run is both more accurate and faster): "
        + ", ".join(f"<strong>{_e(n)}</strong>" for n in front)
        if front
        else "No run has both a metric and a latency: nothing to place."
    )
    content = _figure(
        report.figures.get("pareto"),
        f"{comparison['metric_name']} against latency",
        f"{_e(comparison['metric_name'])} against median latency per image; "
        "filled dots and the line: the Pareto front.",
    )
    return _section("pareto", "pareto", content + _note(text))


def _config_diff(report: Report) -> str:
    comparison = report.document["comparison"]
    names = [e.document["name"] for e in report.experiments]
    rows = []
    for k, difference in enumerate(comparison["config_differences"]):
        cells = [f"<th scope='row'><code>{_e(difference['key'])}</code></th>"]
        cells += [
            _value(("comparison", "config_differences", k, "values", j), v, left=True)
            for j, v in enumerate(difference["values"])
        ]
        rows.append("".join(cells))
    if not rows:
        return _section("config-diff", "config-diff", _note("The runs' configurations are identical."))
    return _section("config-diff", "config-diff", _table(["setting", *names], rows, "diff", ()))


def _experiment(experiment: ExperimentReport, index: int, several: bool) -> str:
    d = experiment.document
    at = ("experiments", index)

    def sid(name: str) -> str:
        return section_id(index, name, several)

    level = 3 if several else 2
    body = [
        _overview(experiment, at, sid("overview"), level),
        _settings(d, at, sid("settings"), level),
        _training(experiment, at, sid("training"), level),
        _metrics(experiment, at, sid("metrics"), level),
        _distillation(d, at, sid("distillation"), level),
        _optimize(d, at, sid("optimize"), level),
        _samples(experiment, at, sid("samples"), level),
    ]
    if not several:
        return "".join(body)
    summary = d["summary"]
    headline = (
        f"{_e(summary['metric_name'])} {_num((*at, 'summary', 'metric'), summary['metric'])} · "
        f"{_num((*at, 'summary', 'latency_ms'), summary['latency_ms'], 'ms')} ms"
    )
    return (
        f'<article class="experiment" id="e{index + 1}"><details><summary><h2>{_e(d["name"])}</h2> '
        f'<span class="headline">{headline}</span></summary>{"".join(body)}</details></article>'
    )


def _overview(experiment: ExperimentReport, at: tuple[Any, ...], sid: str, level: int) -> str:
    d = experiment.document
    s, run = d["summary"], d["run"]
    cards = [
        (s["metric_name"], _num((*at, "summary", "metric"), s["metric"])),
        (
            "mAP50" if d["kind"] == "detector" else "ECE",
            _num(
                (*at, "summary", "mAP50" if d["kind"] == "detector" else "ece"),
                s.get("mAP50" if d["kind"] == "detector" else "ece"),
            ),
        ),
        ("size MB", _num((*at, "summary", "size_mb"), s["size_mb"], "mb")),
        ("latency ms", _num((*at, "summary", "latency_ms"), s["latency_ms"], "ms")),
        ("training time", _num((*at, "summary", "training_time_s"), s["training_time_s"], "s")),
        ("epochs", _num((*at, "summary", "epochs"), s["epochs"], "int")),
    ]
    card_html = (
        '<div class="cards">'
        + "".join(
            f'<div class="card"><div class="label">{_e(label)}</div><div class="big">{value}</div></div>'
            for label, value in cards
        )
        + "</div>"
    )
    dataset = run.get("dataset") or {}
    versions = run.get("versions") or {}
    git = run.get("git") or {}
    facts = [
        ("folder", f"<code>{_e(run['folder'])}</code>"),
        ("task", _e(f"{d['kind']} ({d['task']})")),
        ("training data", f"<code>{_e(dataset.get('path') or '?')}</code>" + _counts(dataset, at, d["kind"])),
        ("validation data", f"<code>{_e(run.get('validation') or 'held out from the training data')}</code>"),
        ("classes", _e(", ".join(run.get("classes") or [])) + f" ({len(run.get('classes') or [])})"),
        ("student" if d["kind"] == "detector" else "model", f"<code>{_e(run['student'])}</code>"),
        ("teacher", f"<code>{_e(run['teacher'])}</code>" if run["teacher"] else "none"),
        ("created", _e(run.get("created") or "?")),
        ("metric source", _e(s["metric_source"])),
        (
            "versions",
            _e(" · ".join(f"{k} {v}" for k, v in versions.items() if v))
            + _e(f" · Python {run.get('python')}" if run.get("python") else ""),
        ),
        ("platform", _e(run.get("platform") or "?")),
        (
            "git",
            _e(f"{git.get('commit')}{' (dirty)' if git.get('dirty') else ''}")
            if git.get("commit")
            else "not in a git work tree",
        ),
        ("reproduce the config", f"<code>{_e(run.get('reproduce_config') or '?')}</code>"),
    ]
    facts_html = "<dl class='facts'>" + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts) + "</dl>"
    notes = [*d.get("notes", []), *(run.get("notices") or [])]
    if d.get("evaluation_skipped"):
        notes.insert(0, d["evaluation_skipped"])
    notes_html = "".join(_note(_e(n)) for n in notes)
    return _section(sid, "overview", card_html + facts_html + notes_html, level)


def _counts(dataset: dict[str, Any], at: tuple[Any, ...], kind: str) -> str:
    keys = [("images", "images"), ("annotations", "annotations")] if kind == "detector" else [("images", "images")]
    shown = [
        f"{_num((*at, 'run', 'dataset', key), dataset[key], 'int')} {label}"
        for key, label in keys
        if isinstance(dataset.get(key), int)
    ]
    return f" ({', '.join(shown)})" if shown else ""


def _settings(d: dict[str, Any], at: tuple[Any, ...], sid: str, level: int) -> str:
    settings = d["settings"]
    if not settings:
        return _section(sid, "settings", _note("Every setting is at its shipped default."), level)
    rows = [
        f"<td><code>{_e(s['key'])}</code></td>"
        + _value((*at, "settings", i, "default"), s["default"], left=True)
        + _value((*at, "settings", i, "value"), s["value"], left=True)
        + f"<td>{_e(s['source'])}</td>"
        for i, s in enumerate(settings)
    ]
    intro = _note(
        "<em>--set</em>: given on the command line; <em>data</em>: decided from the data or by the command "
        "(e.g. distillation weights zeroed without a teacher)."
    )
    return _section(sid, "settings", intro + _table(["setting", "default", "value", "source"], rows, numeric=()), level)


def _training(experiment: ExperimentReport, at: tuple[Any, ...], sid: str, level: int) -> str:
    training = experiment.document["training"]
    if not training["epochs"]:
        return _section(sid, "training", _note("No training log in this folder."), level)
    figure = _figure(
        experiment.figures.get("training_curves"),
        "training curves",
        f"Per epoch, from <code>{_e(training['source'])}</code>: losses (distillation terms included), "
        "validation metrics, learning rate.",
    )
    final, best = training["final"] or {}, training["best"] or {}
    columns = [
        c for c in training["columns"] if not is_loss_column(c) and c != "epoch" and not c.startswith(("lr", "time"))
    ]
    rows = []
    for label, row, key in (("best", best, "best"), ("last", final, "final")):
        cells = [f"<th scope='row'>{label}</th>", _num((*at, "training", key, "epoch"), row.get("epoch"), "int", "td")]
        cells += [_num((*at, "training", key, c), row.get(c), "float", "td") for c in columns]
        rows.append("".join(cells))
    table = _table(["epoch row", "epoch", *columns], rows)
    time_note = _note(
        f"{_num((*at, 'training', 'epochs'), training['epochs'], 'int')} epochs in "
        f"{_num((*at, 'training', 'time_s'), training['time_s'], 's')} "
        "(the training loop; best row: the epoch kept as best.pt)."
    )
    return _section(sid, "training", figure + time_note + table, level)


def _metrics(experiment: ExperimentReport, at: tuple[Any, ...], sid: str, level: int) -> str:
    d = experiment.document
    evaluation = d["evaluation"]
    if evaluation is None:
        text = _e(d.get("evaluation_skipped") or "not evaluated")
        return _section(sid, "metrics", _note(text), level)
    where = "the run's validation split" if evaluation["split"] == "val" else "the data given with <code>--data</code>"
    intro = _note(
        f"<code>best.pt</code> scored on {where} (<code>{_e(evaluation['data'])}</code>) with the evaluator of "
        "<code>distillkit evaluate</code>."
    )
    if d["kind"] == "detector":
        return _section(sid, "metrics", intro + _detector_metrics(experiment, at), level)
    return _section(sid, "metrics", intro + _classifier_metrics(experiment, at), level)


def _detector_metrics(experiment: ExperimentReport, at: tuple[Any, ...]) -> str:
    evaluation = experiment.document["evaluation"]
    base = (*at, "evaluation")
    types = list(evaluation["iou_types"])
    keys = [
        "AP",
        "AP50",
        "AP75",
        "APs",
        "APm",
        "APl",
        "AR1",
        "AR10",
        "AR100",
        "precision",
        "recall",
        "f1",
        "confidence",
    ]
    rows = []
    for key in keys:
        cells = [f"<th scope='row'>{_e(key)}</th>"]
        kind = "float" if key == "confidence" else "frac"  # 0.99984 is not "1.000"
        cells += [_num((*base, "iou_types", t, key), evaluation["iou_types"][t].get(key), kind, "td") for t in types]
        rows.append("".join(cells))
    if "segm" in types and evaluation["iou_types"]["segm"].get("mean_mask_iou") is not None:
        rows.append(
            "<th scope='row'>mean mask IoU</th>"
            + "".join(
                _num(
                    (*base, "iou_types", t, "mean_mask_iou"),
                    evaluation["iou_types"][t].get("mean_mask_iou"),
                    "frac",
                    "td",
                )
                if t == "segm"
                else "<td></td>"
                for t in types
            )
        )
    summary = _table(["metric", *types], rows)
    counts = _note(
        f"{_num((*base, 'num_images'), evaluation['num_images'], 'int')} images, "
        f"{_num((*base, 'num_detections'), evaluation['num_detections'], 'int')} detections (score ≥ 0.001, as COCO "
        "evaluation expects); precision/recall/F1 at the confidence that maximises F1 (IoU 0.5). "
        "–: no objects of that size."
    )
    tables, figures = [], []
    for t in types:
        per_class = evaluation["iou_types"][t]["per_class"]
        rows = []
        for i, c in enumerate(per_class):
            where = (*base, "iou_types", t, "per_class", i)
            rows.append(
                f"<td>{_e(c['name'])}</td>"
                + _num((*where, "gt_instances"), c["gt_instances"], "int", "td")
                + _num((*where, "detections"), c["detections"], "int", "td")
                + "".join(
                    _num((*where, k), c[k], "frac", "td") for k in ("AP", "AP50", "AP75", "precision", "recall", "f1")
                )
            )
        headers = ["class", "objects", "detections", "AP", "AP50", "AP75", "P", "R", "F1"]
        tables.append(f"<h4>Per class ({_e(t)})</h4>" + _table(headers, rows, "sortable"))
        figures.append(
            _figure(
                experiment.figures.get(f"pr_curve_{t}"),
                f"PR curves {t}",
                f"Precision–recall per class at IoU 0.5 ({_e(t)}).",
            )
        )
        figures.append(
            _figure(
                experiment.figures.get(f"confusion_{t}"),
                f"confusion matrix {t}",
                f"{_e(t)}: confusion at box IoU 0.5 and the best-F1 confidence; columns: the true class, "
                "last row/column: background.",
            )
        )
    return (
        f'<div class="two"><div>{summary}{counts}</div><div>{"".join(tables)}</div></div>'
        f'<div class="figs">{"".join(figures)}</div>'
    )


def _classifier_metrics(experiment: ExperimentReport, at: tuple[Any, ...]) -> str:
    evaluation = experiment.document["evaluation"]
    base = (*at, "evaluation")
    rows = [
        f"<th scope='row'>{_e(label)}</th>" + _num((*base, key), evaluation.get(key), kind, "td")
        for label, key, kind in (
            ("images", "num_images", "int"),
            ("accuracy", "accuracy", "frac"),
            ("macro precision", "macro_precision", "frac"),
            ("macro recall", "macro_recall", "frac"),
            ("macro F1", "macro_f1", "frac"),
            ("micro F1", "micro_f1", "frac"),
            ("ECE (15 bins)", "ece", "frac"),
            ("ECE before temperature scaling", "ece_uncalibrated", "frac"),
            ("temperature", "temperature", "float"),
            ("NLL", "nll", "float"),
        )
    ]
    rows += [
        f"<th scope='row'>top-{_e(k)} accuracy</th>" + _num((*base, "top_k", k), v, "frac", "td")
        for k, v in (evaluation.get("top_k") or {}).items()
    ]
    if evaluation.get("multi_label"):
        rows += [
            f"<th scope='row'>{label}</th>" + _num((*base, key), evaluation.get(key), "frac", "td")
            for label, key in (("hamming loss", "hamming_loss"), ("subset accuracy", "subset_accuracy"))
        ]
    per_class_rows = []
    for name, c in (evaluation.get("per_class") or {}).items():
        where = (*base, "per_class", name)
        per_class_rows.append(
            f"<td>{_e(name)}</td>"
            + "".join(_num((*where, k), c.get(k), "frac", "td") for k in ("precision", "recall", "f1"))
            + _num((*where, "support"), c.get("support"), "int", "td")
            + _num((*where, "predicted"), c.get("predicted"), "int", "td")
        )
    return (
        f'<div class="two"><div>{_table(["metric", "value"], rows)}</div><div><h4>Per class</h4>'
        + _table(["class", "precision", "recall", "F1", "images", "predicted"], per_class_rows, "sortable")
        + '</div></div><div class="figs">'
        + _figure(
            experiment.figures.get("reliability"),
            "reliability diagram",
            "Reliability: accuracy per confidence bin against the diagonal (calibrated probabilities).",
        )
        + _figure(experiment.figures.get("confusion"), "confusion matrix", "Confusion matrix (rows: the true class).")
        + "</div>"
    )


def _distillation(d: dict[str, Any], at: tuple[Any, ...], sid: str, level: int) -> str:
    plan = d["distillation"]
    if plan is None:
        return _section(sid, "distillation", _note("No teacher: the model learnt from the labels alone."), level)
    base = (*at, "distillation")
    parts = []
    teacher = plan.get("teacher_on_validation")
    if teacher:
        parts.append(
            _note(
                "Teacher on the validation split before labelling: "
                f"AP {_num((*base, 'teacher_on_validation', 'AP'), teacher['AP'])}, "
                f"AP50 {_num((*base, 'teacher_on_validation', 'AP50'), teacher['AP50'])}."
            )
        )
    gain = plan.get("gain_vs_alone")
    if gain:
        parts.append(
            _note(
                f"Measured against <strong>{_e(gain['baseline'])}</strong> (same student and data, no teacher): "
                f"{_e(d['summary']['metric_name'])} {_num((*base, 'gain_vs_alone', 'delta'), gain['delta'], 'delta')}."
            )
        )
    elif plan.get("active"):
        parts.append(
            _note(
                "What distillation gained in accuracy is measured by comparing with the same run without a teacher: "
                "add it to the report (<code>distillkit report EXP EXP_ALONE</code>)."
            )
        )
    rows = []
    for i, c in enumerate(plan["components"]):
        where = (*base, "components", i)
        measured = c.get("measured") or {}
        shown = ", ".join(
            f"{_e(k.replace('_', ' '))} {_num((*where, 'measured', k), v, 'float' if isinstance(v, float) else 'int')}"
            for k, v in measured.items()
        )
        state = '<span class="badge ok">on</span>' if c.get("active") else '<span class="badge off">off</span>'
        rows.append(
            f"<td>{_e(c['name'])}</td><td>{state}</td>"
            + _num((*where, "weight"), c.get("weight"), "float", "td")
            + f"<td>{_e(c.get('reason') or '')}</td><td>{shown or '–'}</td>"
        )
    parts.append(_table(["component", "", "weight", "why", "measured in this run"], rows, numeric=(2,)))
    return _section(sid, "distillation", "".join(parts), level)


def _optimize(d: dict[str, Any], at: tuple[Any, ...], sid: str, level: int) -> str:
    optimize = d["optimize"]
    if optimize is None:
        return _section(
            sid,
            "optimize",
            _note("No <code>optimized/report.json</code> here: run <code>distillkit optimize -m best.pt</code>."),
            level,
        )
    base = (*at, "optimize")
    rows = []
    for i, a in enumerate(optimize["artefacts"]):
        where = (*base, "artefacts", i)
        status = a["status"] or "?"
        badge = "ok" if a["passed"] else ("bad" if status == "failed" else "off")
        rows.append(
            f"<td>{_e(a['name'])}</td><td>{_e(a['format'])}</td><td>{_e(a['precision'])}</td>"
            + _num((*where, "size_mb"), a["size_mb"], "mb", "td")
            + _num((*where, "latency_ms"), a["latency_ms"], "ms", "td")
            + _num((*where, "latency_p90_ms"), a["latency_p90_ms"], "ms", "td")
            + _num((*where, "accuracy"), a["accuracy"], "frac", "td")
            + _num((*where, "accuracy_drop_points"), a["accuracy_drop_points"], "points", "td")
            + _num((*where, "size_ratio"), a["size_ratio"], "ratio", "td")
            + _num((*where, "latency_ratio"), a["latency_ratio"], "ratio", "td")
            + f'<td><span class="badge {badge}">{_e(status)}</span></td>'
        )
    metric = next((a["metric"] for a in optimize["artefacts"] if a.get("metric")), None)
    setup = optimize.get("latency_setup") or {}
    intro = _note(
        f"From <code>{_e(optimize['source'])}</code>. Accuracy: {_e(metric or 'not measured (no --val-data)')}; "
        "drop in points against the PyTorch model, limit "
        f"{_num((*base, 'max_drop_points'), optimize['max_drop_points'], 'float')}. "
        f"Latency: {_e(setup.get('what') or 'median per image')}, batch {_e(setup.get('batch', 1))}, "
        f"{_e(setup.get('threads', '?'))} threads, {_e(setup.get('machine') or '')}."
    )
    headers = [
        "artefact",
        "format",
        "precision",
        "size MB",
        "latency ms",
        "p90 ms",
        "accuracy",
        "drop (points)",
        "size vs .pt",
        "latency vs .pt",
        "status",
    ]
    return _section(sid, "optimize", intro + _table(headers, rows, "sortable", range(3, 10)), level)


def _samples(experiment: ExperimentReport, at: tuple[Any, ...], sid: str, level: int) -> str:
    d = experiment.document
    samples = d["samples"]
    if samples is None or not samples["images"]:
        return _section(sid, "samples", _note(_e(d.get("evaluation_skipped") or "No images to show.")), level)
    base = (*at, "samples", "images")
    detector = d["kind"] == "detector"
    items = []
    for i, (sample, picture) in enumerate(zip(samples["images"], experiment.pictures, strict=False)):
        where = (*base, i)
        if detector:
            caption = (
                f"F1 {_num((*where, 'f1'), sample['f1'])} · TP {_num((*where, 'tp'), sample['tp'], 'int')} · "
                f"FP {_num((*where, 'fp'), sample['fp'], 'int')} · FN {_num((*where, 'fn'), sample['fn'], 'int')}"
            )
        else:
            quality = "f1" if "f1" in sample else "p_true"
            label = "F1" if quality == "f1" else "p(true)"
            verdict = (
                '<span class="badge ok">right</span>' if sample["correct"] else '<span class="badge bad">wrong</span>'
            )
            caption = (
                f"{verdict} true <strong>{_e(', '.join(sample['true']) or '–')}</strong> · predicted "
                f"<strong>{_e(', '.join(sample['predicted']) or '–')}</strong> · {label} "
                f"{_num((*where, quality), sample[quality])}"
            )
        items.append(
            f'<figure class="sample">{_img(picture, sample["file_name"], "image/jpeg")}'
            f"<figcaption><code>{_e(sample['file_name'])}</code><br>{caption}</figcaption></figure>"
        )
    if detector:
        evaluation = d["evaluation"]
        legend = (
            '<p class="legend"><span class="sw" style="border-color:#28aa46"></span>ground truth found '
            '<span class="sw" style="border-color:#ff9600"></span>ground truth missed '
            '<span class="sw" style="border-color:#286ef0"></span>right prediction '
            '<span class="sw" style="border-color:#e62828"></span>wrong prediction — detections at score ≥ '
            f"{_num((*at, 'evaluation', 'per_image', 'confidence'), evaluation['per_image']['confidence'])}"
            " (the best-F1 confidence), matched at box IoU 0.5.</p>"
        )
    else:
        legend = _note(
            "Each image (at the model's input size) beside its Grad-CAM++ map of the predicted class: red is "
            "what drove the decision."
        )
    intro = _note(f"{len(items)} images, {_e(samples['order'])}.")
    return _section(sid, "samples", intro + legend + '<div class="grid">' + "".join(items) + "</div>", level)
