# SPDX-License-Identifier: Apache-2.0
"""Radiomics: PyRadiomics-compatible features of 3D volumes and the comparison of real and synthetic sets.

settings: PyRadiomics' settings, image types and parameter files. roi: from image and mask to the region of
interest (normalisation, resampling, cropping, discretisation). filters: the LoG and wavelet image types.
features: first-order and shape features, the feature names and the extraction of one or many volumes; texture:
GLCM, GLRLM, GLSZM, GLDM, NGTDM. frd: the Frechet Radiomics Distance (v1, v0) as frd-score defines it. compare:
the statistics of radiomics.py (KS, Levene, Wasserstein, QQ alignment, Mahalanobis, Hotelling's T^2,
correlation-matrix distance) and the feature curation; plots: its figures.
"""
