// crl-uiqa serve: the page. Plain JavaScript, no external asset; talks to the JSON API under /api.
"use strict";

const $ = (sel) => document.querySelector(sel);
const SVGNS = "http://www.w3.org/2000/svg";
const IMAGE_EXT = /\.(png|jpe?g|tiff?|bmp)$/i;
const POLL_MS = 500;

const state = { config: null, jobs: new Map(), order: [], selected: null, pinned: false, shownFrame: null };

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c != null) e.append(c);
  return e;
}

function svg(tag, attrs = {}, text) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text != null) e.textContent = text;
  return e;
}

function fmt(x, digits = 4) {
  return x == null || !isFinite(x) ? "n/a" : Number(x).toFixed(digits);
}

function showMessage(text) {
  const m = $("#message");
  m.textContent = text || "";
  m.hidden = !text;
}

async function apiError(response) {
  try {
    const body = await response.json();
    if (body && body.detail) return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
  } catch (e) { /* not JSON */ }
  return `${response.status} ${response.statusText}`;
}

// ---------------------------------------------------------------- configuration

async function loadConfig() {
  const r = await fetch("/api/config");
  if (!r.ok) { showMessage("cannot reach the server: " + (await apiError(r))); return; }
  const cfg = await r.json();
  state.config = cfg;
  const model = $("#model");
  for (const m of cfg.models) {
    model.append(el("option", { value: m.name, text: `${m.name} (${m.runtime}, ${m.image_size.join("x")})` }));
  }
  $("#model-row").hidden = cfg.models.length < 2;
  const plane = $("#plane");
  if (cfg.planes.available) {
    for (const n of cfg.planes.names) plane.append(el("option", { value: n, text: n }));
  } else {
    $("#plane-row").hidden = true;
    $("#threshold-row").hidden = true;
    const note = $("#plane-note");
    note.textContent = "Plane check off: no SonoNet-16 weights on this server.";
    note.hidden = false;
  }
  $("#top-k").max = cfg.max_top;
  const L = cfg.limits;
  $("#limits").textContent =
    `limits: ${Math.round(L.max_upload_bytes / 1048576)} MiB per upload, ${L.max_frames} frames per scan, ` +
    `${L.queue_size} uploads waiting`;
}

// ---------------------------------------------------------------- uploads

function groups(files) {
  // Still images together form one scan; every video or DICOM file is a scan of its own.
  const images = files.filter((f) => IMAGE_EXT.test(f.name) || (f.type || "").startsWith("image/"));
  const others = files.filter((f) => !images.includes(f));
  const out = others.map((f) => [f]);
  if (images.length) out.push(images.sort((a, b) => a.name.localeCompare(b.name, undefined, { numeric: true })));
  return out;
}

function addUploads(fileList) {
  const files = Array.from(fileList || []);
  if (!files.length) return;
  showMessage("");
  for (const g of groups(files)) upload(g);
}

function optionFields(form) {
  const f = $("#options");
  for (const name of ["top_k", "min_gap", "smooth"]) form.append(name, f.elements[name].value);
  if (state.config && state.config.models.length > 1) form.append("model", $("#model").value);
  if (!$("#plane-row").hidden && $("#plane").value) {
    form.append("plane", $("#plane").value);
    form.append("plane_threshold", $("#plane-threshold").value);
  }
}

function upload(files) {
  const local = "local-" + Math.random().toString(36).slice(2);
  const name = files.length > 1 ? `${files.length} images (${files[0].name}, ...)` : files[0].name;
  const job = { id: null, local, name, status: "uploading", phase: "uploading", progress: { done: 0, total: 100 } };
  state.jobs.set(local, job);
  state.order.push(local);
  if (!state.pinned) state.selected = local;
  renderJobs();

  const form = new FormData();
  for (const f of files) form.append("files", f, f.name);
  optionFields(form);
  const xhr = new XMLHttpRequest();
  xhr.open("POST", "/api/scans");
  xhr.upload.onprogress = (e) => {
    if (e.lengthComputable) { job.progress = { done: e.loaded, total: e.total }; renderJobs(); }
  };
  xhr.onload = () => {
    let body = null;
    try { body = JSON.parse(xhr.responseText); } catch (e) { /* not JSON */ }
    if (xhr.status === 202 && body) {
      Object.assign(job, body);
      renderJobs();
      poll(job);
    } else {
      reject(job, (body && body.detail) || `${xhr.status} ${xhr.statusText}`);
    }
  };
  xhr.onerror = () => reject(job, "the upload failed: the server could not be reached");
  xhr.send(form);
}

function reject(job, message) {
  job.status = "rejected";
  job.message = message;
  showMessage(`${job.name}: ${message}`);
  renderJobs();
  if (state.selected === job.local) renderResult(job);
}

async function poll(job) {
  let r;
  try { r = await fetch(`/api/scans/${job.id}`); } catch (e) { setTimeout(() => poll(job), 2000); return; }
  if (!r.ok) { reject(job, await apiError(r)); return; }
  const body = await r.json();
  const wasFinal = job.status === "done";
  Object.assign(job, body);
  renderJobs();
  if (job.status === "queued" || job.status === "running") {
    setTimeout(() => poll(job), POLL_MS);
    if (state.selected === job.local) renderResult(job);
    return;
  }
  if (job.status === "failed") showMessage(`${job.name}: ${job.message}`);
  if (!wasFinal && state.selected === job.local) renderResult(job);
}

function stateText(job) {
  switch (job.status) {
    case "uploading": return "uploading";
    case "queued": return job.position ? `waiting (${job.position} in line)` : "waiting";
    case "running": {
      const p = job.progress || {};
      return p.total ? `${job.phase}: ${p.done} of ${p.total} frames` : `${job.phase}: ${p.done || 0} frames`;
    }
    case "done": return `done: ${job.result.frames_scored} frames in ${fmt(job.result.seconds, 1)} s`;
    case "failed": return "failed: " + job.message;
    case "rejected": return "refused: " + job.message;
    default: return job.status + (job.message ? ": " + job.message : "");
  }
}

function renderJobs() {
  const list = $("#jobs");
  list.replaceChildren();
  for (const key of state.order.slice().reverse()) {
    const job = state.jobs.get(key);
    const li = el("li", {
      "data-status": job.status, "data-id": job.id || "", class: key === state.selected ? "selected" : "",
      onclick: () => { state.selected = key; state.pinned = true; renderJobs(); renderResult(job); },
    }, el("div", { class: "name", text: job.name }), el("div", { class: "state", text: stateText(job) }));
    if (job.status === "uploading" || job.status === "queued" || job.status === "running") {
      const p = el("progress");
      const t = job.progress && job.progress.total;
      if (job.status !== "queued" && t) { p.max = t; p.value = Math.min(job.progress.done, t); }
      li.append(p);
    }
    list.append(li);
  }
}

// ---------------------------------------------------------------- result

function renderResult(job) {
  const box = $("#result");
  box.replaceChildren();
  box.dataset.id = job.id || "";
  box.dataset.status = job.status;
  box.append(el("h2", { text: job.name }));
  if (job.status === "failed" || job.status === "rejected" || job.status === "cancelled") {
    box.append(el("p", { class: "error", text: stateText(job) }));
    return;
  }
  if (job.status !== "done") {
    box.append(el("p", { class: "summary", text: stateText(job) }));
    return;
  }
  const res = job.result;
  const region = res.region ? `${res.region.method} region ${res.region.box.join(", ")} (top, left, height, width)` : "";
  box.append(el("p", {
    class: "summary",
    text: `${res.frames_scored} frames scored (${res.kind}) in ${fmt(res.seconds, 1)} s with model ${res.model}` +
      (res.plane ? `; plane check ${res.plane} >= ${res.plane_threshold}: ${res.eligible} eligible` : "") +
      (region ? `; ${region}` : ""),
  }));
  if (res.read_error) {
    box.append(el("p", { class: "warning", text: `Read error: ${res.read_error}. The frames decoded before it were scored.` }));
  }
  box.append(el("h3", { text: "Quality over time" }));
  box.append(curve(job));
  box.append(el("p", { class: "note", text: "Click the curve to see a frame. Red dots: the picks (1 = best)." + (res.plane ? " Grey bands: frames that fail the plane check." : "") }));
  const picks = el("div", { id: "picks" });
  for (const p of res.picks) {
    const plane = p.plane ? ` · ${p.plane} ${fmt(p.plane_probability, 2)}` : "";
    picks.append(el("figure", { class: "pick", "data-frame": p.frame, "data-rank": p.rank, onclick: () => showFrame(job, p.frame, p.image) },
      el("img", { src: p.image, alt: `pick ${p.rank}, frame ${p.frame}` }),
      el("figcaption", {}, el("b", { text: `#${p.rank}` }), ` frame ${p.frame} · ${fmt(p.time, 2)} s · score ${fmt(p.quality_smoothed)}${plane}`)));
  }
  const viewer = el("div", { id: "viewer" }, el("h3", { text: "Frame" }), el("img", { alt: "selected frame" }), el("p", { class: "note", id: "viewer-caption" }));
  box.append(el("div", { class: "panes" },
    el("div", {}, el("h3", { text: `Best ${res.picks.length} frame(s)` }),
      res.picks.length ? picks : el("p", { class: "warning", text: res.plane ? `No frame reached the ${res.plane} probability ${res.plane_threshold}.` : "No frame was eligible." })),
    viewer));
  const dl = el("div", { id: "downloads" });
  const labels = { "frames.csv": "per-frame CSV", "picks.zip": "picked frames (PNG, zip)", "report.html": "HTML report", "picks.csv": "picks CSV", "selection.json": "JSON" };
  for (const [name, label] of Object.entries(labels)) {
    if (res.downloads[name]) dl.append(el("a", { href: res.downloads[name], download: "", "data-name": name, text: label }));
  }
  box.append(el("h3", { text: "Downloads" }), dl);
  if (res.picks.length) showFrame(job, res.picks[0].frame, res.picks[0].image);
}

function frameInfo(res, frame) {
  const i = res.frames.frame.indexOf(frame);
  if (i < 0) return `frame ${frame}`;
  const F = res.frames;
  let text = `frame ${frame} · ${fmt(F.time[i], 2)} s · score ${fmt(F.quality_smoothed[i])}`;
  if (F.plane) text += ` · plane ${F.plane[i]} (${res.plane} ${fmt(F.plane_probability[i], 2)})` + (F.eligible[i] ? "" : " · not eligible");
  return text;
}

function showFrame(job, frame, src) {
  const res = job.result;
  state.shownFrame = frame;
  const img = document.querySelector("#viewer img");
  if (!img) return;
  img.src = src || `/api/scans/${job.id}/frames/${frame}.png`;
  img.dataset.frame = frame;
  $("#viewer-caption").textContent = frameInfo(res, frame);
  for (const f of document.querySelectorAll("#picks figure")) f.classList.toggle("shown", Number(f.dataset.frame) === frame);
  const cursor = document.querySelector("#curve .cursor");
  const i = res.frames.frame.indexOf(frame);
  if (cursor && i >= 0) {
    const x = cursor.__scale(res.frames.time[i]);
    cursor.setAttribute("x1", x); cursor.setAttribute("x2", x); cursor.setAttribute("visibility", "visible");
  }
}

function curve(job) {
  const res = job.result;
  const F = res.frames;
  const W = 860, H = 290, L = 66, R = 14, T = 24, B = 36;
  const times = F.time, q = F.quality_smoothed, raw = F.quality;
  const vals = q.concat(res.smooth > 0 ? raw : []).filter((v) => v != null);
  let t0 = times.length ? times[0] : 0, t1 = times.length ? times[times.length - 1] : 1;
  if (t1 <= t0) t1 = t0 + 1;
  let y0 = Math.min(...vals), y1 = Math.max(...vals);
  if (!isFinite(y0)) { y0 = 0; y1 = 1; }
  if (y1 - y0 < 1e-9) { y0 -= 0.5; y1 += 0.5; }
  const pad = (y1 - y0) * 0.08; y0 -= pad; y1 += pad;
  const sx = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
  const sy = (v) => T + (1 - (v - y0) / (y1 - y0)) * (H - T - B);
  const s = svg("svg", { id: "curve", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "quality over time" });
  // ineligible stretches
  if (F.plane) {
    const half = times.length > 1 ? (times[1] - times[0]) / 2 : 0.5;
    for (let i = 0; i < times.length; i++) {
      if (!F.eligible[i]) s.append(svg("rect", { class: "ineligible", x: sx(times[i] - half), y: T, width: Math.max(1, sx(times[i] + half) - sx(times[i] - half)), height: H - T - B }));
    }
  }
  // grid and axes
  const digits = Math.min(6, Math.max(2, Math.ceil(-Math.log10((y1 - y0) / 4)) + 1));
  for (let k = 0; k <= 4; k++) {
    const v = y0 + ((y1 - y0) * k) / 4, y = sy(v);
    s.append(svg("line", { class: "grid", x1: L, x2: W - R, y1: y, y2: y }));
    s.append(svg("text", { x: L - 6, y: y + 4, "text-anchor": "end" }, v.toFixed(digits)));
  }
  const step = niceStep((t1 - t0) / 8);
  for (let t = Math.ceil(t0 / step) * step; t <= t1 + 1e-9; t += step) {
    s.append(svg("line", { class: "axis", x1: sx(t), x2: sx(t), y1: H - B, y2: H - B + 4 }));
    s.append(svg("text", { x: sx(t), y: H - B + 16, "text-anchor": "middle" }, Number(t.toFixed(3)).toString()));
  }
  s.append(svg("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }));
  s.append(svg("line", { class: "axis", x1: L, x2: L, y1: T, y2: H - B }));
  s.append(svg("text", { x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle" }, res.kind === "image" ? "image number" : "time (s)"));
  s.append(svg("text", { x: 6, y: 12, "text-anchor": "start" }, res.smooth > 0 ? `quality (smoothed over \u00b1${res.smooth} s; grey: raw)` : "quality"));
  const path = (ys, cls) => {
    let d = "", pen = false;
    for (let i = 0; i < times.length; i++) {
      if (ys[i] == null) { pen = false; continue; }
      d += (pen ? "L" : "M") + sx(times[i]).toFixed(1) + " " + sy(ys[i]).toFixed(1);
      pen = true;
    }
    if (times.length === 1 && ys[0] != null) d += "h1";
    return svg("path", { class: cls, d });
  };
  if (res.smooth > 0) s.append(path(raw, "raw"));
  s.append(path(q, "line"));
  const cursor = svg("line", { class: "cursor", x1: 0, x2: 0, y1: T, y2: H - B, visibility: "hidden" });
  cursor.__scale = sx;
  s.append(cursor);
  for (const p of res.picks) {
    const x = sx(p.time), y = sy(p.quality_smoothed);
    const dot = svg("circle", { class: "pick", cx: x, cy: y, r: 6, "data-frame": p.frame, "data-rank": p.rank });
    dot.append(svg("title", {}, `#${p.rank}: frame ${p.frame}, ${fmt(p.time, 2)} s, score ${fmt(p.quality_smoothed)}`));
    s.append(dot);
    s.append(svg("text", { class: "pick-label", x, y: y - 10, "text-anchor": "middle" }, String(p.rank)));
  }
  s.addEventListener("click", (e) => {
    const box = s.getBoundingClientRect();
    const x = ((e.clientX - box.left) / box.width) * W;
    const t = t0 + ((x - L) / (W - L - R)) * (t1 - t0);
    let best = 0;
    for (let i = 1; i < times.length; i++) if (Math.abs(times[i] - t) < Math.abs(times[best] - t)) best = i;
    if (times.length) showFrame(job, F.frame[best]);
  });
  return s;
}

function niceStep(raw) {
  if (!(raw > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(raw)));
  for (const m of [1, 2, 5, 10]) if (raw <= m * p) return m * p;
  return 10 * p;
}

// ---------------------------------------------------------------- wiring

function wire() {
  const drop = $("#drop"), input = $("#file-input");
  input.addEventListener("change", () => { addUploads(input.files); input.value = ""; });
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); } });
  for (const ev of ["dragenter", "dragover"]) drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add("over"); });
  for (const ev of ["dragleave", "drop"]) drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.remove("over"); });
  drop.addEventListener("drop", (e) => addUploads(e.dataTransfer.files));
  // a file dropped next to the zone must not make the browser navigate away
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());
}

wire();
loadConfig();
