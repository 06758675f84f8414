"""Property-based: whatever JSON `validate` is given, it answers with a report or one clean error line.

Never a traceback, never an 'internal error', exit code 0/1 (or 2 for usage), and with --json one
parsable JSON document on stdout.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distillkit.cli import main

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(["0", "1", "false", "true", "12", "-3", "1.5", "nan", "", "images/a.png", "../x.png"]),
)
any_json = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=6), children, max_size=5),
    max_leaves=25,
)
numbers = st.one_of(
    st.integers(min_value=-50, max_value=500), st.floats(min_value=-50, max_value=500), st.just(float("nan"))
)
polygon = st.lists(numbers, min_size=0, max_size=14)
rle = st.fixed_dictionaries(
    {
        "size": st.one_of(st.lists(st.integers(-2, 300), min_size=0, max_size=3), any_json),
        "counts": st.one_of(
            st.lists(st.integers(-5, 5000), max_size=6),
            st.text(alphabet=st.characters(min_codepoint=40, max_codepoint=120), max_size=12),
            any_json,
        ),
    }
)
segmentation = st.one_of(st.lists(polygon, max_size=3), polygon, rle, any_json)
ids = st.one_of(st.integers(min_value=-2, max_value=6), st.sampled_from(["1", "2", "x"]), any_json)
image = st.fixed_dictionaries(
    {"id": ids},
    optional={
        "file_name": st.one_of(st.sampled_from(["a.png", "/etc/passwd", "../a.png", "dir\\b.jpg"]), any_json),
        "width": st.one_of(st.integers(-5, 400), any_json),
        "height": st.one_of(st.integers(-5, 400), any_json),
    },
)
annotation = st.fixed_dictionaries(
    {"id": ids},
    optional={
        "image_id": ids,
        "category_id": ids,
        "bbox": st.one_of(st.lists(numbers, min_size=4, max_size=4), any_json),
        "area": st.one_of(numbers, any_json),
        "iscrowd": st.one_of(st.sampled_from([0, 1, "false", "1", True, 3]), any_json),
        "segmentation": segmentation,
    },
)
category = st.fixed_dictionaries({"id": ids}, optional={"name": st.one_of(st.sampled_from(["a", "b", "a"]), any_json)})
coco_like = st.fixed_dictionaries(
    {},
    optional={
        "images": st.one_of(st.lists(image, max_size=5), any_json),
        "annotations": st.one_of(st.lists(annotation, max_size=8), any_json),
        "categories": st.one_of(st.lists(category, max_size=4), any_json),
        "info": any_json,
    },
)


def _run_validate(document: Any, raw_text: str | None = None) -> tuple[int, str, str]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "data.json"
        text = raw_text if raw_text is not None else json.dumps(document, allow_nan=True)
        path.write_text(text)
        stdout, stderr = io.StringIO(), io.StringIO()
        code = 0
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                main(["validate", str(path), "--json", "--split", "0.5,0.5", "--output", str(Path(folder) / "o.json")])
            except SystemExit as exc:
                code = int(exc.code or 0)
        return code, stdout.getvalue(), stderr.getvalue()


def _check(code: int, out: str, err: str) -> None:
    assert "Traceback" not in out + err
    assert "internal error" not in err, err
    assert code in (0, 1), (code, err)
    if out.strip():
        report = json.loads(out)
        if set(report) == {"error", "hint", "exit_code"}:  # an error under --json: also one document on stdout
            assert code == report["exit_code"] == 1 and err.startswith("error: ") and err.count("\n") == 1
            return
        assert report["valid"] is (code == 0)
        for issue in report["errors"] + report["warnings"]:
            assert {"code", "message", "ids"} <= set(issue)
    else:
        assert code == 1 and err.startswith("error: ") and err.count("\n") == 1


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(coco_like)
def test_malformed_coco_structures_never_crash(document: Any) -> None:
    _check(*_run_validate(document))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(any_json)
def test_arbitrary_json_never_crashes(document: Any) -> None:
    _check(*_run_validate(document))


@settings(max_examples=40, deadline=None)
@given(st.text(max_size=40))
def test_arbitrary_text_is_a_clean_error_or_report(text: str) -> None:
    _check(*_run_validate(None, raw_text=text))
