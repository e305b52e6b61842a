"""Documentation checks: the examples and the tutorial run, the notebook is the script,
the docs site builds with warnings as errors, and the public API is documented.

The runs of the examples, the notebook and ``mkdocs build`` are marked ``slow`` (CI runs
them too); the docstring checks are quick.
"""

from __future__ import annotations

import dataclasses
import doctest
import importlib
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
TUTORIAL = EXAMPLES / "tutorial.py"
NOTEBOOK = EXAMPLES / "tutorial.ipynb"
DOCS = ROOT / "docs"

SUBPACKAGES = (
    "functional",
    "nn",
    "models",
    "generation",
    "train",
    "data",
    "metrics",
    "analysis",
    "interop",
    "recipes",
)

# Figures the tutorial writes, one or more per step.
TUTORIAL_FIGURES = (
    "1_bahdanau.png",
    "1_luong.png",
    "2_self_attention.png",
    "2_scaling.png",
    "3_heads_untrained.png",
    "3_minilm_heads.png",
    "4_positional_encoding.png",
    "4_mask_padding_mask.png",
    "4_mask_causal_mask.png",
    "4_mask_padding_and_causal.png",
    "5_translation_cross_attention.png",
    "6_vit_patches.png",
    "6_vit_cls_attention.png",
    "8_scaling.png",
)

# docs pages whose python blocks run as they are (interop.md, train.md and recipes.md
# show code that needs a checkpoint directory, a model with its data, a training run).
RUNNABLE_DOCS_PAGES = (
    "analysis.md",
    "functional.md",
    "generation.md",
    "index.md",
    "metrics.md",
    "models.md",
)

EXAMPLE_SECTION = re.compile(r"^\s*Examples?:\s*$", re.MULTILINE)


def _run(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """Run ``args`` from the repository root; fail with the output if it fails."""
    environment = {**os.environ, "MPLBACKEND": "Agg", **env}
    proc = subprocess.run(
        args, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


def public_names() -> list[tuple[str, str, object]]:
    """``(subpackage, name, object)`` for every name in the subpackages' ``__all__``."""
    import attnkit

    names = [("", name, getattr(attnkit, name)) for name in getattr(attnkit, "__all__", [])]
    for sub in SUBPACKAGES:
        module = importlib.import_module(f"attnkit.{sub}")
        names += [(sub, name, getattr(module, name)) for name in module.__all__]
    return names


def own_docstring(obj: object) -> str:
    """The object's own docstring; not one inherited, nor the signature dataclasses write."""
    doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else getattr(obj, "__doc__", None)
    if not doc:
        return ""
    if dataclasses.is_dataclass(obj) and doc.startswith(f"{obj.__name__}("):
        return ""  # dataclasses invent "Name(field: type, ...)" when there is none
    return inspect.cleandoc(doc)


def has_code(obj: object) -> bool:
    """Classes and functions (constants and type aliases are documented in the pages)."""
    return inspect.isclass(obj) or inspect.isfunction(obj) or inspect.isbuiltin(obj)


# --------------------------------------------------------------------- docstrings (quick)


def test_every_public_class_and_function_has_a_docstring():
    missing = [
        f"attnkit.{sub}.{name}"
        for sub, name, obj in public_names()
        if has_code(obj) and not own_docstring(obj)
    ]
    assert not missing, f"public names without a docstring: {missing}"


def documented_objects() -> list[tuple[str, object]]:
    """``(qualified name, object)`` for every public class and function, each object once."""
    seen: set[int] = set()
    found = []
    for sub, name, obj in public_names():
        if has_code(obj) and id(obj) not in seen:
            seen.add(id(obj))
            found.append((f"attnkit.{sub}.{name}" if sub else f"attnkit.{name}", obj))
    return found


def test_every_public_class_and_function_shows_an_example():
    missing = [
        qualified
        for qualified, obj in documented_objects()
        if not (EXAMPLE_SECTION.search(own_docstring(obj)) and ">>>" in own_docstring(obj))
    ]
    assert not missing, f"no 'Example:' section with >>> lines: {missing}"


def test_docstring_examples_run(tmp_path, monkeypatch):
    """Every public name's docstring example runs and prints what it shows."""
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    finder = doctest.DocTestFinder(recurse=False)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    examples = 0
    for qualified, obj in documented_objects():
        for test in finder.find(obj, qualified, globs={}):
            examples += len(test.examples)
            runner.run(test)
    result = runner.summarize(verbose=False)
    assert examples > 0
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples failed"


# --------------------------------------------------------------------- examples (slow)


@pytest.mark.slow
def test_example_usage_runs(tmp_path):
    proc = _run([sys.executable, str(EXAMPLES / "example_usage.py")], tmp_path)
    assert "All families built and run." in proc.stdout
    assert "KVCache: T single-token steps == one causal call" in proc.stdout
    assert proc.stdout.rstrip().splitlines()[-1].startswith("All families")
    step_line = next(line for line in proc.stdout.splitlines() if "KVCache: T single" in line)
    assert step_line.rstrip().endswith("True")


@pytest.mark.slow
def test_tutorial_runs_at_small_size(tmp_path):
    figures = tmp_path / "figures"
    proc = _run(
        [sys.executable, str(TUTORIAL), "--small"], tmp_path, ATTNKIT_TUTORIAL_FIGURES=str(figures)
    )
    out = proc.stdout
    assert "small size: True" in out
    assert "equals softmax(QK^T / sqrt(d)) V: True" in out
    assert "feed-forward output of token 0 independent of the others: True" in out
    assert "weights on padded keys: 0.0 | NaN: False" in out
    difference = float(re.search(r"difference from transformers over real tokens: (\S+)", out)[1])
    assert difference < 1e-4, f"attnkit's MiniLM differs from transformers by {difference}"
    for name in TUTORIAL_FIGURES:
        path = figures / name
        assert path.is_file() and path.stat().st_size > 1000, f"{name} missing or empty"


@pytest.mark.slow
def test_notebook_is_the_script():
    import jupytext
    import nbformat

    expected = jupytext.read(TUTORIAL)
    actual = nbformat.read(NOTEBOOK, as_version=4)
    cells = [(c.cell_type, c.source) for c in actual.cells]
    generated = [(c.cell_type, c.source) for c in expected.cells]
    assert cells == generated, (
        "examples/tutorial.ipynb is out of date: run "
        "`jupytext --to ipynb examples/tutorial.py -o examples/tutorial.ipynb`"
    )


@pytest.mark.slow
def test_notebook_executes_at_small_size(tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("ATTNKIT_TUTORIAL_SMALL", "1")
    monkeypatch.setenv("ATTNKIT_TUTORIAL_FIGURES", str(tmp_path / "figures"))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(ROOT)}},
    )
    client.execute()  # raises CellExecutionError naming the failing cell
    outputs = "".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )
    assert "small size: True" in outputs
    images = sum(
        "image/png" in output.get("data", {})
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )
    assert images == len(TUTORIAL_FIGURES)


# --------------------------------------------------------------------- the site (slow)


@pytest.mark.slow
def test_docs_build_strict_and_document_every_public_name(tmp_path):
    site = tmp_path / "site"
    _run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)], tmp_path)
    missing = []
    for sub, name, _ in public_names():
        page = (site / sub / "index.html").read_text(encoding="utf-8")
        anchors = set(re.findall(r'id="(attnkit\.[\w.]+)"', page))
        direct = f"attnkit.{sub}.{name}" in anchors
        # a function shadowed by its own submodule (attnkit.functional.dropout.dropout)
        nested = any(a.startswith(f"attnkit.{sub}.") and a.endswith(f".{name}") for a in anchors)
        in_prose = f"<code>{name}</code>" in page  # constants the page describes in words
        if not (direct or nested or in_prose):
            missing.append(f"attnkit.{sub}.{name}")
    assert not missing, f"public names missing from the API pages: {missing}"


@pytest.mark.slow
@pytest.mark.parametrize("page", RUNNABLE_DOCS_PAGES)
def test_docs_python_blocks_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # blocks that save pictures save them here
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), flags=re.DOTALL)
    assert blocks, f"docs/{page} has no python block"
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, f"docs/{page}", "exec"), namespace)
