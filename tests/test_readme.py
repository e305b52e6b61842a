"""The README's Python example must run as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert blocks, "README has no python example"
    namespace: dict = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)
    assert namespace["logits"].shape == (2, 9, 1000)
    assert namespace["weights"].shape == (2, 8, 128, 128)
    assert namespace["tokens"].shape[0] == 2


def test_readme_model_families_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    namespace: dict = {}
    exec(compile(blocks[1], str(README), "exec"), namespace)
    assert namespace["out"].logits.shape == (2, 5, 65)
    assert namespace["new"].shape == (2, 50)
    assert namespace["loss"].dim() == 0
    assert namespace["logits"].shape == (8, 10)


def test_readme_positions_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    example = next(block for block in blocks if "sliding_window" in block)
    namespace: dict = {}
    exec(compile(example, str(README), "exec"), namespace)
    assert type(namespace["gpt"].layers[0].self_attn).__name__ == "SlidingWindowAttention"


def test_readme_analysis_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    example = next(block for block in blocks if "capture_attention" in block)
    namespace: dict = {}
    exec(compile(example, str(README), "exec"), namespace)
    assert [w.shape for w in namespace["cross"]] == [(2, 4, 5, 7)] * 6
    assert namespace["stats"]["entropy"].shape == (6, 4)
    assert namespace["rollout"].shape == (2, 7, 7)
    assert len(namespace["scores"].names) == 2
    assert namespace["gpt"].layers[0].self_attn.num_heads == 2
    assert (tmp_path / "cross.png").stat().st_size > 0 and (tmp_path / "grid.svg").exists()


def test_readme_explorer_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    example = next(block for block in blocks if "write_attention_explorer(" in block)
    namespace: dict = {}
    exec(compile(example, str(README), "exec"), namespace)
    html = (tmp_path / "explorer.html").read_text()
    assert "läuft" in html and "http://" not in html and "https://" not in html


def test_readme_beyond_the_transformer_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    example = next(block for block in blocks if "GraphAttentionLayer(16" in block)
    namespace: dict = {}
    exec(compile(example, str(README), "exec"), namespace)
    assert namespace["context"].shape == (2, 256)
    assert namespace["weights"][1, 4:].abs().sum() == 0
    assert namespace["nodes"].shape == (3, 32)
