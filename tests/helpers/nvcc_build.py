# SPDX-License-Identifier: Apache-2.0
"""Compile one of the ops' .cu files with nvcc, as the plugin build would, and list the object's symbols.

Used by the op tests to check the CUDA sources on machines with nvcc but no GPU (or a CPU-only torch).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig

import torch.utils.cpp_extension

FLAGS = ['-std=c++20', '-arch=sm_90', '--expt-relaxed-constexpr', '-Xcompiler', '-fPIC',
         '-D__CUDA_NO_HALF_OPERATORS__', '-D__CUDA_NO_HALF_CONVERSIONS__', '-D__CUDA_NO_BFLOAT16_CONVERSIONS__',
         '-D__CUDA_NO_HALF2_OPERATORS__']


def find_nvcc() -> str | None:
    home = torch.utils.cpp_extension.CUDA_HOME or '/usr/local/cuda'
    path = os.path.join(home, 'bin', 'nvcc')
    return path if os.path.exists(path) else shutil.which('nvcc')


def include_dirs(tmp_path) -> list[str]:
    includes = torch.utils.cpp_extension.include_paths() + [sysconfig.get_paths()['include']]
    if not os.path.exists(os.path.join(includes[0], 'c10', 'cuda', 'impl', 'cuda_cmake_macros.h')):
        # CPU-only torch wheels ship the c10/cuda headers without this generated one; a stand-in suffices.
        shim = tmp_path / 'shim' / 'c10' / 'cuda' / 'impl'
        shim.mkdir(parents=True)
        (shim / 'cuda_cmake_macros.h').write_text('#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n')
        includes.append(str(tmp_path / 'shim'))
    return includes


def compile_symbols(source: str, tmp_path, extra_flags: list[str] = ()) -> str:
    """Compile `source` to an object file and return its demangled symbol table; fails the test with nvcc's
    message when the compile fails."""
    obj = tmp_path / (os.path.basename(source) + '.o')
    cmd = [find_nvcc(), '-c', source, '-o', str(obj), *FLAGS, *extra_flags]
    result = subprocess.run(cmd + [f'-I{p}' for p in include_dirs(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]
    return subprocess.run(['nm', '-C', str(obj)], capture_output=True, text=True).stdout
