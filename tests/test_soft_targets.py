"""The teacher's soft targets: carried through ultralytics' data pipeline, used by the student's loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distillkit.labelling.postprocess import LabelFilter, classwise_nms, suppress_cross_class_duplicates
from distillkit.labelling.types import TeacherPrediction
from distillkit.students.soft_targets import SoftTargetLossMixin, decode, encode, match_rows
from distillkit.ultralytics_env import import_ultralytics


def test_row_encoding_round_trips_through_any_row_selection() -> None:
    classes = np.array([0, 2, 1, 2])
    rows = np.array([-1, 0, 123_456_789, -1])
    encoded = encode(classes, rows, base=4)
    assert encoded.dtype == np.float64 and encoded.shape == (4, 1)
    shuffled = encoded[[3, 1, 2, 0]]  # what mosaic / random perspective do to the cls column
    got_classes, got_rows = decode(torch.from_numpy(shuffled), base=4)
    assert got_classes.view(-1).tolist() == [2, 2, 1, 0] and got_classes.dtype == torch.float32
    assert got_rows.tolist() == [-1, 0, 123_456_789, -1]


def test_label_lines_find_their_rows_by_class_and_box() -> None:
    labels = {
        "cls": np.array([[1.0], [0.0], [1.0]], dtype=np.float32),
        "bboxes": np.array([[0.5, 0.5, 0.2, 0.2], [0.1, 0.1, 0.05, 0.05], [0.5, 0.5, 0.2, 0.2]], dtype=np.float32),
    }
    entries = [[7, 0, 0.1, 0.1, 0.05, 0.05], [9, 1, 0.5, 0.5, 0.2, 0.2], [4, 0, 0.9, 0.9, 0.1, 0.1]]
    # the duplicated class-1 box takes one row only; the entry whose line ultralytics dropped matches nothing
    assert match_rows(labels, entries).tolist() == [9, 7, -1]


def test_classwise_nms_and_cross_class_suppression_merge_soft_scores() -> None:
    prediction = TeacherPrediction(
        width=100,
        height=100,
        boxes=[[10, 10, 30, 30], [11, 11, 31, 31], [10, 10, 30, 31], [60, 60, 90, 90]],
        scores=[0.9, 0.8, 0.6, 0.3],
        class_ids=[0, 0, 1, 1],
        class_scores=[[0.9, 0.2], [0.8, 0.1], [0.3, 0.6], [0.1, 0.3]],
    )
    same_class = classwise_nms(prediction, 0.6)
    assert same_class.scores.tolist() == pytest.approx([0.9, 0.6, 0.3])
    merged = suppress_cross_class_duplicates(same_class, 0.8)
    assert merged.class_ids.tolist() == [0, 1] and merged.class_scores[0].tolist() == pytest.approx([0.9, 0.6])
    gated = LabelFilter([0.5, 0.4]).apply(prediction)
    assert gated.boxes.tolist() == [[10, 10, 30, 30]]  # the far box scores 0.3 < its class's 0.4
    assert len(LabelFilter([0.5, 0.4]).apply(prediction.subset(np.array([3])))) == 0
    assert LabelFilter([0.5, 0.4]).apply(prediction.filtered(0.95)).class_scores.shape == (0, 2)  # no crash


def _criterion(task: str, soft: bool) -> object:
    import_ultralytics()
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel, SegmentationModel
    from ultralytics.utils.loss import v8DetectionLoss, v8SegmentationLoss

    torch.manual_seed(0)
    model_type, loss_type = (
        (SegmentationModel, v8SegmentationLoss) if task == "segment" else (DetectionModel, v8DetectionLoss)
    )
    model = model_type("yolov8n-seg.yaml" if task == "segment" else "yolov8n.yaml", nc=3, verbose=False)
    model.args = get_cfg()
    criterion_type = type("Soft", (SoftTargetLossMixin, loss_type), {}) if soft else loss_type
    return model, criterion_type(model)


def _batch(task: str, rows: list[int]) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    batch = {
        "img": torch.rand(2, 3, 64, 64),
        "batch_idx": torch.tensor([0.0, 0.0, 1.0]),
        "cls": torch.tensor([[0.0], [2.0], [1.0]]),
        "bboxes": torch.tensor([[0.3, 0.3, 0.3, 0.3], [0.7, 0.7, 0.4, 0.3], [0.5, 0.5, 0.5, 0.5]]),
        "soft_row": torch.tensor(rows),
    }
    if task == "segment":
        masks = torch.zeros(3, 16, 16)
        masks[0, 2:7, 2:7] = 1
        masks[1, 9:14, 8:14] = 1
        masks[2, 4:12, 4:12] = 1
        batch["masks"] = masks
    return batch


@pytest.mark.parametrize("task", ["detect", "segment"])
def test_one_hot_rows_change_nothing_and_soft_rows_change_the_class_and_mask_losses(task: str) -> None:
    torch.set_num_threads(1)
    model, plain = _criterion(task, soft=False)
    _, soft = _criterion(task, soft=True)
    model.args.overlap_mask = False
    plain.overlap = soft.overlap = False
    batch = _batch(task, rows=[-1, 0, 1])
    preds = model(batch["img"])
    # rows: [score, mask quality, p_0, p_1, p_2]; row 0 = a certain class-2 label, row 1 = a certain class-1 label
    certain = torch.tensor([[1.0, 1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 0.0, 1.0, 0.0]])
    soft.attach_soft_targets(certain)
    want, _ = plain(preds, {k: v for k, v in batch.items() if k != "soft_row"})
    got, _ = soft(preds, batch)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-6)  # one-hot rows are exactly the hard targets

    doubtful = torch.tensor([[0.5, 0.1, 0.3, 0.0, 0.5], [0.4, 0.2, 0.0, 0.4, 0.2]])
    soft.soft_table = doubtful
    changed, _ = soft(preds, batch)
    names = list(plain.loss_names)
    cls_index = names.index("cls_loss")
    assert not torch.isclose(changed[cls_index], want[cls_index], rtol=1e-3)
    box_index = names.index("box_loss")
    assert changed[box_index] < want[box_index]  # unsure teacher boxes weigh less
    if task == "segment":
        seg_index = names.index("seg_loss")
        assert changed[seg_index] < want[seg_index]  # mask quality 0.1 / 0.2 weighs those masks down
    without_rows, _ = soft(preds, {**batch, "soft_row": torch.tensor([-1, -1, -1])})
    assert torch.allclose(without_rows, want, rtol=1e-5, atol=1e-6)  # ground truth only: ultralytics' own loss


def test_ignored_class_mask_marks_the_anchors_inside_each_region_for_its_classes() -> None:
    from distillkit.students.soft_targets import ignored_class_mask

    anchors = torch.tensor([[5.0, 5.0], [15.0, 5.0], [5.0, 15.0], [15.0, 15.0]])
    boxes = torch.tensor([[[0.0, 0.0, 10.0, 20.0], [0.0, 0.0, 20.0, 20.0]], [[0.0, 0.0, 20.0, 10.0], [0, 0, 0, 0]]])
    is_region = torch.tensor([[True, False], [True, False]])  # image 0's second box is an object: no effect
    classes = torch.tensor([[[0.0, 1.0], [1.0, 1.0]], [[1.0, 0.0], [0.0, 0.0]]])
    mask = ignored_class_mask(anchors, boxes, is_region, classes)
    assert mask.shape == (2, 4, 2)
    assert mask[0].tolist() == [[False, True], [False, False], [False, True], [False, False]]  # left half, class 1
    assert mask[1].tolist() == [[True, False], [True, False], [False, False], [False, False]]  # top half, class 0


def test_an_ignore_region_is_never_assigned_and_removes_only_its_classes_background_loss() -> None:
    torch.set_num_threads(1)
    model, plain = _criterion("detect", soft=False)
    _, soft = _criterion("detect", soft=True)
    batch = _batch("detect", rows=[-1, -1, -1])
    preds = model(batch["img"])
    want, _ = plain(preds, {k: v for k, v in batch.items() if k != "soft_row"})
    order = [0, 1, 3, 2]  # collated batches are sorted by image
    with_region = {  # a whole-image region on image 0 (row 0), written as a class-2 label line
        **batch,
        "batch_idx": torch.cat([batch["batch_idx"], torch.tensor([0.0])])[order],
        "cls": torch.cat([batch["cls"], torch.tensor([[2.0]])])[order],
        "bboxes": torch.cat([batch["bboxes"], torch.tensor([[0.5, 0.5, 1.0, 1.0]])])[order],
        "soft_row": torch.tensor([-1, -1, 0, -1]),
    }
    names = list(plain.loss_names)
    box, cls = names.index("box_loss"), names.index("cls_loss")
    soft.attach_soft_targets(torch.tensor([[-1.0, 1.0, 0.0, 0.0, 0.0]]))  # ignores no class
    unchanged, _ = soft(preds, with_region)
    assert torch.allclose(unchanged, want, rtol=1e-5, atol=1e-6)  # the region itself is no object
    soft.soft_table = torch.tensor([[-1.0, 1.0, 0.0, 0.0, 1.0]])  # class 2 is not taught on image 0
    ignored, _ = soft(preds, with_region)
    assert torch.isclose(ignored[box], want[box], rtol=1e-5)  # the same assignment
    assert ignored[cls] < want[cls]
    # exactly ultralytics' loss with image 0's class-2 terms weighted 0 where no label claims the anchor
    plain_batch = {k: v for k, v in batch.items() if k != "soft_row"}
    (fg_mask, *_), _, _ = plain.get_assigned_targets_and_loss(plain.parse_output(preds), plain_batch)
    weights = torch.ones(*fg_mask.shape, 3)
    weights[0, :, 2] = fg_mask[0].float()
    plain.class_weights = weights
    expected, _ = plain(preds, plain_batch)
    assert torch.allclose(ignored, expected, rtol=1e-5, atol=1e-6)
    assert soft.class_weights is None  # the per-batch weights do not outlive the call
