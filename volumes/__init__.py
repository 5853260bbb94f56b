# SPDX-License-Identifier: Apache-2.0
"""Volume files and sources: reading, reorienting, resampling and writing medical volumes (io), and the procedural
phantom used by the demo and the tests (phantom). Packing and generation use them; the training loop does not
(it reads packed datasets through training.dataset), which is why they are not in training/.
"""
