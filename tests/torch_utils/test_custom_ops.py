# SPDX-License-Identifier: Apache-2.0
"""custom_ops: a tiny C++ extension built through get_plugin, the cache key, and a loud build failure."""

import pytest
import torch

from torch_utils import custom_ops

pytestmark = pytest.mark.slow  # plugin builds


ADD_ONE = '''
#include <torch/extension.h>
torch::Tensor add_one(torch::Tensor x) { return x + %s; }
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("add_one", &add_one); }
'''


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_EXTENSIONS_DIR', str(tmp_path / 'ext'))
    monkeypatch.setattr(custom_ops, '_cached_plugins', {})
    return tmp_path


def test_build_load_and_reuse(isolated_cache):
    src = isolated_cache / 'add_one.cpp'
    src.write_text(ADD_ONE % '1')
    plugin = custom_ops.get_plugin('sg3d_test_add_one', sources=['add_one.cpp'], source_dir=str(isolated_cache))
    assert torch.equal(plugin.add_one(torch.zeros(3)), torch.ones(3))
    builds = list((isolated_cache / 'ext' / 'sg3d_test_add_one').iterdir())
    assert len(builds) == 1 and not any('.tmp-' in p.name for p in builds)
    # A second process-level lookup of the same sources loads the cached build without compiling.
    custom_ops._cached_plugins.clear()
    again = custom_ops.get_plugin('sg3d_test_add_one', sources=['add_one.cpp'], source_dir=str(isolated_cache))
    assert torch.equal(again.add_one(torch.zeros(1)), torch.ones(1))
    assert len(list((isolated_cache / 'ext' / 'sg3d_test_add_one').iterdir())) == 1


def test_cache_key_changes_with_source(tmp_path):
    src = tmp_path / 'a.cpp'
    src.write_text(ADD_ONE % '1')
    key1 = custom_ops.build_key([str(src)])
    assert custom_ops.build_key([str(src)]) == key1
    src.write_text(ADD_ONE % '2')
    assert custom_ops.build_key([str(src)]) != key1
    header = tmp_path / 'a.h'
    header.write_text('#pragma once\n')
    assert custom_ops.build_key([str(src)], [str(header)]) != custom_ops.build_key([str(src)])


def test_failed_build_raises_with_compiler_message(isolated_cache):
    src = isolated_cache / 'broken.cpp'
    src.write_text('#include <torch/extension.h>\nthis is not C++;\n')
    with pytest.raises(RuntimeError) as info:
        custom_ops.get_plugin('sg3d_test_broken', sources=['broken.cpp'], source_dir=str(isolated_cache))
    assert 'sg3d_test_broken' in str(info.value) and 'error' in str(info.value).lower()
    leftovers = list((isolated_cache / 'ext' / 'sg3d_test_broken').iterdir())
    assert leftovers == []
