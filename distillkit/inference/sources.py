"""Turning SOURCE arguments into what `infer` reads: image files, video files, streams and cameras.

Files, folders and glob patterns give images (sorted) and video files; ``rtsp://``, ``http(s)://``
... URLs are streams; a bare number that names no file is a camera index (``0``: the first camera),
as OpenCV numbers them.
"""

from __future__ import annotations

import glob
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from distillkit.errors import UsageError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
VIDEO_SUFFIXES = frozenset(
    {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".mts", ".3gp"}
)
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")


@dataclass(frozen=True)
class VideoSource:
    """A video file, a stream URL or a camera index, as the user gave it."""

    name: str  # the file path, URL or camera number: what the predictions' file_name says
    kind: str  # "file", "stream" or "camera"

    @property
    def live(self) -> bool:
        """Streams and cameras: no frame count, no end but Ctrl-C, --max-frames or the source closing."""
        return self.kind != "file"

    @property
    def target(self) -> str | int:
        """What ``cv2.VideoCapture`` opens."""
        return int(self.name) if self.kind == "camera" else self.name

    @property
    def stem(self) -> str:
        """A file-name stem for this source's annotated video."""
        if self.kind == "file":
            return Path(self.name).stem
        if self.kind == "camera":
            return f"camera{self.name}"
        cleaned = "".join(c if c.isalnum() or c in "-_" else "_" for c in self.name.split("://", 1)[-1])
        return "stream_" + cleaned.strip("_")[:80]


@dataclass
class Sources:
    images: list[Path] = field(default_factory=list)
    videos: list[VideoSource] = field(default_factory=list)

    @property
    def video_files(self) -> list[Path]:
        return [Path(v.name) for v in self.videos if v.kind == "file"]


def collect_sources(sources: Sequence[str | Path], recursive: bool = False) -> Sources:
    """Every image and video named by ``sources``, plus streams and cameras, in the order given.

    Images and videos found in one folder or glob are sorted; duplicates removed.
    """
    images: list[Path] = []
    videos: list[VideoSource] = []
    for source in sources:
        text = str(source)
        path = Path(text).expanduser()
        if path.is_file():
            suffix = path.suffix.lower()
            if suffix in VIDEO_SUFFIXES:
                videos.append(VideoSource(str(path.resolve()), "file"))
            elif suffix in IMAGE_SUFFIXES:
                images.append(path)
            else:
                kinds = ", ".join(sorted(IMAGE_SUFFIXES | VIDEO_SUFFIXES))
                raise UsageError(f"{text} is not an image file (nor a video)", f"give files ending in {kinds}")
        elif path.is_dir() or glob.has_magic(text):
            if path.is_dir():
                found = sorted(p for p in path.glob("**/*" if recursive else "*") if p.is_file())
            else:
                found = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
            images.extend(p for p in found if p.suffix.lower() in IMAGE_SUFFIXES)
            videos.extend(VideoSource(str(p.resolve()), "file") for p in found if p.suffix.lower() in VIDEO_SUFFIXES)
        elif text.lower().startswith(STREAM_SCHEMES):
            videos.append(VideoSource(text, "stream"))
        elif text.isdigit():
            videos.append(VideoSource(str(int(text)), "camera"))
        else:
            raise UsageError(
                f"{text} is neither an image file, a video, a folder, a glob pattern, a stream URL nor a camera number",
                "check the path",
            )
    unique_images = list(dict.fromkeys(p.resolve() for p in images))
    unique_videos = list(dict.fromkeys(videos))
    if not unique_images and not unique_videos:
        raise UsageError(
            "no image or video found in " + ", ".join(str(s) for s in sources), "give image or video files or folders"
        )
    return Sources(unique_images, unique_videos)


def collect_images(sources: Sequence[str | Path], recursive: bool = False) -> list[Path]:
    """Every image named by ``sources``: files as given, folders' images, glob patterns' matches.

    Order is stable (each source's images sorted, sources in the order given); duplicates removed.
    """
    found: list[Path] = []
    for source in sources:
        text = str(source)
        path = Path(text).expanduser()
        if path.is_file():
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                raise UsageError(
                    f"{text} is not an image file", f"give images ending in {', '.join(sorted(IMAGE_SUFFIXES))}"
                )
            found.append(path)
        elif path.is_dir():
            pattern = "**/*" if recursive else "*"
            found.extend(sorted(p for p in path.glob(pattern) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()))
        elif glob.has_magic(text):
            matches = sorted(Path(p) for p in glob.glob(text, recursive=True))
            found.extend(p for p in matches if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        else:
            raise UsageError(f"{text} is neither an image file, a folder nor a glob pattern", "check the path")
    unique = list(dict.fromkeys(p.resolve() for p in found))
    if not unique:
        raise UsageError("no image found in " + ", ".join(str(s) for s in sources), "give image files or folders")
    return unique
