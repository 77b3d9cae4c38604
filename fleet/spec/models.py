"""The fleet file's shape: one pydantic model per block, strict and closed.

Rules comparing fields are validators that raise errors located at the
offending field (see `fail_at`), so pydantic collects them with type errors
and the admin reads every mistake at its line (`load.py`, `report.py`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ..durations import Duration
from .groups import GroupRules
from .types import (
    PLACEHOLDER,
    PLACEHOLDERS,
    AbsPath,
    ActivityRule,
    Buffer,
    Count,
    Cron,
    DnsLabel,
    Port,
    PositiveCount,
    PositiveDuration,
    ProbeKind,
    ProfileName,
    Resources,
    Text,
    TimeZoneName,
    fail_at,
)
from .yamlfile import Loc

BACKENDS = ("local", "kubernetes", "agones")
#: reclaim_when_gone of a profile that names none, per probe kind: only ComfyUI's page
#: holds a connection for its whole life (its frontend opens `/ws` at load and reconnects
#: when it drops: ComfyUI web/scripts/api.js, ComfyApi.#createSocket). Gradio 3 (the
#: pinned A1111) keeps nothing open while idle, and an `http:` WebUI is unknown, so there
#: a closed tab cannot be told from an idle one: off.
GONE_BY_DEFAULT: dict[str, str] = {"comfyui": "2m"}
DEFAULT_MAX_SESSION = 12 * 3600.0  # seconds; the file's max_session when it names none
GroupName = Annotated[Text, Field(min_length=1)]  # as the identity provider spells it


class _Model(BaseModel):
    """Strict and closed: a typo in the admin's file is an error, not a silent default."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ActivityRules(_Model):
    """Which proxied requests are user activity: `ignore` never counts (a WebUI's own
    polling), `count` always does, even where an ignore rule also matches."""

    ignore: list[ActivityRule] = []
    count: list[ActivityRule] = []


class ScheduleEntry(_Model):
    """From each firing of `cron` on (in the spec's timezone), size the profile differently."""

    cron: Cron
    buffer: Buffer | None = None
    min: Count | None = None
    max: PositiveCount | None = None

    @model_validator(mode="after")
    def _overrides_something(self) -> ScheduleEntry:
        if self.buffer is None and self.min is None and self.max is None:
            raise ValueError("give at least one of buffer, min, max")
        return self

    def trigger(self, timezone: str) -> CronTrigger:
        """The APScheduler trigger for this entry, in the spec's `timezone`."""
        return CronTrigger.from_crontab(self.cron, timezone=ZoneInfo(timezone))


class LocalProfile(_Model):
    """WebUI processes on this host; `{port}`, `{pod}` and `{home}` (the pod's own
    private, writable folder) are filled in per pod. `isolation` (README, docs/security.md):
    `auto` keeps each WebUI from the broker and its neighbours as far as this machine
    allows, `strict` refuses to start one unless all of it holds, `none` is for WebUIs
    whose code is trusted."""

    command: list[Text] = Field(min_length=1)
    gpus: list[Count] = []
    env: dict[str, Text] = {}
    cwd: str | None = None
    stop_grace: Duration = 10.0
    isolation: Literal["auto", "strict", "none"] = "auto"

    @field_validator("command")
    @classmethod
    def _placeholders(cls, command: list[str]) -> list[str]:
        problems: list[tuple[Loc, str]] = []
        for index, arg in enumerate(command):
            for name in PLACEHOLDER.findall(arg):
                if name not in PLACEHOLDERS:
                    problems.append(
                        (
                            (index,),
                            f"unknown placeholder {{{name}}}; use {{port}}, {{pod}} or {{home}}",
                        )
                    )
        if not any("{port}" in arg for arg in command):
            problems.append(((), "must contain {port} (the port the WebUI listens on)"))
        fail_at(problems)
        return command

    @field_validator("gpus")
    @classmethod
    def _unique_gpus(cls, gpus: list[int]) -> list[int]:
        fail_at([((i,), f"GPU {g} is listed twice") for i, g in enumerate(gpus) if g in gpus[:i]])
        return gpus

    def argv(self, port: int, pod: str, home: str = "") -> list[str]:
        """The command with the placeholders filled in (other braces are left alone)."""
        return [
            a.replace("{port}", str(port)).replace("{pod}", pod).replace("{home}", home)
            for a in self.command
        ]


class _Volume(_Model):
    claim: DnsLabel
    path: AbsPath
    read_only: bool = False


class ModelsVolume(_Volume):
    """Shared, read-only model weights."""

    claim: DnsLabel = "sd-models"
    path: AbsPath = "/models"
    read_only: bool = True


class OutputsVolume(_Volume):
    """Shared outputs: the images outlive the pod."""

    claim: DnsLabel = "sd-outputs"
    path: AbsPath = "/outputs"


class KubernetesVolumes(_Model):
    """PersistentVolumeClaims mounted in every pod; null leaves one out."""

    models: ModelsVolume | None = Field(default_factory=ModelsVolume)
    outputs: OutputsVolume | None = Field(default_factory=OutputsVolume)


class PodSettings(_Model):
    """What a WebUI pod looks like; shared by the kubernetes and agones backends."""

    namespace: DnsLabel = "default"
    command: list[Text] | None = None
    args: list[Text] | None = None
    port: Port = 7860
    env: dict[str, Text] = {}
    resources: Resources = {}
    gpus: Count = 1
    node_selector: dict[str, Text] = {}
    tolerations: list[dict[str, Any]] = []
    priority_class: str | None = None
    service_account: str | None = None
    volumes: KubernetesVolumes = Field(default_factory=KubernetesVolumes)
    readiness_path: AbsPath = "/internal/ping"
    readiness_port: Port | None = (
        None  # the in-pod agent's port (7861 in webui-image); null: the WebUI's
    )
    pod_template: dict[str, Any] = {}


class KubernetesProfile(PodSettings):
    """Plain pods built from this template (and `pod_template`, merged last)."""

    image: str = Field(min_length=1)


class AgonesProfile(PodSettings):
    """An existing Agones Fleet; the pod fields are used by `fleet render`."""

    fleet: DnsLabel
    image: str | None = None


class Profile(_Model):
    """One kind of WebUI pod a user can get, and how many to keep warm."""

    name: ProfileName
    display_name: str = ""
    gpu: str | None = None
    # max comes before min and buffer so their validators can compare against it.
    max: PositiveCount
    min: Count = 0
    buffer: Buffer = 1
    probe: ProbeKind = "a1111"
    start_timeout: PositiveDuration = 600.0
    # A hard cap on one session of this profile, busy or not (null: the file's max_session).
    max_session: PositiveDuration | None = None
    # End a session this long after its user's last tab closed, unless it generates (null:
    # never; only the idle timeout). Default on only where the WebUI itself keeps a
    # connection open for the page's life (GONE_BY_DEFAULT; docs/operations.md, Idle reclaim).
    reclaim_when_gone: PositiveDuration | None = None
    # Only members of one of these groups (the identity's groups) may use it; []: everyone.
    allowed_groups: list[GroupName] = []
    # The broker adds its bar (one <script> tag, broker/proxy/overlay.py) to the WebUI's
    # own page. Off unless asked: it rewrites HTML the WebUI made, which an admin turns
    # on knowing their WebUI (a CSP without 'self', an extension that owns the corner).
    overlay: bool = False
    # The person's WebUI settings (A1111's config.json, styles.csv, ui-config.json;
    # ComfyUI's settings and workflows) follow them from pod to pod, kept in a hidden
    # folder of their outputs (fleet/webui_settings.py). Default: on for the kinds
    # that have them (a1111, comfyui), off for http:.
    keep_settings: bool = True
    activity: ActivityRules | None = None
    schedule: list[ScheduleEntry] = []
    local: LocalProfile | None = None
    kubernetes: KubernetesProfile | None = None
    agones: AgonesProfile | None = None

    @model_validator(mode="before")
    @classmethod
    def _gone_default_by_kind(cls, data: Any) -> Any:
        if isinstance(data, dict) and "reclaim_when_gone" not in data:
            default = GONE_BY_DEFAULT.get(str(data.get("probe", "a1111")))
            if default is not None:
                return {**data, "reclaim_when_gone": default}
        return data

    @model_validator(mode="before")
    @classmethod
    def _keep_settings_by_kind(cls, data: Any) -> Any:
        if isinstance(data, dict) and "keep_settings" not in data:
            kind = str(data.get("probe", "a1111")).partition(":")[0]
            return {**data, "keep_settings": kind in ("a1111", "comfyui")}
        return data

    @model_validator(mode="before")
    @classmethod
    def _display_name_defaults_to_name(cls, data: Any) -> Any:
        if (
            isinstance(data, dict)
            and "display_name" not in data
            and isinstance(data.get("name"), str)
        ):
            return {**data, "display_name": data["name"]}
        return data

    @field_validator("min")
    @classmethod
    def _min_at_most_max(cls, value: int, info: ValidationInfo) -> int:
        top = info.data.get("max")
        if top is not None and value > top:
            raise ValueError(f"min ({value}) is greater than max ({top})")
        return value

    @field_validator("buffer")
    @classmethod
    def _buffer_at_most_max(cls, value: int | str, info: ValidationInfo) -> int | str:
        top = info.data.get("max")
        if isinstance(value, int) and top is not None and value > top:
            raise ValueError(f"buffer ({value}) is greater than max ({top})")
        return value

    @field_validator("schedule")
    @classmethod
    def _schedule_within_bounds(
        cls, entries: list[ScheduleEntry], info: ValidationInfo
    ) -> list[ScheduleEntry]:
        problems: list[tuple[Loc, str]] = []
        for i, entry in enumerate(entries):
            low = entry.min if entry.min is not None else info.data.get("min")
            top = entry.max if entry.max is not None else info.data.get("max")
            buffer = entry.buffer if entry.buffer is not None else info.data.get("buffer")
            top_name = "max" if entry.max is not None else "the profile's max"
            if low is not None and top is not None and low > top:
                at = "min" if entry.min is not None else "max"
                problems.append(((i, at), f"min ({low}) is greater than {top_name} ({top})"))
            if isinstance(buffer, int) and top is not None and buffer > top:
                at = "buffer" if entry.buffer is not None else "max"
                problems.append(((i, at), f"buffer ({buffer}) is greater than {top_name} ({top})"))
        fail_at(problems)
        return entries

    @field_validator("local")
    @classmethod
    def _enough_gpu_slots(cls, local: LocalProfile | None, info: ValidationInfo) -> Any:
        tops = [info.data.get("max")] + [e.max for e in info.data.get("schedule", [])]
        top = max((t for t in tops if t is not None), default=0)
        if local is not None and local.gpus and top > len(local.gpus):
            slots = f"{len(local.gpus)} GPU slot{'s' if len(local.gpus) > 1 else ''}"
            fail_at([(("gpus",), f"max {top} but only {slots}")])
        return local

    def allows(self, groups: Iterable[str]) -> bool:
        """May someone in `groups` use this profile? (no allowed_groups: anyone may)"""
        return not self.allowed_groups or not set(self.allowed_groups).isdisjoint(groups)

    def buffer_for(self, claimed: int) -> int:
        """Warm pods wanted on top of `claimed`; a percentage is of `claimed`, rounded up."""
        if isinstance(self.buffer, int):
            return self.buffer
        return -(-claimed * int(self.buffer.rstrip("%")) // 100)

    def target(self, claimed: int) -> int:
        """Pods wanted in total (claimed + warm), never below min nor above max."""
        return max(self.min, min(self.max, claimed + self.buffer_for(claimed)))

    def with_schedule(self, entry: ScheduleEntry) -> Profile:
        """This profile sized by a schedule entry (its overrides replace min/max/buffer)."""
        sizes = {"min": entry.min, "max": entry.max, "buffer": entry.buffer}
        return self.model_copy(update={k: v for k, v in sizes.items() if v is not None})


def fleet_problems(backend: str | None, profiles: list[tuple[int, Any]]) -> list[tuple[Loc, str]]:
    """Rules across profiles. Works on validated Profiles and on raw mappings alike,
    so they are still checked when some other part of the file is broken."""
    problems: list[tuple[Loc, str]] = []
    first: dict[str, int] = {}
    for i, item in profiles:
        if not isinstance(item, dict | Profile):
            continue  # already reported as "must be a mapping"
        get = item.get if isinstance(item, dict) else lambda key, p=item: getattr(p, key, None)
        name = get("name")
        if isinstance(name, str):
            if name in first:
                problems.append(
                    (
                        ("profiles", i, "name"),
                        f"duplicate profile name '{name}' (first at profiles[{first[name]}])",
                    )
                )
            first.setdefault(name, i)
        if backend is None:
            continue
        for block in BACKENDS:
            if block == backend and get(block) is None:
                problems.append((("profiles", i, block), f"required by backend {backend}"))
            elif block != backend and get(block) is not None:
                problems.append((("profiles", i, block), f"not used by backend {backend}"))
    return problems


class FleetSpec(_Model):
    """The whole fleet file. `source_text` keeps the original text for diff/apply."""

    backend: Literal["local", "kubernetes", "agones"]
    idle_timeout: PositiveDuration = 900.0
    # Finite by default: a busy WebUI is never reclaimed as idle, and its user controls
    # that answer, so without a cap one person could hold a GPU forever (issue 19).
    max_session: PositiveDuration | None = DEFAULT_MAX_SESSION
    # A pod whose node stopped answering is replaced after this long (Kubernetes itself
    # waits 40-50 s to call the node lost, then 300 s more before evicting its pods).
    node_lost_grace: PositiveDuration = 60.0
    outputs: str = "./data/outputs"
    timezone: TimeZoneName = "UTC"
    profiles: list[Profile] = Field(min_length=1)
    # Limits on groups of people, by group name (fleet/spec/groups.py); {}: none.
    groups: dict[GroupName, GroupRules] = {}
    _source_text: str = PrivateAttr(default="")

    @model_validator(mode="after")
    def _profiles_fit_backend(self) -> FleetSpec:
        fail_at(fleet_problems(self.backend, list(enumerate(self.profiles))))
        return self

    @property
    def source_text(self) -> str:
        """The YAML this spec was parsed from ("" when built in code)."""
        return self._source_text

    def session_limit(self, profile: str) -> float | None:
        """Seconds a session of `profile` may last: its own max_session, else the file's
        (None: no limit; a profile removed by a reload keeps the file's)."""
        for p in self.profiles:
            if p.name == profile and p.max_session is not None:
                return p.max_session
        return self.max_session

    def gone_after(self, profile: str) -> float | None:
        """Seconds after its user's last tab closed that a session of `profile` ends
        (None: never for that reason; a profile removed by a reload: never)."""
        for p in self.profiles:
            if p.name == profile:
                return p.reclaim_when_gone
        return None

    def overlay(self, profile: str) -> bool:
        """Does a page of `profile` get the broker's bar? (a profile removed by a reload: no)"""
        return any(p.name == profile and p.overlay for p in self.profiles)

    def profile(self, name: str) -> Profile:
        """The profile called `name`; KeyError names the ones that exist."""
        for profile in self.profiles:
            if profile.name == name:
                return profile
        raise KeyError(f"no profile '{name}' (have: {', '.join(p.name for p in self.profiles)})")
