# SPDX-License-Identifier: Apache-2.0
"""GAN-agnostic PyTorch infrastructure: persistence, statistics, distributed set-up, plugins and ops."""
