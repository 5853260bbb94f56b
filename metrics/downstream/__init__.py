# SPDX-License-Identifier: Apache-2.0
"""Downstream utility of synthetic volumes: does a segmenter trained on them segment real cases?

data: the labelled cases (a packed real dataset, a folder of generated volumes or a network generating them), the
split by case and the training sets of each run. segmenter: MONAI's 3D U-Net or SegResNet, its training with one
geometric augmentation for every regime, inference and the Dice and HD95 scores. nnunet: the same runs through nnU-Net
v2's own commands. experiment: the plan of runs (regimes x real fractions x seeds) and its execution, label
consistency included. report: results.csv, summary.json (means and bootstrap intervals), dice.png and the terminal
table.
"""
