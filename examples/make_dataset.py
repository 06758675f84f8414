"""Write the synthetic inspection dataset that distillkit's examples and quick starts use.

Usage: ``python examples/make_dataset.py data/synthetic --images 60 --seed 0``, then
``distillkit validate data/synthetic/annotations.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Run from a source checkout without installing: make the repository's package importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distillkit.data.synthetic import generate_inspection_dataset
from distillkit.errors import DistillkitError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Generate a small synthetic inspection dataset (PNG images + COCO annotations.json)."
    )
    parser.add_argument("output_dir", type=Path, help="folder to write annotations.json and images/ into")
    parser.add_argument("--images", type=int, default=60, help="number of images (default: 60)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same files (default: 0)")
    args = parser.parse_args(argv)
    try:
        path = generate_inspection_dataset(args.output_dir, num_images=args.images, seed=args.seed)
    except DistillkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
