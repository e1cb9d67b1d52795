"""Cityscapes data: the label table, the datasets, list files and a synthetic Cityscapes."""
