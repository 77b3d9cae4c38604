// sdbroker's bar in the WebUI's own page (broker/proxy/overlay.py adds the tag; broker/bar.py
// serves this file and its data). It lives in a shadow root, so the WebUI's CSS cannot reach
// inside and its own styles reach nothing outside; the host carries inline !important styles,
// so a page rule on every element (`* { display: none }`) cannot hide it either. It holds the
// presence stream while the page is open (broker/presence.py): the person has a tab.
// Nothing secret is in it: the WebUI's scripts share this page and can read it.
(() => {
  "use strict";
  if (window.__sdbOverlay) return;  // once per page, even if the tag came twice
  window.__sdbOverlay = true;
  const HOME = "/_broker/", DATA = "/_broker/overlay.json", PRESENCE = "/_broker/presence";
  const BANNER = 600;  // seconds: the last 10 minutes of max_session show a banner
  const words = (s) => {
    s = Math.max(0, Math.round(s));
    const h = Math.floor(s / 3600), m = Math.floor(s % 3600 / 60), r = s % 60;
    return h ? `${h} h ${m} min` : m ? `${m} min` : `${r} s`;
  };

  const host = document.createElement("sdb-overlay");
  host.id = "sdb-overlay";
  host.style.cssText = "all: initial !important; display: block !important; position: fixed !important;" +
    " right: 8px !important; bottom: 8px !important; z-index: 2147483647 !important;" +
    " visibility: visible !important; opacity: 1 !important; pointer-events: auto !important;";
  const root = host.attachShadow({mode: "open"});
  root.innerHTML = `<style>
    :host { all: initial; }
    .bar { font: 12px/1.4 system-ui, sans-serif; color: #111; background: rgba(255,255,255,.94);
           border: 1px solid #999; border-radius: 6px; padding: 4px 8px; display: flex; gap: 8px;
           align-items: center; box-shadow: 0 1px 4px rgba(0,0,0,.3); max-width: 60vw; }
    .banner { background: #fde68a; border-color: #b45309; font-weight: 600; }
    a { color: #1d4ed8; }
    [hidden] { display: none; }
  </style>
  <div class="bar" part="bar" role="status">
    <span id="user"></span><span id="idle"></span><span id="session"></span>
    <a id="home" href="${HOME}">Your WebUI: stop, images, log out</a>
  </div>`;
  const $ = (id) => root.getElementById(id);
  const place = () => {
    const top = document.documentElement;
    if (!top) return;
    if (host.parentNode !== top) top.appendChild(host);
    // A page that hides its own root would hide the bar with it: show the root then.
    if (getComputedStyle(top).display === "none") top.style.setProperty("display", "block", "important");
  };
  place();
  new MutationObserver(place).observe(document.documentElement, {childList: true});

  let state = null, at = Date.now();
  const show = () => {
    if (!state) return;
    const gone = (Date.now() - at) / 1000;
    $("user").textContent = state.user;
    if (!state.running) {
      $("idle").textContent = "no WebUI running";
      $("session").textContent = "";
      return;
    }
    $("idle").textContent = state.generating ? "generating" :
      state.idle_left === null ? "" : `idle: ${words(state.idle_left - gone)} left`;
    const left = state.session_left === null ? null : state.session_left - gone;
    $("session").textContent = left === null ? "" :
      left <= BANNER ? `Your session ends in ${words(left)}: save your work` : `session: ${words(left)} left`;
    root.querySelector(".bar").classList.toggle("banner", left !== null && left <= BANNER);
  };
  const refresh = async () => {
    try {
      const answer = await fetch(DATA, {credentials: "same-origin", cache: "no-store",
                                         headers: {Accept: "application/json"}});
      if (answer.ok) { state = await answer.json(); at = Date.now(); show(); }
    } catch (e) { /* the next refresh tries again */ }
  };
  // While this page is open the person has a tab; EventSource reconnects by itself.
  if (window.EventSource) new EventSource(PRESENCE);
  refresh();
  setInterval(refresh, 15000);
  setInterval(show, 1000);
})();
