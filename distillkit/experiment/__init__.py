"""What every training command shares: the experiment folder, fresh or resumed, and its configuration.

``ExperimentRun`` is the base the three families build on (``students.train.StudentRun``,
``classify.train.ClassifierRun``, ``teachers.train.TeacherRun``), the way ultralytics' task trainers
are thin subclasses of ``BaseTrainer``. ``coco`` loads the train/val pair the COCO families read.
"""

from distillkit.experiment.coco import coco_inputs, load_coco_pair
from distillkit.experiment.run import ExperimentRun, PreviousRun

__all__ = ["ExperimentRun", "PreviousRun", "coco_inputs", "load_coco_pair"]
