"""Datasets: COCO loading, checking and repair, splitting, and what the data says (DatasetInfo)."""
