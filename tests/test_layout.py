# SPDX-License-Identifier: Apache-2.0
"""The module layout: no command-line tool imports another, no module imports one that imports it back, and no test
module imports another test module or a conftest.py (what tests share lives in tests/helpers/ and conftest.py)."""

import ast
import glob
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = ('train', 'generate', 'calc_metrics', 'dataset_tool', 'style_mixing', 'projector', 'radiomics', 'demo')
PACKAGES = ('dnnlib', 'torch_utils', 'training', 'metrics', 'volumes')
TESTS = os.path.join(ROOT, 'tests')


def module_files() -> dict[str, str]:
    files = {name: os.path.join(ROOT, f'{name}.py') for name in (*TOOLS, 'legacy')}
    for package in PACKAGES:
        for path in glob.glob(os.path.join(ROOT, package, '**', '*.py'), recursive=True):
            module = os.path.relpath(path, ROOT)[:-3].replace(os.sep, '.')
            files[module[:-len('.__init__')] if module.endswith('.__init__') else module] = path
    return files


def imported_modules(path: str, known: set[str]) -> set[str]:
    """The project's modules that `path` imports anywhere (module level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f'{node.module}.{alias.name}' for alias in node.names]
        elif isinstance(node, ast.Call) and getattr(node.func, 'attr', '') == 'lazy_import' and node.args and \
                isinstance(node.args[0], ast.Constant):
            names = [node.args[0].value]
        else:
            continue
        found |= {name for name in names if name in known}
    return found


def test_no_tool_imports_another_tool():
    files = module_files()
    for tool in TOOLS:
        others = imported_modules(files[tool], set(TOOLS) - {tool})
        assert not others, f'{tool}.py imports the tool(s) {sorted(others)}; move what they share into a module'


def test_no_import_cycles_between_modules():
    files = module_files()
    graph = {module: imported_modules(path, set(files)) - {module} for module, path in files.items()}
    # A package imports what its __init__ names; a submodule importing its own package is not a cycle.
    graph = {m: {d for d in deps if not m.startswith(d + '.')} for m, deps in graph.items()}
    state: dict[str, int] = {}

    def visit(module: str, stack: list[str]) -> None:
        state[module] = 1
        for dep in sorted(graph[module]):
            if state.get(dep) == 1:
                raise AssertionError('import cycle: ' + ' -> '.join(stack[stack.index(dep):] + [dep]))
            if dep not in state:
                visit(dep, stack + [dep])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def imported_files(path: str) -> set[str]:
    """The files of this tree that `path` imports anywhere: `import a.b`, `from a import b`, `from . import b` and
    importlib.import_module('a.b'), resolved from the repository root or, for relative imports, from path's folder."""
    found = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            bases, names = [ROOT], [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            folder = os.path.dirname(path)
            for _ in range(node.level - 1):
                folder = os.path.dirname(folder)
            bases = [folder] if node.level else [ROOT]
            module = node.module or ''
            names = [module] + [f'{module}.{alias.name}'.lstrip('.') for alias in node.names]
        elif isinstance(node, ast.Call) and getattr(node.func, 'attr', getattr(node.func, 'id', '')) in \
                ('import_module', '__import__') and node.args and isinstance(node.args[0], ast.Constant):
            bases, names = [ROOT], [node.args[0].value]
        else:
            continue
        for base in bases:
            for name in filter(None, names):
                file = os.path.join(base, *name.split('.')) + '.py'
                if os.path.isfile(file):
                    found.add(os.path.relpath(file, ROOT))
    return found


def test_no_test_module_imports_another_test_module_or_a_conftest():
    # Importing a test module runs its tests twice or builds its module fixtures twice, and hides where shared code
    # lives; importing a conftest.py imports it a second time under another name.
    offences = []
    for path in sorted(glob.glob(os.path.join(TESTS, '**', 'test_*.py'), recursive=True)):
        for imported in sorted(imported_files(path)):
            name = os.path.basename(imported)
            if name == 'conftest.py' or (name.startswith('test_') and name.endswith('.py')):
                offences.append(f'{os.path.relpath(path, ROOT)} imports {imported}')
    assert not offences, 'move what they share into tests/helpers/ or a conftest.py:\n' + '\n'.join(offences)
