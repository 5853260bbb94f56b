# SPDX-License-Identifier: Apache-2.0
"""Generic utilities that know nothing about GANs or PyTorch."""

from . import cli, util  # noqa: F401
from .util import EasyDict, make_cache_dir_path  # noqa: F401
