"""Students: prompt-free ultralytics YOLO / YOLO-seg models trained from ground truth and teachers."""
