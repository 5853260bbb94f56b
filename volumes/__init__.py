# SPDX-License-Identifier: Apache-2.0
"""Volumes: what a volume is (contract: axis order, intensity mapping, the geometry record), reading, reorienting,
resampling and writing medical volume files (volume_io), the packing pipeline (packing) and the procedural phantom
of the demo and the tests (phantom).

The contract sits here, at the bottom, because packing, training and generation all use it: DESIGN.md places it in
training/, but there it would make volumes/ import training/ while training/ imports volumes/. The training loop
itself uses only the contract; it reads packed datasets through training.dataset.
"""
