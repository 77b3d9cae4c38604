"""The agent's pure parts, in-process: kubelet value quoting, claim shapes, settings.

These are the inputs a pod template or a kubelet hands the agent; each
wrong one must be read exactly or refused with a message naming it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.agent.conftest import IMAGE_DIR

if str(IMAGE_DIR) not in sys.path:
    sys.path.insert(0, str(IMAGE_DIR))  # the image runs it as the top-level package `agent`

from agent import claims, config  # noqa: E402
from agent.holding import move_tree  # noqa: E402
from agent.webui import a1111_outdirs  # noqa: E402


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
