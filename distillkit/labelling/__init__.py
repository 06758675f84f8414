"""Teacher labelling shared by every teacher kind: what a prediction is, and its on-disk cache.

A *teacher* (Grounding DINO + SAM adapters from ``train-teacher``, or a closed-set ultralytics
checkpoint) turns images into ``TeacherPrediction`` objects. ``label_images`` runs a teacher over a
list of images through a ``TeacherOutputCache`` so each image is computed once per teacher identity,
streamed to disk as it goes (an interrupted labelling run resumes where it stopped), and read back
on every later run or epoch instead of being recomputed.
"""

from distillkit.labelling.cache import TeacherOutputCache, image_content_key, label_images
from distillkit.labelling.types import Teacher, TeacherPrediction

__all__ = ["Teacher", "TeacherOutputCache", "TeacherPrediction", "image_content_key", "label_images"]
