"""The stub's "GPU": generations run one at a time from a FIFO queue.

The bookkeeping copies AUTOMATIC1111 (``modules/shared_state.py`` and
``modules/progress.py``) so that anything probing a pod (the reaper, the
broker's busy check, the browser's progress bar) sees what it would see on a
real GPU: ``job_count`` is non-zero only while a job runs, and
``/internal/pending-tasks`` lists the tasks still *waiting* (A1111 drops a task
from that list the moment it starts).
"""

from __future__ import annotations

import asyncio
import json
import random
import string
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from stub_render import decode_image, encode_png, image_b64, render, save_sequenced

MODEL_TITLE = "stub-v1-5-cpu.safetensors [5tub5tub]"
MODEL_HASH = "5tub5tub"
MAX_SIDE = 1024
MAX_STEPS = 150
MAX_IMAGES = 16


def create_task_id(kind: str) -> str:
    """Same shape as A1111's ``create_task_id``: ``task(<kind>-XXXXXXX)``."""
    suffix = "".join(random.choices(string.ascii_uppercase + string.digits, k=7))
    return f"task({kind}-{suffix})"


def default_options(outdir: Path) -> dict[str, Any]:
    """A small, realistic subset of A1111's ``shared.opts`` (the keys tools actually read)."""
    return {
        "samples_save": True,
        "samples_format": "png",
        "outdir_samples": "",
        "outdir_txt2img_samples": str(outdir / "txt2img-images"),
        "outdir_img2img_samples": str(outdir / "img2img-images"),
        "outdir_grids": "",
        "sd_model_checkpoint": MODEL_TITLE,
        "sd_checkpoint_hash": MODEL_HASH,
        "sd_vae": "Automatic",
        "CLIP_stop_at_last_layers": 1,
        "live_previews_enable": True,
        "show_progress_every_n_steps": 10,
        "live_preview_refresh_period": 1000,
    }


class RequestError(ValueError):
    """A generation request the API should reject with 422, like FastAPI validation."""


@dataclass
class GenRequest:
    """The fields of ``StableDiffusionProcessingTxt2Img`` the stub honours."""

    kind: str
    prompt: str = ""
    negative_prompt: str = ""
    width: int = 256
    height: int = 256
    steps: int = 20
    seed: int = -1
    batch_size: int = 1
    n_iter: int = 1
    cfg_scale: float = 7.0
    sampler_name: str = "Euler a"
    save_images: bool = True
    denoising_strength: float = 0.75
    init_image: Image.Image | None = None
    parameters: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, kind: str, body: Any) -> GenRequest:
        """Validate an API body; sizes are clamped so a typo cannot eat the CPU."""
        if not isinstance(body, dict):
            raise RequestError("body must be a JSON object")
        req = cls(kind=kind)
        try:
            req.prompt = str(body.get("prompt") or "")
            req.negative_prompt = str(body.get("negative_prompt") or "")
            req.width = _clamp_side(body.get("width", req.width))
            req.height = _clamp_side(body.get("height", req.height))
            req.steps = max(1, min(MAX_STEPS, int(body.get("steps", req.steps))))
            req.seed = int(body.get("seed", -1))
            req.batch_size = max(1, min(MAX_IMAGES, int(body.get("batch_size", 1))))
            req.n_iter = max(1, min(MAX_IMAGES, int(body.get("n_iter", 1))))
            req.cfg_scale = float(body.get("cfg_scale", req.cfg_scale))
            req.sampler_name = str(body.get("sampler_name") or req.sampler_name)
            req.save_images = bool(body.get("save_images", True))
            req.denoising_strength = float(body.get("denoising_strength", 0.75))
        except (TypeError, ValueError) as exc:
            raise RequestError(f"invalid field: {exc}") from exc
        images = body.get("init_images") if kind == "img2img" else None
        if images:
            try:
                req.init_image = decode_image(str(images[0]) if isinstance(images, list) else "")
            except ValueError as exc:
                raise RequestError("Invalid encoded image") from exc
        req.parameters = {**body, **{k: getattr(req, k) for k in _ECHOED}}
        req.parameters.pop("init_images", None)
        return req


_ECHOED = ("prompt", "negative_prompt", "width", "height", "steps", "seed", "batch_size")
_ECHOED += ("n_iter", "cfg_scale", "sampler_name", "save_images")


def _clamp_side(value: Any) -> int:
    return max(64, min(MAX_SIDE, int(value) // 8 * 8))


@dataclass
class GenResult:
    """What one job produced; ``info`` is A1111's info dict plus ``saved_paths``."""

    images: list[bytes]
    info: dict[str, Any]


@dataclass
class Update:
    """A step of a running job, pushed to streaming listeners (Gradio queues)."""

    kind: str  # "start" | "step" | "done"
    step: int = 0
    steps: int = 0


@dataclass
class Job:
    id_task: str
    label: str
    request: GenRequest
    done: asyncio.Future[GenResult]
    updates: asyncio.Queue[Update] = field(default_factory=asyncio.Queue)


@dataclass
class State:
    """Mirror of A1111's ``shared.state``; ``as_dict`` is its ``dict()``."""

    job: str = ""
    job_count: int = 0
    job_no: int = 0
    job_timestamp: str = "0"
    sampling_step: int = 0
    sampling_steps: int = 0
    interrupted: bool = False
    skipped: bool = False
    stopping_generation: bool = False
    textinfo: str | None = None
    time_start: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        keys = ("skipped", "interrupted", "stopping_generation", "job", "job_count")
        keys += ("job_timestamp", "job_no", "sampling_step", "sampling_steps")
        return {k: getattr(self, k) for k in keys}


class Engine:
    """One worker drains the queue, so queued work is visible exactly as on a GPU."""

    def __init__(self, pod_id: str, delay: float, outdir: Path) -> None:
        self.pod_id = pod_id
        self.delay = delay
        self.outdir = outdir
        self.options = default_options(outdir)
        self.state = State()
        self.current: Job | None = None
        self.pending: OrderedDict[str, Job] = OrderedDict()
        self.finished: deque[str] = deque(maxlen=16)
        self._queue: asyncio.Queue[Job] = asyncio.Queue()

    def submit(self, request: GenRequest, id_task: str | None = None, label: str = "") -> Job:
        """Queue a job; the caller awaits ``job.done`` or reads ``job.updates``."""
        id_task = id_task or create_task_id(request.kind)
        future = asyncio.get_running_loop().create_future()
        job = Job(id_task, label or f"scripts_{request.kind}", request, future)
        self.pending[id_task] = job
        self._queue.put_nowait(job)
        return job

    def rank(self, job: Job) -> int:
        """Jobs ahead of this one, counting the running job, for Gradio's estimation."""
        ahead = list(self.pending).index(job.id_task) if job.id_task in self.pending else 0
        return ahead + (self.current is not None)

    async def run(self) -> None:
        """The worker loop; runs for the life of the app."""
        while True:
            job = await self._queue.get()
            self.pending.pop(job.id_task, None)
            self.current = job
            try:
                job.done.set_result(await self._process(job))
            except Exception as exc:  # a broken job must not kill the worker
                if not job.done.done():
                    job.done.set_exception(exc)
            finally:
                self.current = None
                self.finished.append(job.id_task)
                self.state = State(job_timestamp=self.state.job_timestamp)
                job.updates.put_nowait(Update("done"))

    async def _process(self, job: Job) -> GenResult:
        req = job.request
        seed = req.seed if req.seed >= 0 else random.randrange(2**32)
        stamp = time.strftime("%Y%m%d%H%M%S")
        self.state = State(job=job.label, job_count=req.n_iter, job_timestamp=stamp)
        self.state.time_start = time.time()
        self.state.sampling_steps = req.steps
        job.updates.put_nowait(Update("start", 0, req.steps))
        tick = self.delay * req.batch_size / req.steps
        pngs: list[bytes] = []
        seeds: list[int] = []
        paths: list[str] = []
        for it in range(req.n_iter):
            self.state.job_no, self.state.sampling_step, self.state.skipped = it, 0, False
            if self.state.interrupted:
                break
            for step in range(1, req.steps + 1):
                await asyncio.sleep(tick)
                self.state.sampling_step = step
                job.updates.put_nowait(Update("step", step, req.steps))
                if self.state.interrupted or self.state.skipped:
                    break
            batch_seeds = [seed + it * req.batch_size + i for i in range(req.batch_size)]
            for s in batch_seeds:
                png, path = await asyncio.to_thread(self._make_image, req, s)
                pngs.append(png)
                seeds.append(s)
                paths.extend([path] if path else [])
        self.state.job_no = req.n_iter
        return GenResult(pngs, self._info(req, seeds, paths, stamp))

    def _make_image(self, req: GenRequest, seed: int) -> tuple[bytes, str | None]:
        """CPU work, run in a thread: draw, encode, and save like ``images.save_image``."""
        img = render(req.prompt, seed, req.width, req.height)
        if req.init_image is not None:
            init = req.init_image.resize(img.size)
            img = Image.blend(init, img, max(0.0, min(1.0, req.denoising_strength)))
        data = encode_png(img, self._infotext(req, seed))
        if not (req.save_images and self.options.get("samples_save", True)):
            return data, None
        return data, str(save_sequenced(self.sample_dir(req.kind).resolve(), seed, data))

    def sample_dir(self, kind: str) -> Path:
        """``outdir_samples`` wins, then the per-mode option, then ``--outdir`` (A1111's order)."""
        opts = self.options
        chosen = opts.get("outdir_samples") or opts.get(f"outdir_{kind}_samples")
        return Path(chosen) if chosen else self.outdir

    def _infotext(self, req: GenRequest, seed: int) -> str:
        neg = f"\nNegative prompt: {req.negative_prompt}" if req.negative_prompt else ""
        return (
            f"{req.prompt}{neg}\nSteps: {req.steps}, Sampler: {req.sampler_name}, "
            f"CFG scale: {req.cfg_scale:g}, Seed: {seed}, Size: {req.width}x{req.height}, "
            f"Model hash: {MODEL_HASH}, Model: {MODEL_TITLE.split('.')[0]}, Version: stub"
        )

    def _info(self, req: GenRequest, seeds: list[int], paths: list[str], stamp: str) -> dict:
        n = len(seeds)
        return {
            "prompt": req.prompt,
            "all_prompts": [req.prompt] * n,
            "negative_prompt": req.negative_prompt,
            "all_negative_prompts": [req.negative_prompt] * n,
            "seed": seeds[0] if seeds else req.seed,
            "all_seeds": seeds,
            "subseed": -1,
            "all_subseeds": [-1] * n,
            "subseed_strength": 0,
            "width": req.width,
            "height": req.height,
            "sampler_name": req.sampler_name,
            "cfg_scale": req.cfg_scale,
            "steps": req.steps,
            "batch_size": req.batch_size,
            "restore_faces": False,
            "sd_model_name": MODEL_TITLE.split(".")[0],
            "sd_model_hash": MODEL_HASH,
            "denoising_strength": req.denoising_strength if req.kind == "img2img" else None,
            "extra_generation_params": {},
            "index_of_first_image": 0,
            "infotexts": [self._infotext(req, s) for s in seeds],
            "styles": [],
            "job_timestamp": stamp,
            "clip_skip": self.options.get("CLIP_stop_at_last_layers", 1),
            "is_using_inpainting_conditioning": False,
            "version": "stub",
            "saved_paths": paths,
            "pod_id": self.pod_id,
        }

    def interrupt(self) -> None:
        self.state.interrupted = True

    def skip(self) -> None:
        self.state.skipped = True

    def sdapi_progress(self) -> dict[str, Any]:
        """``GET /sdapi/v1/progress``, with A1111's arithmetic (its 0.01 floor included)."""
        st = self.state
        current = self.current.id_task if self.current else None
        base = {"state": st.as_dict(), "current_image": None, "textinfo": st.textinfo}
        if st.job_count == 0:
            return {"progress": 0, "eta_relative": 0, **base, "current_task": current}
        progress = 0.01 + st.job_no / st.job_count
        if st.sampling_steps > 0:
            progress += 1 / st.job_count * st.sampling_step / st.sampling_steps
        elapsed = time.time() - st.time_start
        eta_relative = elapsed / progress - elapsed
        progress = min(progress, 1)
        return {"progress": progress, "eta_relative": eta_relative, **base, "current_task": current}

    def internal_progress(self, id_task: str | None, id_live_preview: int) -> dict[str, Any]:
        """``POST /internal/progress``: per-task view used by the browser's progress bar."""
        active = self.current is not None and self.current.id_task == id_task
        queued = id_task in self.pending
        completed = id_task in self.finished
        reply: dict[str, Any] = {"active": active, "queued": queued, "completed": completed}
        if not active:
            textinfo = "Waiting..."
            if queued:
                order = list(self.pending)
                textinfo = f"In queue: {order.index(id_task) + 1}/{len(order)}"
            nulls = {"progress": None, "eta": None, "live_preview": None}
            return {**reply, **nulls, "id_live_preview": -1, "textinfo": textinfo}
        st = self.state
        progress = 0.0
        if st.job_count > 0:
            progress += st.job_no / st.job_count
            if st.sampling_steps > 0:
                progress += 1 / st.job_count * st.sampling_step / st.sampling_steps
        progress = min(progress, 1.0)
        elapsed = time.time() - st.time_start
        eta = elapsed / progress - elapsed if progress > 0 else None
        return {
            **reply,
            "progress": progress,
            "eta": eta,
            "live_preview": None,
            "id_live_preview": id_live_preview,
            "textinfo": st.textinfo,
        }

    def pending_tasks(self) -> dict[str, Any]:
        """``GET /internal/pending-tasks``: waiting tasks only, as in A1111."""
        return {"size": len(self.pending), "tasks": list(self.pending)}


def result_json(result: GenResult, parameters: dict[str, Any]) -> dict[str, Any]:
    """The ``TextToImageResponse`` body: images, parameters, info as a JSON string."""
    images = [image_b64(png) for png in result.images]
    return {"images": images, "parameters": parameters, "info": json.dumps(result.info)}
