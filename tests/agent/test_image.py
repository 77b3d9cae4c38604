"""Static checks of the WebUI image, since no Docker engine runs in CI.

They pin what a review would look for and a rebuild could silently lose: a
pinned base and WebUI commit, a non-root user, a health check, no `latest`,
the ports the kubernetes backend probes, and an agent that stays small enough
to run on the image's Python 3.10 with aiohttp as its only dependency.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys

from tests.agent.conftest import ENTRYPOINT, IMAGE_DIR

DOCKERFILE = (IMAGE_DIR / "Dockerfile").read_text()
AGENT_DIR = IMAGE_DIR / "agent"
A1111_V1_10_1 = "82a973c04367123ae98bd9abdf80d9eda9b910e2"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE)
    result = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def arg(name: str) -> str:
    match = re.search(rf"^ARG {name}=(.+)$", DOCKERFILE, re.MULTILINE)
    assert match, f"ARG {name} missing"
    return match[1].strip().strip('"')


def test_the_base_image_is_a_pinned_cuda_runtime() -> None:
    (base,) = [rest for word, rest in instructions() if word == "FROM"]
    assert base == "${CUDA_IMAGE}"
    image = arg("CUDA_IMAGE")
    assert re.fullmatch(
        r"nvidia/cuda:12\.\d+\.\d+-(cudnn\d?-)?runtime-ubuntu22\.04(@sha256:[0-9a-f]{64})?", image
    )


def test_the_webui_is_a1111_at_a_release_commit() -> None:
    assert arg("A1111_TAG") == "v1.10.1"
    assert arg("A1111_COMMIT") == A1111_V1_10_1
    assert 'test "$(git -C /opt/webui rev-parse HEAD)" = "${A1111_COMMIT}"' in DOCKERFILE
    assert "torch==2.1.2 torchvision==0.16.2" in arg("TORCH_COMMAND")


def test_nothing_floats() -> None:
    """The agent's venv comes from its lock (tests/test_lock.py checks the lock itself)."""
    assert "latest" not in DOCKERFILE.lower()
    installs = [rest for word, rest in instructions() if word == "RUN" and "pip install" in rest]
    assert installs
    for rest in installs:
        for args in re.findall(r"pip install ([^&]+)", rest):
            assert args.split() == ["--require-hashes", "-r", "/opt/agent/requirements.txt"], rest
    assert "COPY --chown=1000:1000 agent-requirements.txt /opt/agent/requirements.txt" in DOCKERFILE


def test_it_runs_as_uid_1000_never_root() -> None:
    users = [rest for word, rest in instructions() if word == "USER"]
    assert users and users[-1] in ("1000", "1000:1000")
    assert "useradd --uid 1000" in DOCKERFILE


def test_health_check_ports_and_entrypoint() -> None:
    words = dict(instructions())
    assert "7861/ready" in words["HEALTHCHECK"] and "--start-period=" in words["HEALTHCHECK"]
    assert words["EXPOSE"].split() == ["7860", "7861"]
    assert words["ENTRYPOINT"] == '["/usr/bin/tini", "--", "/opt/agent/entrypoint.sh"]'
    assert "COPY --chown=1000:1000 agent/ /opt/agent/agent/" in DOCKERFILE
    assert "HF_HUB_OFFLINE=1" in DOCKERFILE  # no downloads at start


def test_the_entrypoint_is_valid_bash() -> None:
    subprocess.run(["bash", "-n", str(ENTRYPOINT)], check=True)
    assert ENTRYPOINT.stat().st_mode & 0o111, "entrypoint.sh must be executable"


def test_the_agent_needs_only_the_stdlib_and_aiohttp() -> None:
    """It runs inside the WebUI image, where sdbroker is not installed."""
    for path in AGENT_DIR.glob("*.py"):
        source = path.read_text()
        # the image's Python is 3.10: no syntax from 3.11+
        tree = ast.parse(source, filename=str(path), feature_version=(3, 10))
        assert len(source.splitlines()) < 400, f"{path.name} is over 400 lines"
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = {(node.module or "").split(".")[0]}
            else:
                continue
            foreign = {r for r in roots if r not in sys.stdlib_module_names and r != "aiohttp"}
            assert not foreign, f"{path.name} imports {foreign}"


def test_no_python_3_11_only_apis_in_the_agent() -> None:
    banned = (
        "asyncio.timeout(",
        "TaskGroup",
        "ExceptionGroup",
        "tomllib",
        "StrEnum",
        "datetime.UTC",
    )
    for path in AGENT_DIR.glob("*.py"):
        text = path.read_text()
        assert not [b for b in banned if b in text], path.name
