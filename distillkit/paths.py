"""Where outputs may go: never onto an input file, never inside a folder the command reads.

Inputs are never modified and a second run must not read the first run's files as data, so every
command checks its output paths against its inputs before any work (no model load, no partial
file). The rule, shared by all commands:

- an output may not BE an input file (``--output data/train.json``);
- an output may not be, or lie inside, an input FOLDER: a folder given on the command line that
  images or data are read from (``--images-dir``, an ``infer`` folder source, ``--unlabeled``,
  ``--calib-dir``, a class-per-folder tree) or a COCO file's default ``images/`` folder;
- an output folder may not be the folder that input image FILES were given from (``infer
  data/*.png -o data``): predictions and overlays would land among the images.

Siblings and parents of inputs are fine (``-o exp/run1`` next to ``data/``, or an experiment folder
that holds its data). A COCO file's own folder does not count as an input folder: images are found
there by their ``file_name``, never by listing the folder, and ``data/train.json`` with
``-o data/run1`` is a common layout. Experiment folders given as inputs (``--teacher-dir``) do not
count either: ``-o exp/run1/student --teacher-dir exp/run1`` is the intended layout.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from distillkit.errors import UsageError

PathLike = str | os.PathLike[str]


def _resolved(path: PathLike) -> Path:
    # resolve() follows symlinks of the existing part, so a link into the data is caught too.
    return Path(path).expanduser().resolve()


def check_output_outside_inputs(output: PathLike, inputs: Iterable[PathLike | None], flag: str = "--output") -> None:
    """UsageError when ``output`` is one of ``inputs`` or lies inside one of the input folders.

    ``inputs`` may hold files and folders (an existing folder is checked for containment, anything
    else for equality only); None entries are skipped so optional options can be passed as they are.
    """
    target = _resolved(output)
    for source in inputs:
        if source is None:
            continue
        path = _resolved(source)
        if path.is_dir():
            if target == path or target.is_relative_to(path):
                raise UsageError(
                    f"{flag} {output} is inside the input folder {source}; its files would mix with the inputs",
                    f"choose a {flag} outside {source}, e.g. a sibling folder",
                )
        elif target == path:
            raise UsageError(
                f"{flag} {output} is the input file {source}; inputs are never modified", f"choose another {flag}"
            )


def check_output_apart_from_files(output: PathLike, files: Iterable[PathLike], flag: str = "--output") -> None:
    """UsageError when the folder ``output`` is the folder holding one of the input ``files``.

    For inputs given as single files (``infer a/x.png -o a``): written files would sit among them,
    and a later run over that folder would read them as inputs. Sub-folders of it are allowed.
    """
    target = _resolved(output)
    by_folder = {os.path.dirname(os.fspath(file)): file for file in files}  # 100k images: a handful of folders
    for folder, file in by_folder.items():
        if _resolved(folder) == target:
            raise UsageError(
                f"{flag} {output} holds the input image {file}; the outputs would mix with the inputs",
                f"choose a {flag} folder that holds no input",
            )


def image_folders(annotations: Iterable[PathLike | None], images_dir: PathLike | None = None) -> list[Path]:
    """The folders a COCO-reading command takes images from, as far as outputs are concerned.

    ``--images-dir`` when given, else each annotation file's ``images/`` folder (see the module
    docstring for why the annotation file's own folder is left out).
    """
    if images_dir is not None:
        return [Path(images_dir)]
    return [Path(file).expanduser().parent / "images" for file in annotations if file is not None]
