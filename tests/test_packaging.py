"""What ``pip install .`` and the Docker image get: the wheel is built from the Docker build context (the repository
filtered by .dockerignore, links kept as links, as ``COPY`` does) and read back.

Why here and not only in CI: a folder left out of the image or a second top-level package is found by
``pytest`` on any machine, not first by a crash loop in a deployment (the image once lacked ``learning/``).
"""

from __future__ import annotations

import ast
import fnmatch
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def ignored(rel: str, patterns: list[str]) -> bool:
    """Docker's rule for the simple patterns we use: a path is left out if it or a parent matches a pattern."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        bare = pattern.rstrip("/")
        if bare.startswith("**/"):
            if any(fnmatch.fnmatch(part, bare[3:]) for part in parts):
                return True
        elif any(fnmatch.fnmatch(prefix, bare) for prefix in prefixes):
            return True
    return False


def docker_context(dest: Path) -> Path:
    """Copy the tracked and untracked-but-not-ignored files that Docker would send, honouring .dockerignore."""
    patterns = [
        line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip() and line[0] != "#"
    ]
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    for rel in listed:
        src = ROOT / rel
        if ignored(rel, patterns) or not os.path.lexists(src):
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            target.symlink_to(os.readlink(src))
        else:
            shutil.copy2(src, target)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    context = docker_context(tmp_path_factory.mktemp("context"))
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", str(context), "-w", str(out)],
        check=True, capture_output=True,
    )  # fmt: skip
    (built,) = out.glob("tickmatch-*.whl")
    with zipfile.ZipFile(built) as zf:
        yield zf


def package_modules() -> set[str]:
    """Every module file of the package as it is on disk, links followed: ``tickmatch/stream/topics.py`` etc."""
    found = set()
    for directory, _, files in os.walk(ROOT / "tickmatch", followlinks=True):
        for name in files:
            if name.endswith(".py"):
                found.add(str((Path(directory) / name).relative_to(ROOT)))
    return found


def test_the_wheel_has_one_import_root_and_every_module(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"tickmatch"}
    top_level = next(n for n in names if n.endswith(".dist-info/top_level.txt"))
    assert wheel.read(top_level).decode().split() == ["tickmatch"]
    missing = package_modules() - set(names)
    assert not missing, f"modules missing from the wheel (and so from the image): {sorted(missing)}"
    assert {"tickmatch/stream/topics.py", "tickmatch/agents/app.py", "tickmatch/schemas/records.py"} <= set(names)
    entry_points = wheel.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    assert "tickmatch = tickmatch.cli:main" in entry_points


def test_no_shipped_module_imports_a_test_only_dependency_at_import_time(wheel: zipfile.ZipFile) -> None:
    """rustworkx (the exact reference) and friends are test extras: a shipped module may use them only lazily."""
    test_only = {"rustworkx", "pytest", "hypothesis", "jsonschema", "yaml", "matplotlib"}
    offenders = []
    for name in wheel.namelist():
        if not name.endswith(".py"):
            continue
        tree = ast.parse(wheel.read(name))
        for node in tree.body:  # module level only: imports inside functions run when called
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                mods = [node.module or ""]
            else:
                continue
            offenders += [f"{name}: {m}" for m in mods if m.split(".")[0] in test_only]
    assert offenders == []


def test_the_dockerfile_installs_the_package_from_the_whole_context() -> None:
    """No hand-kept list of folders: the image gets what the wheel gets (checked above from the same context)."""
    lines = [line.split() for line in (ROOT / "Dockerfile").read_text().splitlines() if line and line[0] != "#"]
    copies = [words[1:] for words in lines if words and words[0] == "COPY"]
    assert copies == [[".", "/src"]]
    assert any(words[:4] == ["RUN", "pip", "install", "/src"] for words in lines)
    assert lines[-2][0] == "ENTRYPOINT" and "tickmatch" in " ".join(lines[-2])


def test_dockerignore_rule() -> None:
    patterns = ["tests", "**/__pycache__", "*.egg-info", "bench/out"]
    assert ignored("tests/test_x.py", patterns) and ignored("tickmatch/__pycache__/a.pyc", patterns)
    assert ignored("tickmatch.egg-info/PKG-INFO", patterns) and ignored("bench/out/x.json", patterns)
    assert not ignored("tickmatch/stream", patterns) and not ignored("bench/tick.py", patterns)
