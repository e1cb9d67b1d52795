"""Data: one description per dataset (Cityscapes, Pascal VOC, ADE20K, a folder of your own) and the
registry naming them, the datasets, the Cityscapes label table, list files and synthetic data."""
