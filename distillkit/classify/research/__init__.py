"""Research techniques for hard, fine-grained classification (each a switch in ``defaults/classifier.yaml``).

Modules, one job each: ``gate`` (dynamic head attention), ``token_learner``, ``token_merging``
(ToMe), ``hybrid`` (CNN + ViT backbone), ``lora`` (peft adapters), ``margins`` (cosine head, ArcFace,
AdaFace, CurricularFace), ``objectives`` (SupCon, evidential loss and uncertainty), ``views``
(SupCon views), ``optim`` (SAM, Lookahead, gradient centralisation), ``spec`` (``research:`` model
names), ``training`` (the train-classifier hooks) and ``recipe`` (SupCon warm start -> margin
fine-tune -> distillation). The mixing strategies (mixup / cutmix / tokenmix) and the one loss
computer are every run's: ``classify/mixing.py``, ``classify/loss_computer.py``.

Importing the package registers the ``research:`` model family with ``distillkit.classify.models``
and the ``evidential`` loss with ``distillkit.classify.losses``.
"""

from distillkit.classify.losses import LOSSES
from distillkit.classify.models import MODEL_BUILDERS
from distillkit.classify.research.spec import PREFIX, ResearchModel, build_research_backbone, research_model
from distillkit.classify.research.training import register_losses

MODEL_BUILDERS.setdefault(PREFIX, build_research_backbone)
register_losses(LOSSES)

__all__ = ["PREFIX", "ResearchModel", "build_research_backbone", "research_model"]
