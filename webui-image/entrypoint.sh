#!/usr/bin/env bash
# sdbroker WebUI container entrypoint: a tiny supervisor for two processes,
#   1. the in-pod agent (python -m agent: probes on :7861, claim -> outputs folder),
#   2. the WebUI: the container's arguments if any, else AUTOMATIC1111 (below).
# SIGTERM/SIGINT go to both. When either exits, the other is stopped and the
# container exits with the first one's status (0 after a requested stop), so a
# dead WebUI or a fatal agent ends the pod instead of leaving half of it running.
# tini (PID 1) reaps any grandchildren; this script only forwards and waits.
#
# Environment (defaults in brackets; the agent's SDB_AGENT_* are in README.md):
#   WEBUI_DIR [/opt/webui]  WEBUI_PYTHON [$WEBUI_DIR/venv/bin/python]
#   WEBUI_PORT [7860]  WEBUI_DATA_DIR [/data]  MODELS_DIR [/models]
#   WEBUI_EXTRA_ARGS []  extra A1111 flags, split on spaces (e.g. "--xformers --medvram")
#   SDB_AGENT_PYTHON [/opt/agent/venv/bin/python]  SDB_AGENT_HOME [/opt/agent]
#   SDB_STOP_GRACE [20]  seconds from SIGTERM to SIGKILL for the children
#   SDB_PRINT_COMMAND [0]  1: print the WebUI command line and exit (debugging)
set -uo pipefail

WEBUI_DIR=${WEBUI_DIR:-/opt/webui}
WEBUI_PYTHON=${WEBUI_PYTHON:-$WEBUI_DIR/venv/bin/python}
WEBUI_PORT=${WEBUI_PORT:-7860}
WEBUI_DATA_DIR=${WEBUI_DATA_DIR:-/data}
MODELS_DIR=${MODELS_DIR:-/models}
WEBUI_EXTRA_ARGS=${WEBUI_EXTRA_ARGS:-}
AGENT_PYTHON=${SDB_AGENT_PYTHON:-/opt/agent/venv/bin/python}
AGENT_HOME=${SDB_AGENT_HOME:-/opt/agent}
STOP_GRACE=${SDB_STOP_GRACE:-20}

log() { printf '%s entrypoint %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*"; }
die() { log "fatal: $*"; exit 2; }

# AUTOMATIC1111 with everything installed at build time (no pip, no git at
# start), checkpoints read from the models volume, settings in a data dir that
# belongs to this pod and so to its one user (pods are single-use).
a1111_command() {
  local ckpt="$MODELS_DIR/Stable-diffusion" pair sub flag extra
  [ -d "$ckpt" ] || die "$ckpt is missing: mount the models volume at $MODELS_DIR (MODELS_DIR) with a Stable-diffusion/ folder"
  [ -n "$(find -L "$ckpt" -maxdepth 3 -type f \( -name '*.safetensors' -o -name '*.ckpt' \) -print -quit 2>/dev/null)" ] \
    || die "no checkpoint (*.safetensors, *.ckpt) under $ckpt: this pod could never load a model"
  WEBUI_CMD=("$WEBUI_PYTHON" launch.py --skip-prepare-environment --listen --port "$WEBUI_PORT" --api
    --data-dir "$WEBUI_DATA_DIR" --ckpt-dir "$ckpt" --no-download-sd-model --skip-version-check
    --disable-console-progressbars)
  # Optional model folders: passed only when present, since A1111 would try to
  # create a missing one and the models volume is read-only.
  for pair in VAE:--vae-dir Lora:--lora-dir embeddings:--embeddings-dir hypernetworks:--hypernetwork-dir; do
    sub=${pair%%:*} flag=${pair#*:}
    if [ -d "$MODELS_DIR/$sub" ]; then WEBUI_CMD+=("$flag" "$MODELS_DIR/$sub"); fi
  done
  read -r -a extra <<<"$WEBUI_EXTRA_ARGS"
  WEBUI_CMD+=("${extra[@]}")
  cd "$WEBUI_DIR" || die "cannot enter $WEBUI_DIR (WEBUI_DIR)"
}

if [ $# -gt 0 ]; then WEBUI_CMD=("$@"); else a1111_command; fi
if [ "${SDB_PRINT_COMMAND:-0}" = 1 ]; then printf '%q ' "${WEBUI_CMD[@]}"; echo; exit 0; fi

# ComfyUI writes through the agent's outputs link (see README); make it, aimed
# at the holding folder, before ComfyUI could create a real folder there.
if [ "${SDB_AGENT_WEBUI:-a1111}" = comfyui ]; then
  link=${SDB_AGENT_OUTPUTS_LINK:-/tmp/sdbroker/outputs}
  holding=${SDB_AGENT_HOLDING_DIR:-/tmp/sdbroker/unclaimed}
  mkdir -p "$holding" "$(dirname "$link")" || die "cannot create $holding"
  [ -L "$link" ] || ln -s "$holding" "$link" || die "cannot create the outputs link $link"
fi

stopping=0 agent_pid="" webui_pid=""
on_signal() {
  stopping=1
  log "stop requested: SIGTERM to the agent and the WebUI"
  kill -TERM "$agent_pid" "$webui_pid" 2>/dev/null
}
trap on_signal TERM INT

PYTHONPATH="$AGENT_HOME${PYTHONPATH:+:$PYTHONPATH}" "$AGENT_PYTHON" -m agent &
agent_pid=$!
"${WEBUI_CMD[@]}" &
webui_pid=$!
log "started agent (pid $agent_pid) and WebUI (pid $webui_pid): ${WEBUI_CMD[*]}"

# wait -n returns when a child exits, or early when a trapped signal arrives.
wait -n "$agent_pid" "$webui_pid"
status=$?
if [ "$stopping" = 0 ]; then
  if ! kill -0 "$webui_pid" 2>/dev/null; then first="WebUI"; else first="agent"; fi
  log "$first exited with status $status: stopping the other and the container"
  kill -TERM "$agent_pid" "$webui_pid" 2>/dev/null
fi

deadline=$((SECONDS + STOP_GRACE))
while kill -0 "$agent_pid" 2>/dev/null || kill -0 "$webui_pid" 2>/dev/null; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    log "still running ${STOP_GRACE}s after SIGTERM (SDB_STOP_GRACE): SIGKILL"
    kill -KILL "$agent_pid" "$webui_pid" 2>/dev/null
    break
  fi
  sleep 0.1
done
wait 2>/dev/null
if [ "$stopping" = 1 ]; then exit 0; fi
exit "$status"
