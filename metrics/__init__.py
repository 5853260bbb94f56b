# SPDX-License-Identifier: Apache-2.0
"""Quality metrics of generated volumes: slice-wise FID/KID/precision-recall, 3D FID, MS-SSIM diversity, MMD, FRD.

metric_main holds the registry (calc_metric, report_metric); metric_utils the shared machinery; one file per metric.
"""
