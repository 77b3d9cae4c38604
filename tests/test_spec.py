"""The fleet file: shipped files validate, every mistake is reported at its line.

The broken files under tests/specs/ pin the exact `FILE:LINE: field: message`
lines an admin sees, so a change in wording or in line mapping shows up here.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from broker.cli import main as cli_main
from fleet.durations import parse_duration
from fleet.spec import (
    FleetSpec,
    LocalProfile,
    Profile,
    ScheduleEntry,
    SpecError,
    SpecIssue,
    load_spec,
    parse_spec,
    split_rule,
)

ROOT = Path(__file__).resolve().parents[1]
SPECS = Path(__file__).resolve().parent / "specs"
EXAMPLE = ROOT / "fleet.example.yaml"
LOCAL = ROOT / "fleet.local.yaml"

PORT_CMD = '[webui, "{port}"]'
DURATION_FORMS = "use a number of seconds or a duration like 30s, 15m, 8h, 1h30m, 2d"
NAME_RULE = (
    "must be 1-32 lowercase letters, digits or '-', starting and ending with a letter or digit"
)
MUST_HAVE_PORT = "must contain {port} (the port the WebUI listens on)"

# file -> every line the admin sees, as "LINE: field: message" (the file name is prefixed).
BROKEN: dict[str, list[str]] = {
    "bad_yaml.yaml": [
        "5: syntax: expected <block end>, but found '<block mapping start>' (check the indentation)",
    ],
    "duplicate_key.yaml": ['6: syntax: duplicate key "max"'],
    "tab_indent.yaml": [
        "3: syntax: found character '\\t' that cannot start any token "
        "(indent with spaces, not tabs)",
    ],
    "empty.yaml": ["1: file: is empty; expected a mapping with backend: and profiles:"],
    "top_list.yaml": ["1: file: must be a mapping with backend: and profiles:, not a list"],
    "empty_profiles.yaml": ["2: profiles: must not be empty"],
    "profile_not_mapping.yaml": [
        "2: 1: unknown field",
        "4: profiles[0]: must be a mapping, got 'default'",
        "5: profiles[1]: must be a mapping, got nothing",
        "8: profiles[2].local.env.7: key must be a string",
    ],
    "unknown_key.yaml": [
        "2: idle_timout: unknown field (did you mean 'idle_timeout'?)",
        "6: profiles[0].replicas: unknown field",
        "9: profiles[0].local.workdir: unknown field",
    ],
    "wrong_type.yaml": [
        "2: outputs: must be a string, got a list",
        "5: profiles[0].display_name: must be a string, got 42",
        "6: profiles[0].max: must be a whole number, got 'four'",
        "7: profiles[0].min: must be a whole number, got 1.5",
        "9: profiles[0].local.command: must be a list, got 'webui --port {port}'",
        "10: profiles[0].local.gpus: must be a list, got 0",
        "13: profiles[0].local.env.DEBUG: must be a string, got true",
    ],
    "min_gt_max.yaml": ["4: profiles[0].min: min (3) is greater than max (2)"],
    "buffer_gt_max.yaml": ["4: profiles[0].buffer: buffer (5) is greater than max (4)"],
    "unknown_backend.yaml": [
        "1: backend: must be 'local', 'kubernetes' or 'agones', got 'docker'",
    ],
    "duplicate_profile.yaml": [
        "11: profiles[2].name: duplicate profile name 'default' (first at profiles[0])",
    ],
    "missing_port.yaml": [
        "6: profiles[0].local.command[2]: unknown placeholder {prot}; use {port}, {pod} or {home}",
        f"6: profiles[0].local.command: {MUST_HAVE_PORT}",
        "10: profiles[1].local.command: must not be empty",
    ],
    "bad_duration.yaml": [
        f"2: idle_timeout: '15 minutes' is not a duration; {DURATION_FORMS}",
        "3: max_session: must be greater than 0, got '0s'",
        f"7: profiles[0].start_timeout: '30m10' is not a duration; {DURATION_FORMS}",
        "10: profiles[0].local.stop_grace: must be a duration of 0 or more, got -5",
    ],
    "bad_max_session.yaml": [
        f"2: max_session: 'forever' is not a duration; {DURATION_FORMS}",
        f"6: profiles[0].max_session: '-1h' is not a duration; {DURATION_FORMS}",
        "11: profiles[1].max_session: must be greater than 0, got 0",
    ],
    "missing_local_block.yaml": [
        "3: profiles[0].local: required by backend local",
        "7: profiles[1].local: required by backend local",
    ],
    "foreign_block.yaml": [
        "7: profiles[0].local: not used by backend kubernetes",
        "9: profiles[1].kubernetes: required by backend kubernetes",
        "11: profiles[1].agones: not used by backend kubernetes",
    ],
    "missing_required.yaml": [
        "3: profiles[0].max: missing required field",
        "4: profiles[0].kubernetes.image: missing required field",
    ],
    "bad_cron.yaml": [
        "7: profiles[0].schedule[0].cron: invalid cron '0 8 * *': "
        "wrong number of fields; got 4, expected 5",
        "9: profiles[0].schedule[1].cron: invalid cron '61 8 * * *': error validating "
        "expression '61': the last value (61) is higher than the maximum value (59)",
        "11: profiles[0].schedule[2]: give at least one of buffer, min, max",
        "12: profiles[0].schedule[3].cron: invalid cron '0 7 * * 1-5': "
        "write the day of week as names, like mon-fri",
    ],
    "schedule_bounds.yaml": [
        "9: profiles[0].schedule[0].min: min (5) is greater than the profile's max (4)",
        "11: profiles[0].schedule[1].max: min (2) is greater than max (1)",
        "11: profiles[0].schedule[1].max: buffer (3) is greater than max (1)",
        "13: profiles[0].schedule[2].buffer: buffer (6) is greater than max (2)",
        "14: profiles[0].schedule[2].min: min (3) is greater than max (2)",
    ],
    "bad_timezone.yaml": [
        "2: timezone: unknown time zone 'Mars/Olympus_Mons' "
        "(use an IANA name like UTC or Europe/Berlin)",
    ],
    "bad_profile_name.yaml": [
        f"3: profiles[0].name: 'GPU_Large' {NAME_RULE}",
        f"7: profiles[1].name: '-edge-' {NAME_RULE}",
        f"11: profiles[2].name: 'a-name-that-is-far-too-long-for-a-label' {NAME_RULE}",
    ],
    "percent_buffer.yaml": [
        "4: profiles[0].buffer: percentage must be between 1% and 100%, got 150%",
        "9: profiles[1].buffer: percentage must be between 1% and 100%, got 0%",
        "14: profiles[2].buffer: must be a whole number or a percentage like 20%, got 'lots'",
        "19: profiles[3].buffer: must be at least 0",
    ],
    "gpus_fewer_than_max.yaml": [
        "7: profiles[0].local.gpus: max 4 but only 2 GPU slots",
        "15: profiles[1].local.gpus[1]: GPU 3 is listed twice",
    ],
    "bad_activity.yaml": [
        "5: profiles[0].probe: http probe path must start with / (like http:/healthz), "
        "got 'healthz'",
        "7: profiles[0].activity.ignore[0]: unknown method 'FETCH' "
        "(use GET, POST, PUT, PATCH, DELETE, WS, *)",
        "7: profiles[0].activity.ignore[1]: path pattern 'sdapi/v1/progress' must start with /",
        "8: profiles[0].activity.count[0]: 'GET /a b' must be PATTERN or METHOD PATTERN, "
        "like 'POST /sdapi/*'",
        "8: profiles[0].activity.count[1]: path pattern '/file=[ab' has unbalanced [ ]",
    ],
    "kubernetes_bad.yaml": [
        "5: profiles[0].probe: must be a1111, comfyui or http:/some/path, got 'comfy'",
        "7: profiles[0].kubernetes.image: must not be empty",
        "8: profiles[0].kubernetes.namespace: 'SD_Team' is not a DNS-1123 label "
        "(1-63 lowercase letters, digits or '-')",
        "9: profiles[0].kubernetes.port: must be at most 65535, got 70000",
        "10: profiles[0].kubernetes.gpus: must be at least 0, got -1",
        "12: profiles[0].kubernetes.resources.limit: unknown field (did you mean 'limits'?)",
        "13: profiles[0].kubernetes.resources.requests.memory: "
        "'lots' is not a Kubernetes quantity like 500m, 2 or 8Gi",
        "15: profiles[0].kubernetes.volumes.models.path: 'models' must be a path starting with /",
        "16: profiles[0].kubernetes.volumes.output: unknown field (did you mean 'outputs'?)",
        "17: profiles[0].kubernetes.readiness_path: 'ping' must be a path starting with /",
    ],
    "agones_bad.yaml": [
        "5: profiles[0].agones.fleet: missing required field",
        "10: profiles[1].agones.fleet: 'SD.Fleet' is not a DNS-1123 label "
        "(1-63 lowercase letters, digits or '-')",
        "11: profiles[1].agones.tolerations: must be a list, got a mapping",
    ],
    # One file, mistakes at every level: all of them come back together, in line order.
    "many_errors.yaml": [
        f"2: idle_timeout: 'soon' is not a duration; {DURATION_FORMS}",
        "3: timezone: unknown time zone 'Nowhere/City' (use an IANA name like UTC or Europe/Berlin)",
        "4: extra: unknown field",
        "7: profiles[0].min: min (5) is greater than max (3)",
        f"10: profiles[0].local.command: {MUST_HAVE_PORT}",
        "11: profiles[1].name: duplicate profile name 'default' (first at profiles[0])",
        "11: profiles[1].local: required by backend local",
        "13: profiles[1].kubernetes: not used by backend local",
    ],
}


def _spec(body: str, backend: str = "local") -> FleetSpec:
    return parse_spec(f"backend: {backend}\n{body}", "t.yaml")


def _example_as(backend: str) -> str:
    """fleet.example.yaml switched to `backend`: its block uncommented, the local block gone."""
    if backend == "local":
        return EXAMPLE.read_text()
    out: list[str] = []
    mode = ""
    for line in EXAMPLE.read_text().splitlines():
        if line.startswith("backend: local"):
            line = line.replace("local", backend, 1)
        if line.startswith("    local:"):
            mode = "drop"
            continue
        if mode == "drop" and line.startswith("      "):
            continue
        mode = "" if mode == "drop" else mode
        if line.startswith(f"    #{backend}:"):
            mode = "uncomment"
        elif mode == "uncomment" and not line.startswith("    #  "):
            mode = ""
        out.append(line[:4] + line[5:] if mode == "uncomment" else line)
    return "\n".join(out) + "\n"


# --- the shipped files ---


def test_local_fleet_is_the_demo() -> None:
    spec = load_spec(LOCAL)
    assert spec.backend == "local"
    assert spec.idle_timeout == 900.0
    assert spec.outputs == "./data/outputs"
    (profile,) = spec.profiles
    assert (profile.name, profile.display_name, profile.probe) == ("default", "Local GPU", "a1111")
    assert (profile.min, profile.buffer, profile.max) == (0, 2, 4)
    assert profile.local is not None
    assert profile.local.gpus == []
    assert profile.local.argv(7861, "p1", "/h") == [
        "python", "webui-image/stub/webui_stub.py", "--port", "7861", "--pod-id", "p1",
        "--styles-file", "/h/styles.csv", "--ui-config-file", "/h/ui-config.json",
    ]  # fmt: skip
    assert (ROOT / profile.local.command[1]).exists()


@pytest.mark.parametrize("backend", ["local", "kubernetes", "agones"])
def test_example_validates_for_each_backend(backend: str) -> None:
    spec = parse_spec(_example_as(backend), f"example-{backend}.yaml")
    assert spec.backend == backend
    profile = spec.profile("default")
    assert getattr(profile, backend) is not None
    assert [b for b in ("local", "kubernetes", "agones") if getattr(profile, b)] == [backend]


def test_example_shows_its_defaults() -> None:
    """The example is the README's reference: its values are the models' defaults."""
    profile = load_spec(EXAMPLE).profiles[0]
    bare = Profile(name="default", max=4, local=LocalProfile(command=["{port}"]))
    for key in ("display_name", "gpu", "min", "buffer", "probe", "start_timeout", "max_session"):
        assert getattr(profile, key) == getattr(bare, key), key
    assert load_spec(EXAMPLE).max_session == FleetSpec.model_fields["max_session"].default
    spec = parse_spec(_example_as("kubernetes"))
    shown = spec.profiles[0].kubernetes
    assert shown is not None
    default = type(shown)(image=shown.image)
    assert shown == default


def _field_names(model: type[BaseModel], seen: set[type[BaseModel]]) -> set[str]:
    names: set[str] = set()
    if model in seen:
        return names
    seen.add(model)
    for name, field in model.model_fields.items():
        names.add(name)
        for inner in re.findall(r"[A-Z]\w+", repr(field.annotation)):
            candidate = getattr(sys.modules["fleet.spec.models"], inner, None)
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                names |= _field_names(candidate, seen)
    return names


def test_example_mentions_every_key() -> None:
    text = EXAMPLE.read_text()
    missing = [n for n in sorted(_field_names(FleetSpec, set())) if f"{n}:" not in text]
    assert missing == []


# --- durations ---


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30), ("15m", 900), ("8h", 28800), ("1h30m", 5400), ("2d", 172800),
        ("1d2h3m4s", 93784), ("1.5h", 5400), (" 15M ", 900), ("90", 90), ("0", 0),
        (90, 90), (1.5, 1.5), (0, 0),
    ],
)  # fmt: skip
def test_parse_duration(text: str | int | float, seconds: float) -> None:
    assert parse_duration(text) == seconds
    assert isinstance(parse_duration(text), float)


@pytest.mark.parametrize("bad", ["15 minutes", "", "m", "1h1h", "30m1h", "-5m", "1w", "5 s m"])
def test_parse_duration_names_the_accepted_forms(bad: str) -> None:
    with pytest.raises(ValueError, match=re.escape(DURATION_FORMS)):
        parse_duration(bad)


@pytest.mark.parametrize("bad", [True, None, [1], -1, float("nan"), float("inf")])
def test_parse_duration_rejects_non_durations(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)  # type: ignore[arg-type]


# --- broken files: every line the admin sees ---


def test_every_broken_file_has_expectations() -> None:
    assert sorted(p.name for p in SPECS.glob("*.yaml")) == sorted(BROKEN)
    assert len(BROKEN) >= 15


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_file_reports_every_mistake_at_its_line(name: str) -> None:
    path = SPECS / name
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    expected = [f"{path}:{line}" for line in BROKEN[name]]
    assert [str(issue) for issue in caught.value.issues] == expected
    assert str(caught.value) == "\n".join(expected)
    assert "Traceback" not in str(caught.value)


def test_parse_spec_names_the_file_it_was_given() -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec("backend: local\nprofiles: 3\n")
    assert caught.value.issues == [
        SpecIssue("<fleet.yaml>", 2, "profiles", "must be a list, got 3"),
    ]


def test_unreadable_file() -> None:
    missing = SPECS / "no-such-file.yaml"
    with pytest.raises(SpecError) as caught:
        load_spec(missing)
    assert str(caught.value) == f"{missing}:1: file: cannot read: No such file or directory"


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("backend: local # caf\xe9\n".encode("latin-1"))
    with pytest.raises(SpecError, match=r":1: file: is not UTF-8 text"):
        load_spec(path)


def test_an_escaped_lone_surrogate_is_a_located_mistake() -> None:
    """YAML's "\\ud800" escape loads as half a character, which validation cannot encode."""
    text = 'backend: local\nprofiles:\n  - name: "ok\\ud800"\n    max: 2\n'
    with pytest.raises(SpecError) as caught:
        parse_spec(text, "fleet.yaml")
    assert [str(i) for i in caught.value.issues] == [
        "fleet.yaml:3: profiles[0].name: holds '\\ud800', half of a surrogate pair: not a character"
    ]


def test_source_text_is_kept_but_not_dumped_nor_settable() -> None:
    text = LOCAL.read_text()
    spec = parse_spec(text)
    assert spec.source_text == text
    assert "source_text" not in spec.model_dump()
    assert "source_text" not in spec.model_dump_json()
    with pytest.raises(SpecError, match=r":1: source_text: unknown field"):
        parse_spec("source_text: x\n" + text)


def test_max_session_is_finite_by_default_and_per_profile() -> None:
    """A busy WebUI is never reclaimed as idle and its user controls that answer, so a
    session needs a cap nobody forgot to set (issue 19): 12 h unless the file says."""
    text = (
        "backend: local\nprofiles:\n"
        f"  - name: t4\n    max: 2\n    local:\n      command: {PORT_CMD}\n"
        f"  - name: a100\n    max: 1\n    max_session: 2h\n    local:\n      command: {PORT_CMD}\n"
    )
    spec = parse_spec(text)
    assert spec.max_session == 12 * 3600
    assert (spec.session_limit("t4"), spec.session_limit("a100")) == (12 * 3600, 2 * 3600)
    assert spec.session_limit("removed-by-a-reload") == 12 * 3600
    never = parse_spec(text.replace("backend: local\n", "backend: local\nmax_session: null\n"))
    assert (never.session_limit("t4"), never.session_limit("a100")) == (None, 2 * 3600)


def test_spec_lookup_by_profile_name() -> None:
    spec = load_spec(LOCAL)
    assert spec.profile("default") is spec.profiles[0]
    with pytest.raises(KeyError, match="no profile 'big'"):
        spec.profile("big")


def test_rules_hold_when_models_are_built_in_code() -> None:
    profile = Profile(name="a", max=2, local=LocalProfile(command=["{port}"]))
    with pytest.raises(ValidationError) as caught:
        FleetSpec(backend="kubernetes", profiles=[profile, profile])
    assert [(e["loc"], e["msg"]) for e in caught.value.errors()] == [
        (("profiles", 0, "local"), "not used by backend kubernetes"),
        (("profiles", 0, "kubernetes"), "required by backend kubernetes"),
        (("profiles", 1, "name"), "duplicate profile name 'a' (first at profiles[0])"),
        (("profiles", 1, "local"), "not used by backend kubernetes"),
        (("profiles", 1, "kubernetes"), "required by backend kubernetes"),
    ]
    with pytest.raises(ValidationError, match=r"min \(3\) is greater than max \(2\)"):
        Profile(name="a", max=2, min=3)


# --- sizing ---


@pytest.mark.parametrize(
    ("min_", "buffer", "max_", "claimed", "buffer_for", "target"),
    [
        (0, 2, 4, 0, 2, 2),
        (0, 2, 4, 1, 2, 3),
        (0, 2, 4, 3, 2, 4),  # capped at max
        (0, 2, 4, 6, 2, 4),  # more claimed than max (max was lowered): stay at max
        (3, 0, 5, 0, 0, 3),  # min holds idle pods
        (3, 0, 5, 4, 0, 4),
        (1, "20%", 10, 0, 0, 1),
        (1, "20%", 10, 1, 1, 2),  # a percentage rounds up
        (1, "20%", 10, 5, 1, 6),
        (1, "20%", 10, 6, 2, 8),
        (1, "20%", 10, 10, 2, 10),
        (0, "100%", 8, 3, 3, 6),
    ],
)
def test_buffer_for_and_target(
    min_: int, buffer: int | str, max_: int, claimed: int, buffer_for: int, target: int
) -> None:
    profile = Profile(name="p", min=min_, buffer=buffer, max=max_)
    assert profile.buffer_for(claimed) == buffer_for
    assert profile.target(claimed) == target


def test_percentage_buffer_is_normalised() -> None:
    spec = _spec(
        f"profiles:\n  - {{name: p, max: 4, buffer: ' 25 %', local: {{command: {PORT_CMD}}}}}\n"
    )
    assert spec.profiles[0].buffer == "25%"


def test_schedule_entry_overrides_and_trigger() -> None:
    spec = _spec(
        "timezone: Europe/Berlin\n"
        "profiles:\n"
        "  - name: p\n    max: 4\n"
        "    schedule: [{cron: '0 8 * * mon-fri', buffer: 3, max: 6}]\n"
        f"    local: {{command: {PORT_CMD}, gpus: [0, 1, 2, 3, 4, 5]}}\n"
    )
    profile = spec.profiles[0]
    (entry,) = profile.schedule
    sized = profile.with_schedule(entry)
    assert (sized.min, sized.buffer, sized.max) == (0, 3, 6)
    assert (profile.min, profile.buffer, profile.max) == (0, 1, 4)
    assert str(entry.trigger(spec.timezone).timezone) == "Europe/Berlin"
    with pytest.raises(ValidationError, match="give at least one of buffer, min, max"):
        ScheduleEntry(cron="0 8 * * *")


def test_schedule_max_needs_gpu_slots_too() -> None:
    with pytest.raises(SpecError) as caught:
        _spec(
            "profiles:\n  - name: p\n    max: 2\n"
            "    schedule: [{cron: '0 8 * * *', max: 3}]\n"
            f"    local: {{command: {PORT_CMD}, gpus: [0, 1]}}\n"
        )
    assert str(caught.value) == "t.yaml:6: profiles[0].local.gpus: max 3 but only 2 GPU slots"


def test_local_argv_and_numbers_as_text() -> None:
    local = LocalProfile(command=["webui", "--port", "{port}", "--id", "{pod}", "--steps", 20])  # type: ignore[list-item]
    assert local.argv(9000, "pod-7") == [
        "webui",
        "--port",
        "9000",
        "--id",
        "pod-7",
        "--steps",
        "20",
    ]


def test_activity_rules_split() -> None:
    assert split_rule("POST /sdapi/*") == ("POST", "/sdapi/*")
    assert split_rule("/internal/*") == ("*", "/internal/*")


def test_kubernetes_defaults() -> None:
    spec = _spec(
        "profiles:\n  - {name: p, max: 1, kubernetes: {image: 'sd:1', resources: {limits: {cpu: 4}}}}\n",
        "kubernetes",
    )
    kube = spec.profiles[0].kubernetes
    assert kube is not None
    assert (kube.namespace, kube.port, kube.gpus, kube.readiness_path) == (
        "default",
        7860,
        1,
        "/internal/ping",
    )
    assert kube.resources == {"limits": {"cpu": "4"}}
    assert kube.volumes.models is not None and kube.volumes.outputs is not None
    assert (kube.volumes.models.claim, kube.volumes.models.path, kube.volumes.models.read_only) == (
        "sd-models",
        "/models",
        True,
    )
    assert (
        kube.volumes.outputs.claim,
        kube.volumes.outputs.path,
        kube.volumes.outputs.read_only,
    ) == ("sd-outputs", "/outputs", False)
    no_models = _spec(
        "profiles:\n  - {name: p, max: 1, kubernetes: {image: x, volumes: {models: null}}}\n",
        "kubernetes",
    )
    assert no_models.profiles[0].kubernetes is not None
    assert no_models.profiles[0].kubernetes.volumes.models is None


# --- the command line ---


def test_cli_fleet_validate(capsys: pytest.CaptureFixture[str]) -> None:
    bad = SPECS / "min_gt_max.yaml"
    assert cli_main(["fleet", "validate", str(LOCAL)]) == 0
    assert cli_main(["fleet", "validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [f"{bad}:{line}" for line in BROKEN["min_gt_max.yaml"]]


def test_cli_fleet_validate_exits_2_without_traceback() -> None:
    bad = SPECS / "many_errors.yaml"
    result = subprocess.run(
        [sys.executable, "-m", "broker", "fleet", "validate", str(bad)],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"{bad}:{line}" for line in BROKEN["many_errors.yaml"]]
