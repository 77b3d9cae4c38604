#!/usr/bin/env bash
# sdbroker WebUI container entrypoint. What it runs is SDB_ROLE:
#   all (default): a tiny supervisor for two processes in this one container,
#     1. the in-pod agent (python -m agent: probes on :7861, claim -> outputs folder),
#     2. the WebUI: the container's arguments if any, else AUTOMATIC1111 (below).
#     SIGTERM/SIGINT go to both. When either exits, the other is stopped and the
#     container exits with the first one's status (0 after a requested stop), so a
#     dead WebUI or a fatal agent ends the pod instead of leaving half of it running.
#   webui: the WebUI alone (exec). The pods sdbroker builds run it in a container
#     without the outputs volume, beside an `agent` container (README: the pod contract).
#   agent: the agent alone (exec), under its own uid, the only one with the volume.
# tini (PID 1) reaps any grandchildren; this script only forwards and waits.
#
# Environment (defaults in brackets; the agent's SDB_AGENT_* are in README.md):
#   SDB_ROLE [all]  all, webui or agent (above)
#   WEBUI_DIR [/opt/webui]  WEBUI_PYTHON [$WEBUI_DIR/venv/bin/python]
#   WEBUI_PORT [7860]  WEBUI_DATA_DIR [/data]  MODELS_DIR [/models]
#   WEBUI_EXTRA_ARGS []  extra A1111 flags, split on spaces (e.g. "--xformers --medvram")
#   WEBUI_ALLOW_EXTENSIONS [0]  1: users may install extensions from A1111's UI
#   SDB_AGENT_WEBUI_SETTINGS []  a folder shared with the agent: A1111's --styles-file
#     and --ui-config-file go there, so the agent keeps them for the user
#   SDB_AGENT_PYTHON [/opt/agent/venv/bin/python]  SDB_AGENT_HOME [/opt/agent]
#   SDB_STOP_GRACE [20]  seconds from SIGTERM to SIGKILL for the children
#   SDB_PRINT_COMMAND [0]  1: print the command line (the WebUI's; the agent's for
#     SDB_ROLE=agent) and exit (debugging)
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
ROLE=${SDB_ROLE:-all}
ALLOW_EXTENSIONS=${WEBUI_ALLOW_EXTENSIONS:-0}

log() { printf '%s entrypoint %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*"; }
die() { log "fatal: $*"; exit 2; }

case "$ROLE" in all | webui | agent) ;; *) die "SDB_ROLE=$ROLE is not one of all, webui, agent" ;; esac
case "$ALLOW_EXTENSIONS" in 0 | 1) ;; *) die "WEBUI_ALLOW_EXTENSIONS=$ALLOW_EXTENSIONS is not 0 or 1" ;; esac
AGENT_CMD=(env "PYTHONPATH=$AGENT_HOME${PYTHONPATH:+:$PYTHONPATH}" "$AGENT_PYTHON" -m agent)
if [ "$ROLE" = agent ]; then
  if [ "${SDB_PRINT_COMMAND:-0}" = 1 ]; then printf '%q ' "${AGENT_CMD[@]}"; echo; exit 0; fi
  exec "${AGENT_CMD[@]}"
fi

# AUTOMATIC1111 with everything installed at build time (no pip, no git at
# start), checkpoints read from the models volume, settings in a data dir that
# belongs to this pod and so to its one user (pods are single-use).
# Extension installs from the UI: A1111 turns them off whenever it listens
# beyond loopback (--listen here) unless --enable-insecure-extension-access is
# given, and that flag comes only from the admin's switch, WEBUI_ALLOW_EXTENSIONS=1
# in the profile's env: an extension is code from anywhere, run with the WebUI's rights.
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
  for flag in "${extra[@]}"; do
    [ "$flag" != --enable-insecure-extension-access ] \
      || die "--enable-insecure-extension-access in WEBUI_EXTRA_ARGS: set WEBUI_ALLOW_EXTENSIONS=1 instead"
  done
  if [ "$ALLOW_EXTENSIONS" = 1 ]; then WEBUI_CMD+=(--enable-insecure-extension-access); fi
  # The folder the agent shares with us to keep the user's styles and UI defaults
  # (README, agent step 7): A1111 v1.10.1 modules/cmd_args.py --styles-file, --ui-config-file.
  if [ -n "${SDB_AGENT_WEBUI_SETTINGS:-}" ]; then
    WEBUI_CMD+=(--styles-file "$SDB_AGENT_WEBUI_SETTINGS/styles.csv"
      --ui-config-file "$SDB_AGENT_WEBUI_SETTINGS/ui-config.json")
  fi
  WEBUI_CMD+=("${extra[@]}")
  cd "$WEBUI_DIR" || die "cannot enter $WEBUI_DIR (WEBUI_DIR)"
}

if [ $# -gt 0 ]; then
  # Arguments are the admin's own command: the switch cannot reach into it.
  [ "$ALLOW_EXTENSIONS" = 0 ] \
    || die "WEBUI_ALLOW_EXTENSIONS=1 applies to the built-in A1111 command only; put the WebUI's own flag in the container's arguments"
  WEBUI_CMD=("$@")
else
  a1111_command
fi
if [ "${SDB_PRINT_COMMAND:-0}" = 1 ]; then printf '%q ' "${WEBUI_CMD[@]}"; echo; exit 0; fi

if [ "$ROLE" = webui ]; then
  # The agent runs in a container of its own, as another uid in this uid's
  # group: group-writable files and folders let it take what the WebUI saves
  # in the shared handoff folder. No outputs link: the WebUI saves there for good.
  umask 0002
  exec "${WEBUI_CMD[@]}"
fi

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

"${AGENT_CMD[@]}" &
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
