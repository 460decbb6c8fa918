"""Stages import downwards only, at module level (read from the source with `ast`, nothing imported)."""

import ast
import pathlib

PKG = pathlib.Path(__file__).resolve().parents[1] / "sora_jax"
# Stages in pipeline order: a stage may import from the ones before it, never from those after.
# The named configs live inside the config stage (sora_jax/config/named; the top-level configs/
# links to it): the loader finds a named config there, and each starts from the schema's defaults.
RANK = {stage: i for i, group in enumerate(("errors", "linalg storage atomic torch_pickle array_pickle", "config", "data", "models", "objectives",
                                            "parallel", "training", "weights", "evaluation", "apps", "cli"))
        for stage in group.split()}
LAZY_OK = {"sora_jax/__init__.py", "sora_jax/cli"}  # start-up time: the package root and the dispatcher


def _stage(module: str) -> str:
  return module.split(".")[1] if module.count(".") else module


def _imports(path: pathlib.Path):
  """(module imported, whether at module level) for every `sora_jax...` import of a file."""
  tree = ast.parse(path.read_text())
  top = set(map(id, tree.body))
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sora_jax"):
      names = [node.module] if node.module != "sora_jax" else [f"sora_jax.{a.name}" for a in node.names]
    elif isinstance(node, ast.Import):
      names = [a.name for a in node.names if a.name.startswith("sora_jax")]
    else:
      continue
    for name in names:
      yield name, id(node) in top


def _files():
  for path in sorted(PKG.rglob("*.py")):
    rel = path.relative_to(PKG.parent)
    yield path, str(rel), rel.parts[1].removesuffix(".py") if len(rel.parts) > 1 else ""


def test_training_models_data_objectives_parallel_never_import_evaluation_or_apps():
  bad = []
  for path, rel, stage in _files():
    if stage in ("training", "models", "data", "objectives", "parallel"):
      bad += [(rel, m) for m, _ in _imports(path) if _stage(m) in ("evaluation", "apps", "cli")]
  assert not bad, bad


def test_every_stage_imports_only_from_stages_before_it():
  bad = []
  for path, rel, stage in _files():
    if stage not in RANK:
      continue
    for module, _ in _imports(path):
      target = _stage(module)
      if target in RANK and RANK[target] > RANK[stage]:
        bad.append((rel, module))
  assert not bad, bad


def test_imports_are_at_module_level_outside_the_entry_points():
  lazy = []
  for path, rel, _ in _files():
    if rel in LAZY_OK or rel.startswith("sora_jax/cli/"):
      continue
    tree = ast.parse(path.read_text())
    top = set(map(id, tree.body))
    lazy += [(rel, n.lineno) for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
             and id(n) not in top and not _in_try(tree, n)]
  assert not lazy, lazy


def _in_try(tree, node) -> bool:
  """An optional dependency (faiss) is imported inside try/except ImportError, where it is used."""
  return any(isinstance(t, ast.Try) and any(node is n for n in ast.walk(t)) for t in ast.walk(tree))
