"""The architecture the layout promises: no import cycles (lazy imports included), the library
never imports configs/, and no library module grows past ~400 lines."""

import ast
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
LIBRARY = ("tribert_jax", "data_pipeline")
PACKAGES = LIBRARY + ("configs", "benchmarks")
MAX_LINES = 420  # "~400": one module, one idea


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(REPO).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, pathlib.Path]:
  found = {"main": REPO / "main.py"}
  for package in PACKAGES:
    for path in sorted((REPO / package).rglob("*.py")):
      found[_module_name(path)] = path
  return found


def _imports(name: str, path: pathlib.Path, modules) -> set[str]:
  """Project modules `name` imports anywhere in its file (function-level imports included):
  `from a.b import c` counts as a.b.c when that is a module, else as a.b."""
  is_package = path.name == "__init__.py"
  out = set()
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      out.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        anchor = name.split(".")
        anchor = anchor[:len(anchor) - node.level + (1 if is_package else 0)]
        base = ".".join(anchor + ([base] if base else []))
      for alias in node.names:
        full = f"{base}.{alias.name}" if base else alias.name
        out.add(full if full in modules else base)
  return {m for m in out if m in modules and m != name}


def _graph():
  modules = _modules()
  return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycles(graph):
  """Strongly connected components with more than one module (Tarjan)."""
  index, low, stack, on_stack, out, counter = {}, {}, [], set(), [], [0]

  def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on_stack.add(v)
    for w in sorted(graph[v]):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        out.append(sorted(component))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return out


def test_the_checker_sees_lazy_imports_and_cycles():
  graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
  assert _cycles(graph) == [["a", "b", "c"]]
  # train.py imports the task registry; a lazy import inside a function still counts.
  assert "tribert_jax.tasks" in _graph()["tribert_jax.train"] or any(
      m.startswith("tribert_jax.tasks") for m in _graph()["tribert_jax.train"])


def test_there_are_no_import_cycles():
  assert _cycles(_graph()) == []


def test_the_library_never_imports_configs():
  offenders = {name: sorted(m for m in deps if m == "configs" or m.startswith("configs."))
               for name, deps in _graph().items() if name.split(".")[0] in LIBRARY}
  assert {k: v for k, v in offenders.items() if v} == {}


@pytest.mark.parametrize("package", LIBRARY)
def test_library_modules_stay_small(package):
  sizes = {str(p.relative_to(REPO)): len(p.read_text().splitlines())
           for p in (REPO / package).rglob("*.py")}
  assert {p: n for p, n in sizes.items() if n > MAX_LINES} == {}
