"""The agent's pure parts, in-process: kubelet value quoting, claim shapes, settings.

These are the inputs a pod template or a kubelet hands the agent; each
wrong one must be read exactly or refused with a message naming it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.agent.conftest import IMAGE_DIR

if str(IMAGE_DIR) not in sys.path:
    sys.path.insert(0, str(IMAGE_DIR))  # the image runs it as the top-level package `agent`

from agent import claims, config
from agent.holding import move_tree
from agent.webui import a1111_outdirs


def test_kubelet_quoting_is_undone_exactly() -> None:
    # What the kubelet's fieldpath.FormatMap writes: key="%q of the value", sorted.
    text = (
        'app.kubernetes.io/managed-by="sdbroker"\n'
        'note="two\\nlines\\tand \\"quotes\\" \\\\ done"\n'
        'bytes="caf\\xc3\\xa9 \\u00e9 \\U0001f600 \\101"\n'
        'raw="café 😀"\n'
        "broken-line-without-equals\n"
        'bad-escape="\\q"\n'
        'sdbroker.io/user="ann-0123456789abcdef"'
    )
    assert claims.parse_downward(text) == {
        "app.kubernetes.io/managed-by": "sdbroker",
        "note": 'two\nlines\tand "quotes" \\ done',
        "bytes": "café é 😀 A",
        "raw": "café 😀",
        "sdbroker.io/user": "ann-0123456789abcdef",
    }


@pytest.mark.parametrize(
    "slug", ["..", "../etc", "a/b", "Ann", "-ann", "ann-", "a" * 64, "ann_x", "ann x"]
)
def test_a_user_label_that_is_no_slug_is_refused(slug: str) -> None:
    with pytest.raises(claims.ClaimError):
        claims.claim_from({"sdbroker.io/user": slug}, {})


def test_claims_from_both_records() -> None:
    assert claims.claim_from({"sdbroker.io/state": "ready"}, {}) is None
    gameserver = {
        "object_meta": {
            "labels": {"sdbroker.io/user": "u-0123456789abcdef"},
            "annotations": {"sdbroker.io/user": "sub|12345"},
        },
        "status": {"state": "Allocated"},
    }
    assert claims.claim_from_gameserver(gameserver) == claims.Claim(
        "u-0123456789abcdef", "sub|12345"
    )
    assert claims.gameserver_state(gameserver) == "Allocated"
    assert claims.claim_from_gameserver({"object_meta": {}}) is None


def test_every_a1111_output_folder_is_under_the_users_folder() -> None:
    dirs = a1111_outdirs(Path("/outputs/ann"))
    assert dirs["outdir_samples"] == dirs["outdir_grids"] == ""  # they override the rest
    named = {k: v for k, v in dirs.items() if v}
    assert len(named) == 7 and all(v.startswith("/outputs/ann/") for v in named.values())


def test_defaults_and_auto_mode(tmp_path: Path) -> None:
    env = {"SDB_AGENT_PODINFO_DIR": str(tmp_path)}
    assert config.load(env).mode == "standalone"
    (tmp_path / "labels").write_text("")
    loaded = config.load(env)
    assert (loaded.mode, loaded.port, loaded.webui, loaded.webui_url) == (
        "kubernetes",
        7861,
        "a1111",
        "http://127.0.0.1:7860",
    )
    assert (loaded.poll_interval, loaded.health_interval, loaded.health_grace) == (1, 2, 300)
    agones = config.load({**env, "AGONES_SDK_HTTP_PORT": "59358"})
    assert (agones.mode, agones.agones_url) == ("agones", "http://127.0.0.1:59358")


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("SDB_AGENT_MODE", "k8s", "SDB_AGENT_MODE='k8s' is not one of auto, kubernetes"),
        ("SDB_AGENT_WEBUI", "invoke", "SDB_AGENT_WEBUI='invoke' is not one of a1111, comfyui"),
        ("SDB_AGENT_PORT", "70000", "SDB_AGENT_PORT='70000' is not a TCP port"),
        ("AGONES_SDK_HTTP_PORT", "x", "AGONES_SDK_HTTP_PORT='x' is not a TCP port"),
        ("SDB_AGENT_WEBUI_URL", "localhost:7860", "is not an http(s) URL"),
        ("SDB_AGENT_OUTPUTS_ROOT", "outputs", "must be an absolute path"),
        ("SDB_AGENT_POLL_INTERVAL", "soon", "is not a duration (examples: 500ms, 2s, 5m)"),
        ("SDB_AGENT_HEALTH_GRACE", "0s", "must be greater than zero"),
        ("SDB_AGENT_LOG_LEVEL", "loud", "SDB_AGENT_LOG_LEVEL='LOUD' is not one of"),
    ],
)
def test_a_wrong_setting_is_named(name: str, value: str, message: str) -> None:
    with pytest.raises(config.ConfigError, match=None) as err:
        config.load({name: value})
    assert message in str(err.value)


def test_volumes_are_checked_before_start(tmp_path: Path) -> None:
    base = {"SDB_AGENT_PODINFO_DIR": str(tmp_path / "podinfo")}
    with pytest.raises(config.ConfigError, match="mount a downwardAPI volume"):
        config.check_filesystem(config.load({**base, "SDB_AGENT_MODE": "kubernetes"}))
    agones = {**base, "SDB_AGENT_MODE": "agones", "SDB_AGENT_OUTPUTS_ROOT": str(tmp_path / "no")}
    with pytest.raises(config.ConfigError, match="is not a directory"):
        config.check_filesystem(config.load(agones))
    config.check_filesystem(config.load({**agones, "SDB_AGENT_OUTPUTS_ROOT": str(tmp_path)}))
    config.check_filesystem(config.load({**base, "SDB_AGENT_MODE": "standalone"}))


@pytest.mark.parametrize(
    ("text", "seconds"), [("500ms", 0.5), ("2s", 2), ("5m", 300), ("1h", 3600), ("1.5", 1.5)]
)
def test_durations_read_like_the_rest_of_sdbroker(text: str, seconds: float) -> None:
    assert config.parse_duration("X", text) == seconds


def test_held_images_move_in_without_overwriting_and_only_once_settled(tmp_path: Path) -> None:
    holding, folder = tmp_path / "holding", tmp_path / "outputs" / "ann"
    (holding / "txt2img-images" / "2026-01-01").mkdir(parents=True)
    (folder / "txt2img-images" / "2026-01-01").mkdir(parents=True)
    (folder / "txt2img-images" / "2026-01-01" / "00000-7.png").write_bytes(b"older session")
    (holding / "txt2img-images" / "2026-01-01" / "00000-7.png").write_bytes(b"held")
    (holding / "txt2img-images" / "2026-01-01" / "00000-7.txt").write_bytes(b"infotext")
    (holding / "saved.png").write_bytes(b"still being written")

    assert move_tree(holding, folder, settled=3600) == 0  # nothing has settled yet
    assert move_tree(holding, folder, settled=0) == 3
    day = folder / "txt2img-images" / "2026-01-01"
    assert (day / "00000-7.png").read_bytes() == b"older session"  # never overwritten
    assert (day / "00000-7-1.png").read_bytes() == b"held"
    assert (day / "00000-7.txt").read_bytes() == b"infotext"
    assert (folder / "saved.png").exists()
    assert [p for p in holding.rglob("*") if p.is_file()] == []
    assert move_tree(tmp_path / "absent", folder) == 0


def test_links_and_odd_files_in_the_holding_folder_are_never_followed(tmp_path: Path) -> None:
    """The split layout's handoff folder is written by the WebUI: hostile input."""
    outputs, holding = tmp_path / "outputs", tmp_path / "handoff"
    bob, ann = outputs / "bob-1", outputs / "ann-2"
    (bob / "day").mkdir(parents=True)
    (bob / "day" / "secret.png").write_bytes(b"bob's")
    (holding / "ann-2" / "day").mkdir(parents=True)
    (holding / "ann-2" / "day" / "00001.png").write_bytes(b"ann's")
    (holding / "ann-2" / "day" / "steal.png").symlink_to(bob / "day" / "secret.png")
    (holding / "ann-2" / "bob").symlink_to(bob, target_is_directory=True)
    (holding / "early.png").write_bytes(b"before the claim")
    os.mkfifo(holding / "ann-2" / "pipe.png")

    assert move_tree(holding, ann, settled=0, strip="ann-2", mode=0o755) == 2
    # The claimed user's own subfolder lands in their folder itself, not under <slug>/<slug>.
    found = {str(p.relative_to(ann)): p for p in ann.rglob("*")}
    assert set(found) == {"day", "day/00001.png", "early.png"}
    assert found["day/00001.png"].read_bytes() == b"ann's"
    assert not any(p.is_symlink() for p in found.values())
    assert (bob / "day" / "secret.png").read_bytes() == b"bob's"  # untouched, not moved
    assert (holding / "ann-2" / "day" / "steal.png").is_symlink()  # left to the WebUI
    # A user's folder that is a link (planted when WebUIs had the volume) is refused.
    (outputs / "eve-3").symlink_to(bob, target_is_directory=True)
    (holding / "late.png").write_bytes(b"x")
    with pytest.raises(OSError):
        move_tree(holding, outputs / "eve-3", settled=0)
    assert sorted(p.name for p in bob.rglob("*")) == ["day", "secret.png"]


def test_the_split_layout_is_read_from_the_environment(tmp_path: Path) -> None:
    base = {"SDB_AGENT_PODINFO_DIR": str(tmp_path / "podinfo"), "SDB_AGENT_MODE": "agones"}
    assert config.load(base).webui_outputs is None and not config.load(base).split
    split = {
        **base,
        "SDB_AGENT_WEBUI_OUTPUTS": "/outputs",
        "SDB_AGENT_HOLDING_DIR": str(tmp_path / "handoff"),
        "SDB_AGENT_OUTPUTS_ROOT": str(tmp_path),
    }
    loaded = config.load(split)
    assert loaded.split and loaded.webui_outputs == Path("/outputs")
    with pytest.raises(config.ConfigError, match="mount the pod's handoff emptyDir there"):
        config.check_filesystem(loaded)  # the shared folder must be there already
    (tmp_path / "handoff").mkdir()
    config.check_filesystem(loaded)
    with pytest.raises(config.ConfigError, match="must be an absolute path"):
        config.load({**split, "SDB_AGENT_WEBUI_OUTPUTS": "outputs"})
