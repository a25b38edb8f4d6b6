"""Shared setup for the kernel tests: the installed "recipe" kernel and a private archive."""

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Every kernel these tests start writes to one throwaway archive.
ARCHIVE = Path(tempfile.mkdtemp(prefix="recipe-kernel-tests-")) / "runs"
os.environ["RECIPE_ARCHIVE"] = str(ARCHIVE)
# Each test's kernel starts cold: a warm spare (test_spare turns them on for its own kernels)
# would share the two cores with the tests that follow.
os.environ["RECIPE_SPARE"] = "0"
# `recipe exec` uses the runtime the test script installed into the venv.
os.environ.setdefault("RECIPE_RUNTIME", str(ROOT / ".venv" / "share" / "recipe" / "runtime"))


def recipe_binary() -> Path:
    """The `recipe` binary the test script built (honours CARGO_TARGET_DIR)."""
    target = os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target"))
    return Path(target) / "release" / "recipe"


def recipe(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(recipe_binary()), *args], capture_output=True, text=True, **kwargs
    )


@pytest.fixture(scope="session")
def archive() -> Path:
    return ARCHIVE
