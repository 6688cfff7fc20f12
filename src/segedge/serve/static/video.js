// segedge serve: video tracking on the page (SAM 2 folders with their video graphs). Loaded after app.js, whose
// state S, canvas, drawing and prompt handling it reuses: in video mode S.bitmap is the shown frame and
// S.points / S.labels / S.box the current object's prompt on that frame. Coordinates are video pixels.
"use strict";

const V = {
  on: false,
  id: null, name: "", frames: 0, width: 0, height: 0, fps: 0,
  frame: 0,              // the frame shown
  obj: 1, objects: [1],  // the object clicks go to; every object named so far
  prompts: {},           // "frame:obj" -> {points, labels, box}: what was sent for that object on that frame
  records: {},           // frame -> the server's record (segedge track's JSON line): every object's mask there
  job: null,             // the tracking job's last view (GET /api/tracks/{id})
  follow: true,          // while tracking, show each new frame as it comes
  bitmaps: new Map(),    // frame -> ImageBitmap, the most recent few
  showSeq: 0,            // frame requests (a late one is not drawn over a newer one)
  promptSeq: 0, promptDone: 0,
};
const KEEP_BITMAPS = 48;
const POLL_MS = 400;

function videoModel() { return S.models.find((m) => m.name === S.model.name && m.video) || S.models.find((m) => m.video); }

function key(frame, obj) { return `${frame}:${obj}`; }

function isVideoFile(file) { return /^video\//.test(file.type) || /\.(mp4|mov|m4v|webm|mkv|avi)$/i.test(file.name); }

// ---- opening ----------------------------------------------------------------------------------------------
async function openVideo(file) {
  if (!file) return;
  hideError();
  const model = videoModel();
  if (!model) {
    showError("no served model tracks video: serve a SAM 2 folder exported with `segedge export sam2` (it has the video graphs)");
    return;
  }
  if (model.name !== S.model.name) selectModel(model.name);
  stopPolling();
  status("uploading the video…", "busy");
  let info;
  try {
    info = await api("/api/videos", await file.arrayBuffer(), file.type || "application/octet-stream");
  } catch (e) {
    showError(`${file.name}: ${e.message}`);
    status(S.bitmap ? "ready" : "open an image or a video to start");
    return;
  }
  Object.assign(V, {
    on: true, id: info.video_id, name: file.name, frames: info.frames, width: info.width, height: info.height,
    fps: info.fps, frame: 0, obj: 1, objects: [1], prompts: {}, records: {}, job: null, follow: true,
  });
  V.bitmaps.clear();
  S.file = file; S.bytes = null; S.imageId = null; S.prepared = false;
  S.width = info.width; S.height = info.height;
  setMasks(null, null);
  await api(`/api/videos/${V.id}/reset`, { model: S.model.name }).catch(() => {});  // a clip seen before starts afresh
  enterVideoMode();
  await showFrame(0);
  status(`${info.width}×${info.height}, ${info.frames} frames: click on an object, then Track`);
}

function enterVideoMode() {
  document.body.classList.add("video");
  for (const id of ["video-bar", "video-panel"]) $(id).hidden = false;
  for (const id of ["multimask-row", "candidates", "everything", "grid", "text-form"]) $(id).hidden = true;
  $("drop").hidden = true;
  const bar = $("scrubber");
  bar.max = String(V.frames - 1); bar.value = "0";
  $("track-frames").value = String(Math.min(30, V.frames));
  renderObjectChoice();
  updateTrackButtons();
  $("track-progress").textContent = "";
  $("help").innerHTML = "<b>click</b> the object on any frame · <b>shift-click</b> background · <b>drag</b> box ·" +
    " <b>Track</b> follows every object from the first prompted frame, <b>◀ Track back</b> from the last one to the start · <b>←/→</b> frames · <b>Esc</b> forget all";
}

// Another model that tracks: the same clip, its prompts and results start afresh.
async function videoModelChanged() {
  await stopTracking();
  stopPolling();
  Object.assign(V, { prompts: {}, records: {}, obj: 1, objects: [1], job: null, follow: true });
  await api(`/api/videos/${V.id}/reset`, { model: S.model.name }).catch(() => {});
  const frame = V.frame;
  enterVideoMode();
  await showFrame(frame);
  status(`${S.model.name}: click on an object, then Track`);
}

// Back to images (an image was opened, or a model that does not track was chosen).
function leaveVideoMode() {
  if (!V.on) return;
  stopTracking();
  stopPolling();
  V.on = false; V.id = null; V.records = {}; V.prompts = {}; V.bitmaps.clear();
  document.body.classList.remove("video");
  for (const id of ["video-bar", "video-panel"]) $(id).hidden = true;
  selectModel(S.model.name);  // the image controls again
}

// ---- frames -----------------------------------------------------------------------------------------------
async function frameBitmap(n) {
  if (V.bitmaps.has(n)) {
    const b = V.bitmaps.get(n);
    V.bitmaps.delete(n); V.bitmaps.set(n, b);  // most recent last
    return b;
  }
  const res = await fetch(`/api/videos/${V.id}/frames/${n}`);
  if (!res.ok) {
    let message = `${res.status} ${res.statusText}`;
    try { message = (await res.json()).error || message; } catch (e) { /* not JSON */ }
    throw new Error(message);
  }
  const bitmap = await createImageBitmap(await res.blob());
  V.bitmaps.set(n, bitmap);
  while (V.bitmaps.size > KEEP_BITMAPS) V.bitmaps.delete(V.bitmaps.keys().next().value);
  return bitmap;
}

// Show frame n: its picture, every object's mask on it (when tracked or prompted), the current object's prompt.
async function showFrame(n) {
  n = Math.max(0, Math.min(V.frames - 1, n | 0));
  const seq = ++V.showSeq;
  V.frame = n;
  $("scrubber").value = String(n);
  $("frame-label").textContent = `frame ${n} / ${V.frames - 1}`;
  loadPrompt();
  let bitmap;
  try {
    bitmap = await frameBitmap(n);
  } catch (e) {
    if (seq === V.showSeq) showError(`frame ${n}: ${e.message}`);
    return;
  }
  if (seq !== V.showSeq) return;
  const resize = !S.bitmap || S.bitmap.width !== bitmap.width || S.bitmap.height !== bitmap.height;
  S.bitmap = bitmap;
  if (resize) fitCanvas();
  refresh();
  draw();
}

// ---- prompts ------------------------------------------------------------------------------------------------
function loadPrompt() {
  const p = V.prompts[key(V.frame, V.obj)];
  S.points = p ? p.points.slice() : []; S.labels = p ? p.labels.slice() : []; S.box = p ? p.box : null;
}

// The current object's prompt on the shown frame (app.js's clicks filled S.points / S.labels / S.box) goes to SAM 2;
// the answer is every object's mask on this frame.
async function videoPrompt() {
  const frame = V.frame, obj = V.obj;
  const body = { model: S.model.name, frame: frame, obj_id: obj,
                 points: S.points.length ? S.points : null, labels: S.points.length ? S.labels : null, box: S.box };
  if (!body.points && !body.box) { await forgetPrompt(frame, obj); return; }
  V.prompts[key(frame, obj)] = { points: S.points.slice(), labels: S.labels.slice(), box: S.box };
  const seq = ++V.promptSeq;
  status("segmenting…", "busy");
  const t0 = performance.now();
  try {
    const record = await api(`/api/videos/${V.id}/prompt`, body);
    V.records[frame] = record;
    hideError();
    showVideoTimings({ prompt: record.timings_ms.server }, performance.now() - t0);
    status(`object ${obj} on frame ${frame}: ${areaText(record, obj)} · Track to follow it`);
  } catch (e) {
    showError(e.message);
  } finally {
    V.promptDone = seq;
    if (frame === V.frame) { refresh(); draw(); }
  }
}

// No prompt left for an object on a frame: SAM 2 cannot take one back, so the object is forgotten and its other
// prompts are sent again.
async function forgetPrompt(frame, obj) {
  delete V.prompts[key(frame, obj)];
  const seq = ++V.promptSeq;
  try {
    await api(`/api/videos/${V.id}/reset`, { model: S.model.name, obj_id: obj });
    dropObjectResults(obj);
    for (const [k, p] of Object.entries(V.prompts)) {
      const [f, o] = k.split(":").map(Number);
      if (o !== obj) continue;
      V.records[f] = await api(`/api/videos/${V.id}/prompt`, { model: S.model.name, frame: f, obj_id: o, ...p });
    }
    status(`object ${obj}'s prompt on frame ${frame} removed`);
  } catch (e) {
    showError(e.message);
  } finally {
    V.promptDone = seq;
    refresh(); draw();
  }
}

function dropObjectResults(obj) {
  for (const r of Object.values(V.records)) r.objects = r.objects.filter((o) => o.id !== obj);
}

// Esc / Clear: forget every object, prompt and result on this clip.
async function videoClear() {
  if (V.job && V.job.status === "running") { showError("stop tracking first"); return; }
  try {
    await api(`/api/videos/${V.id}/reset`, { model: S.model.name });
  } catch (e) { showError(e.message); return; }
  V.prompts = {}; V.records = {}; V.obj = 1; V.objects = [1];
  renderObjectChoice();
  loadPrompt();
  $("track-progress").textContent = "";
  updateTrackButtons();
  refresh(); draw();
  status("cleared: click on an object");
}

function videoUndo() {
  S.points.pop(); S.labels.pop();
  if (!S.points.length) S.box = null;
  draw();
  videoPrompt();
}

function areaText(record, obj) {
  const o = record.objects.find((x) => x.id === obj);
  return o ? `${o.area.toLocaleString("en")} px${o.visible ? "" : " (SAM 2: not visible)"}` : "no mask";
}

// ---- objects -------------------------------------------------------------------------------------------------
function renderObjectChoice() {
  const sel = $("object");
  sel.innerHTML = "";
  for (const id of V.objects) {
    const o = document.createElement("option");
    o.value = String(id); o.textContent = `${id}`;
    o.style.color = `rgb(${color(id - 1).join(",")})`;
    sel.append(o);
  }
  sel.value = String(V.obj);
}

function chooseObject(id) {
  V.obj = id;
  if (!V.objects.includes(id)) V.objects.push(id);
  renderObjectChoice();
  loadPrompt();
  draw();
}

// ---- tracking -------------------------------------------------------------------------------------------------
let pollTimer = null;

// Track forward from the first prompted frame, or (reverse) back from the last one towards frame 0.
async function startTracking(reverse = false) {
  if (!Object.keys(V.prompts).length) { showError("click on an object first: Track follows the prompted objects"); return; }
  const frames = Math.max(1, Number($("track-frames").value) || 1);
  hideError();
  try {
    V.job = await api(`/api/videos/${V.id}/track`, { model: S.model.name, max_frames: frames, reverse });
  } catch (e) { showError(e.message); return; }
  V.follow = true;
  updateTrackButtons();
  showProgress();
  poll();
}

async function stopTracking() {
  if (!V.job || V.job.status !== "running") return;
  try { await fetch(`/api/tracks/${V.job.job_id}`, { method: "DELETE" }); } catch (e) { /* the poll reports */ }
}

function stopPolling() { if (pollTimer) clearTimeout(pollTimer); pollTimer = null; }

// Fetch the job's new records; show the newest frame while following; again until the job ends.
async function poll() {
  stopPolling();
  if (!V.job || !V.on) return;
  const job = V.job;
  const since = job.done_records || 0;
  let view;
  try {
    view = await api(`/api/tracks/${job.job_id}?since=${since}`);
  } catch (e) {
    showError(`tracking: ${e.message}`);
    V.job = { ...job, status: "error" };
    updateTrackButtons();
    return;
  }
  if (V.job !== job) return;  // a newer job replaced it
  for (const r of view.records) V.records[r.frame] = r;
  V.job = { ...view, done_records: since + view.records.length };
  showProgress();
  if (view.records.length) {
    const last = view.records[view.records.length - 1].frame;
    if (V.follow) await showFrame(last); else { refresh(); draw(); }
  }
  if (view.status === "running") pollTimer = setTimeout(poll, POLL_MS);
  else {
    updateTrackButtons();
    if (view.status === "error") showError(`tracking stopped: ${view.error}`);
  }
}

function showProgress() {
  const j = V.job;
  if (!j) return;
  const rate = j.frames_per_s ? ` · ${j.frames_per_s.toFixed(2)} frames/s` : "";
  const what = { running: "tracking", done: "tracked", stopped: "stopped after", error: "failed after" }[j.status] || j.status;
  const way = j.reverse ? " back" : "";
  const text = `${what} ${j.done} / ${j.total} frames${way} from frame ${j.start_frame}${rate} (${j.seconds.toFixed(1)} s)`;
  $("track-progress").textContent = text;
  status(text, j.status === "running" ? "busy" : "");
  if (j.done) showVideoTimings(j.ms_per_frame, null, true);
}

function updateTrackButtons() {
  const running = !!(V.job && V.job.status === "running");
  $("track").disabled = running;
  $("track-back").disabled = running;
  $("stop").disabled = !running;
  $("dl-json").disabled = !Object.keys(V.records).length;
  $("dl-overlay").disabled = !V.records[V.frame];
  $("dl-mask").disabled = true;
}

// Timings: a prompt's round trip, or a job's milliseconds per frame and stage.
function showVideoTimings(stages, roundTripMs, perFrame) {
  const dl = $("timings");
  dl.innerHTML = "";
  const rows = Object.entries(stages || {}).map(([k, v]) => [perFrame ? `${k} / frame` : k, `${v.toFixed(1)} ms`]);
  if (roundTripMs !== null && roundTripMs !== undefined) rows.push(["round trip", `${roundTripMs.toFixed(1)} ms`]);
  for (const [k, v] of rows) {
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = v;
    dl.append(dt, dd);
  }
}

// ---- drawing and the object list ------------------------------------------------------------------------------
// The shown frame's masks, one colour per object id (as `segedge track` colours them: object i -> colour i - 1).
function renderVideoLayer() {
  layer = document.createElement("canvas");
  layer.width = V.width; layer.height = V.height;
  const record = V.records[V.frame];
  if (!record) return;
  const lctx = layer.getContext("2d");
  const img = lctx.createImageData(V.width, V.height);
  const px = new Uint32Array(img.data.buffer);
  const h = V.height, w = V.width;
  for (const o of record.objects) {
    if (!o.area) continue;
    const [r, g, b] = color(o.id - 1);
    const value = (150 << 24) | (b << 16) | (g << 8) | r;
    for (const [a, e] of rleRuns(o.rle)) for (let j = a; j < e; j++) px[(j % h) * w + Math.floor(j / h)] = value;
  }
  lctx.putImageData(img, 0, 0);
}

function renderVideoObjects() {
  const ul = $("instances");
  ul.innerHTML = "";
  const record = V.records[V.frame];
  if (!record || !record.objects.length) {
    const li = document.createElement("li");
    li.className = "empty";
    li.textContent = Object.keys(V.records).length ? "no object on this frame" : "nothing yet";
    ul.append(li);
    updateTrackButtons();
    return;
  }
  for (const o of record.objects) {
    const li = document.createElement("li");
    li.dataset.object = o.id;
    const pick = document.createElement("input");
    pick.type = "radio"; pick.name = "video-object"; pick.checked = o.id === V.obj; pick.className = "show";
    pick.setAttribute("aria-label", `prompt object ${o.id}`);
    pick.onchange = () => chooseObject(o.id);
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = `rgb(${color(o.id - 1).join(",")})`;
    const name = document.createElement("span");
    name.className = "name"; name.textContent = `object ${o.id}${o.visible ? "" : " (not visible)"}`;
    const num = document.createElement("span");
    num.className = "num";
    num.textContent = `${o.object_score === null ? "–" : o.object_score.toFixed(2)} · ${o.area.toLocaleString("en")} px`;
    num.title = "SAM 2's object score (> 0: visible) · area in video pixels";
    li.append(pick, swatch, name, num, document.createElement("span"));
    ul.append(li);
  }
  updateTrackButtons();
}

// ---- downloads: every tracked frame as JSON Lines (segedge track's format) --------------------------------------
function downloadTrackJson() {
  const frames = Object.keys(V.records).map(Number).sort((a, b) => a - b);
  const lines = frames.map((f) => JSON.stringify({ ...V.records[f], video: V.name, timings_ms: undefined }));
  save(new Blob([lines.join("\n") + "\n"], { type: "application/x-ndjson" }), `${V.name.replace(/\.[^.]*$/, "")}_track.jsonl`);
}

// ---- wiring -------------------------------------------------------------------------------------------------
$("video-file").addEventListener("change", (ev) => { openVideo(ev.target.files[0]); ev.target.value = ""; });
$("scrubber").addEventListener("input", (ev) => { V.follow = false; showFrame(Number(ev.target.value)); });
$("prev-frame").onclick = () => { V.follow = false; showFrame(V.frame - 1); };
$("next-frame").onclick = () => { V.follow = false; showFrame(V.frame + 1); };
$("object").addEventListener("change", (ev) => chooseObject(Number(ev.target.value)));
$("new-object").onclick = () => chooseObject(Math.max(...V.objects) + 1);
$("track").onclick = () => startTracking(false);
$("track-back").onclick = () => startTracking(true);
$("stop").onclick = stopTracking;
document.addEventListener("keydown", (ev) => {
  if (!V.on || ev.target.tagName === "INPUT" || ev.target.tagName === "SELECT") return;
  if (ev.key === "ArrowLeft") { V.follow = false; showFrame(V.frame - 1); }
  if (ev.key === "ArrowRight") { V.follow = false; showFrame(V.frame + 1); }
});

window.segedge.video = { state: V, openVideo, showFrame, chooseObject };
