"""PUT /spec: the fleet file over HTTP, as `sdbroker fleet diff|apply` does it with kubectl exec.

The body is the YAML itself. It is validated exactly as the CLI validates it
(fleet.specstore.check: schema, then no backend change while running); a bad
file is a 422 whose `issues` name FILE:LINE and the field. `dry_run=true`
answers the changes and the text diff without storing anything; otherwise
the spec is stored and every broker swaps it in (fleet.specstore.store).
"""

from __future__ import annotations

from dataclasses import asdict

from aiohttp import web
from pydantic import BaseModel, Field

from fleet import SpecError, specstore

from ..admin.models import TokenView
from ..appkeys import REDIS, STORE

#: A fleet file of hundreds of profiles is tens of KB; more is a mistake or an attack.
MAX_SPEC_BYTES = 512 * 1024
FILENAME = "body"


class SpecIssueView(BaseModel):
    file: str
    line: int
    field: str
    message: str


class SpecRefused(Exception):
    """The body is no spec the fleet can run: answered 422 with every issue."""

    def __init__(self, issues: list[SpecIssueView]) -> None:
        super().__init__("; ".join(f"{i.file}:{i.line}: {i.field}: {i.message}" for i in issues))
        self.issues = issues


class SpecResult(BaseModel):
    applied: bool = Field(description="false for a dry run or when nothing changed")
    sha: str = Field(description="of the text sent")
    running_sha: str | None = Field(description="of the spec running before")
    changes: list[str] = Field(description="what it changes for people and pods, one line each")
    diff: str = Field(description="unified diff of the running text against the text sent")
    brokers_heard: int | None = Field(description="brokers that heard of the new spec (applied)")


def _dry_run(request: web.Request) -> bool:
    return request.query.get("dry_run", "").lower() in ("1", "true", "yes")


async def put_spec(request: web.Request, token: TokenView) -> SpecResult:
    raw = await request.content.read(MAX_SPEC_BYTES + 1)
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecRefused([SpecIssueView(file=FILENAME, line=1, field="file",
                                         message=f"is over {MAX_SPEC_BYTES} bytes")])  # fmt: skip
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise SpecRefused([SpecIssueView(file=FILENAME, line=1, field="file",
                                         message="is not UTF-8 text")]) from None  # fmt: skip
    redis = request.app[REDIS]
    stored = await specstore.read(redis)
    running = None
    if stored is not None:
        try:
            running = specstore.check(stored.text, None, "<running spec>")
        except SpecError:
            running = None  # an invalid stored spec: anything valid may replace it
    try:
        new = specstore.check(text, running, FILENAME)
    except SpecError as exc:
        raise SpecRefused([SpecIssueView(**asdict(i)) for i in exc.issues]) from None
    digest = specstore.sha(text)
    same = stored is not None and stored.sha == digest
    result = SpecResult(
        applied=False, sha=digest, running_sha=stored.sha if stored else None,
        changes=[] if same else specstore.changes(running, new),
        diff=specstore.text_diff(stored.text, text, f"running ({stored.sha})", FILENAME)
        if stored is not None else "",
        brokers_heard=None,
    )  # fmt: skip
    if same or _dry_run(request):
        return result
    by = f"token:{token.name}"
    heard = await specstore.store(redis, new, source="apply", by=by)
    await request.app[STORE].audit(action="spec_apply", by=by, detail=digest)
    return result.model_copy(update={"applied": True, "brokers_heard": heard})
