# SPDX-License-Identifier: Apache-2.0
"""Volumes: what a volume is (contract: axis order, intensity mapping, the geometry record), reading, reorienting,
resampling and writing medical volume files (volume_io), the packing pipeline (packing, sources), the packed dataset
format with its writer and reader (packed) and the procedural phantom of the demo and the tests (phantom).

Everything here sits below training/: the trainer's torch Dataset (training.dataset) wraps volumes.packed's reader.
"""
