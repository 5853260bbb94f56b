# SPDX-License-Identifier: Apache-2.0
"""The memorization and privacy audit of audit.py: are generated volumes copies of training cases?

inputs: the packed training and holdout sets, generated volumes from files or from a network, all in stored units.
search: exact nearest training neighbours by voxel correlation over small shifts and the x-mirror (with an optional
pooled prefilter for large sets), and by cosine similarity of features. features: the MedicalNet and Inception
feature spaces. calibration: the holdout's null, the threshold, p-values, the copy rate's interval. membership: the
discriminator's membership inference with its control. core: the audit. report and plots: its outputs. copies: the
filter generate.py --exclude-copies uses.
"""
