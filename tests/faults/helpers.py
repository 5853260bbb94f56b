# SPDX-License-Identifier: Apache-2.0
"""The old name of tests/helpers/cli.py, kept only because tests/test_demo_help.py (changed elsewhere at present)
still imports run_cli from here. New code imports tests.helpers.cli; remove this file once no one uses it."""

from tests.helpers.cli import (REPO, assert_clean_failure, flip_member_byte, member_data_offset, partial_files,
                               run_cli, snapshot_of_files, truncate)

__all__ = ['REPO', 'assert_clean_failure', 'flip_member_byte', 'member_data_offset', 'partial_files', 'run_cli',
           'snapshot_of_files', 'truncate']
