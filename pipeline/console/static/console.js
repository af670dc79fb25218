// Vigil console: live previews, live inbox rows (server-sent events). Plain JavaScript, no build step.
"use strict";

function refreshPreviews() {
  for (const img of document.querySelectorAll("img.preview[data-src]")) {
    let n = 0;
    const next = () => {
      n += 1;
      const probe = new Image();
      probe.onload = () => { img.src = probe.src; setTimeout(next, 1000); };
      probe.onerror = () => setTimeout(next, 2000);
      probe.src = img.dataset.src + "?t=" + n;
    };
    next();
  }
}

async function refreshCameras() {
  const cards = document.querySelectorAll(".camera-card[data-camera]");
  if (!cards.length) return;
  try {
    const response = await fetch("/api/cameras", {credentials: "same-origin"});
    if (response.ok) {
      for (const cam of (await response.json()).cameras) {
        const card = document.querySelector(`.camera-card[data-camera="${CSS.escape(cam.name)}"]`);
        if (!card) continue;
        const state = card.querySelector(".state");
        state.textContent = cam.state;
        state.className = "state state-" + cam.state.replaceAll(" ", "-");
        card.querySelector(".fps").textContent = cam.analysed_fps.toFixed(1) + " fps";
        card.querySelector(".drops").textContent = cam.drops;
        card.querySelector(".alerts-today a").textContent = cam.alerts_today;
        card.querySelector(".model-version").textContent = cam.model_version ? "v" + cam.model_version : "none";
      }
    }
  } finally {
    setTimeout(refreshCameras, 2000);
  }
}

function liveInbox() {
  const table = document.querySelector("table#inbox[data-live]");
  if (!table) return;
  const filters = JSON.parse(table.dataset.filters || "{}");
  const body = table.querySelector("tbody");
  const source = new EventSource("/api/stream?after=" + encodeURIComponent(table.dataset.after || "0"));
  source.addEventListener("alert", async (message) => {
    const alert = JSON.parse(message.data);
    if (!matches(alert, filters)) return;
    const response = await fetch("/alerts/" + encodeURIComponent(alert.id) + "/row", {credentials: "same-origin"});
    if (!response.ok) return;
    const holder = document.createElement("tbody");
    holder.innerHTML = (await response.text()).trim();
    const row = holder.firstElementChild;
    const old = body.querySelector(`tr[data-event-id="${CSS.escape(alert.id)}"]`);
    if (old) old.replaceWith(row); else { body.prepend(row); row.classList.add("fresh"); }
    const empty = document.querySelector(".empty");
    if (empty) empty.remove();
  });
}

function matches(alert, f) {
  if (f.camera && alert.camera !== f.camera) return false;
  if (f.reason && !alert.reasons.includes(f.reason)) return false;
  if (f.state === "open" && !alert.open) return false;
  if (f.state === "ended" && alert.open) return false;
  if (f.state === "unreviewed" && alert.review) return false;
  if (["acknowledged", "false_alarm", "normal_here"].includes(f.state) && alert.review !== f.state) return false;
  return true;
}

document.addEventListener("DOMContentLoaded", () => { refreshPreviews(); refreshCameras(); liveInbox(); });
