"""distillkit: turn a labelled image dataset into a small, fast, prompt-free model for edge devices."""

__version__ = "0.1.0"
