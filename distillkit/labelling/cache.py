"""The teacher-output cache: one small JSON file per (teacher identity, image content).

Layout: ``<cache_dir>/<teacher identity[:16]>/<sha256 of the image bytes>.json``. Keying by the
image *content* means a renamed or copied image is still a hit and an edited image is a miss;
keying by the teacher identity means new adapters or thresholds never reuse stale labels. Each
entry is written atomically as soon as its batch is done, which makes labelling resumable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from distillkit.io import atomic_write_json, read_json, sha256_file
from distillkit.labelling.types import Teacher, TeacherPrediction
from distillkit.progress import NULL_PROGRESS, Progress


def image_content_key(path: Path) -> str:
    return sha256_file(path)


@dataclass
class TeacherOutputCache:
    root: Path
    teacher_identity: str

    @property
    def folder(self) -> Path:
        return Path(self.root) / self.teacher_identity[:16]

    def entry_path(self, image_key: str) -> Path:
        return self.folder / f"{image_key}.json"

    def get(self, image_key: str) -> TeacherPrediction | None:
        path = self.entry_path(image_key)
        if not path.is_file():
            return None
        return TeacherPrediction.from_record(read_json(path))

    def put(self, image_key: str, prediction: TeacherPrediction) -> None:
        atomic_write_json(self.entry_path(image_key), prediction.to_record(), indent=False)


@dataclass
class LabellingStats:
    hits: int = 0
    computed: int = 0


def label_images(
    teacher: Teacher,
    images: Sequence[Path],
    cache_dir: Path,
    *,
    batch_size: int = 8,
    progress: Progress = NULL_PROGRESS,
    stats: LabellingStats | None = None,
    filler: Callable[..., LabellingStats] | None = None,
) -> Iterator[tuple[Path, TeacherPrediction]]:
    """Yield ``(image, prediction)`` for every image, computing only what the cache lacks.

    Images are yielded in input order. ``stats`` (if given) counts cache hits and computed images.
    ``filler`` (``RayLabelling.filler``) computes every missing entry first, elsewhere; the images
    are then all read from the cache.
    """
    cache = TeacherOutputCache(Path(cache_dir), teacher.identity)
    stats = stats if stats is not None else LabellingStats()
    if filler is not None:
        paths = [Path(p) for p in images]
        filled = filler(paths, [image_content_key(p) for p in paths], Path(cache_dir), batch_size, progress)
        stats.computed += filled.computed
        stats.hits -= filled.computed  # counted again as hits below, when read back from the cache
    with progress.task("Teacher labelling", total=len(images)) as task:
        for start in range(0, len(images), batch_size):
            batch = [Path(p) for p in images[start : start + batch_size]]
            keys = [image_content_key(p) for p in batch]
            found = [cache.get(k) for k in keys]
            missing = [i for i, pred in enumerate(found) if pred is None]
            if missing:
                computed = teacher.predict([batch[i] for i in missing])
                for i, pred in zip(missing, computed, strict=True):
                    cache.put(keys[i], pred)
                    found[i] = pred
            stats.hits += len(batch) - len(missing)
            stats.computed += len(missing)
            for path, pred in zip(batch, found, strict=True):
                assert pred is not None
                yield path, pred
            task.advance(len(batch))
