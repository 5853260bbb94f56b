# SPDX-License-Identifier: Apache-2.0
"""Training: networks, the anisotropic volume schedule, loss, augmentation, datasets and the training loop."""
