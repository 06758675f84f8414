"""`distillkit report`: one self-contained HTML page (and one JSON document) for one experiment or many.

``collect`` reads an experiment folder (files only), ``scoring`` runs its model through the library's
evaluators, ``document`` builds the JSON document and the comparison, ``render`` writes the page.

    from distillkit.report import build_report, render_html

    report = build_report(["exp/a/student", "exp/b/student"], data="data/test.json")
    report.document              # what `distillkit report --json` prints
    html = render_html(report)   # one file, images inlined, no network
"""

from distillkit.report.collect import ExperimentRecord, collect_experiment
from distillkit.report.document import ExperimentReport, Report, build_report, pareto_front
from distillkit.report.render import render_html, section_id

__all__ = [
    "ExperimentRecord",
    "ExperimentReport",
    "Report",
    "build_report",
    "collect_experiment",
    "pareto_front",
    "render_html",
    "section_id",
]
