// segedge serve: the click-to-segment page. Plain JavaScript, no dependencies, no network but this server.
// Coordinates sent to the API are original-image pixels (x right, y down); masks come back as COCO RLE.
"use strict";

const S = {
  ready: false,          // models loaded
  models: [], model: null,
  file: null, bytes: null, bitmap: null,
  imageId: null, width: 0, height: 0, prepared: false,
  points: [], labels: [], box: null,
  concept: null,         // SAM 3: the text of the instances on screen (clicks refine the one they are on)
  response: null,        // the last mask response (segedge segment's JSON schema)
  kind: null,            // "prompt" | "everything"
  masks: [],             // decoded masks of the response: Uint8Array(h * w), row-major, 1 = inside
  selected: 0,           // chosen SAM candidate
  hidden: new Set(),     // instances of the response not drawn (the list's show boxes)
  deleted: new Set(),    // instances removed from the list (and from the downloads)
  seq: 0, doneSeq: 0,    // requests sent / answered (stale answers are dropped)
  roundTripMs: null,
  error: null,
};
const $ = (id) => document.getElementById(id);
const view = $("view");
const ctx = view.getContext("2d");
let layer = null;        // canvas at image size holding the drawn masks

// ---- COCO RLE -------------------------------------------------------------------------------------
// pycocotools' compressed string: 6-bit groups (5 data bits + "more" bit) offset by 48; from the third
// count on, each value is a delta from the count two places before.
function rleCounts(s) {
  const counts = [];
  let p = 0;
  while (p < s.length) {
    let x = 0, k = 0, more = true, c = 0;
    while (more) {
      c = s.charCodeAt(p) - 48;
      x += (c & 0x1f) * 2 ** (5 * k);
      more = (c & 0x20) !== 0;
      p++; k++;
    }
    if (c & 0x10) x -= 2 ** (5 * k);  // sign bit of the last group
    if (counts.length > 2) x += counts[counts.length - 2];
    counts.push(x);
  }
  return counts;
}

// Runs [start, end) of ones in column-major order.
function rleRuns(rle) {
  const counts = typeof rle.counts === "string" ? rleCounts(rle.counts) : rle.counts;
  const runs = [];
  let pos = 0;
  for (let i = 0; i < counts.length; i++) {
    if (i % 2 === 1 && counts[i] > 0) runs.push([pos, pos + counts[i]]);
    pos += counts[i];
  }
  return runs;
}

function decodeRle(rle) {
  const [h, w] = rle.size;
  const out = new Uint8Array(h * w);
  for (const [a, b] of rleRuns(rle)) {
    for (let j = a; j < b; j++) out[(j % h) * w + Math.floor(j / h)] = 1;
  }
  return out;
}

// A decoded mask as base64 of its bits packed row-major, most significant bit first (for tests and tools).
function maskBits(i) {
  const m = S.masks[i];
  const bytes = new Uint8Array(Math.ceil(m.length / 8));
  for (let j = 0; j < m.length; j++) if (m[j]) bytes[j >> 3] |= 0x80 >> (j & 7);
  let text = "";
  for (let j = 0; j < bytes.length; j += 0x8000) text += String.fromCharCode.apply(null, bytes.subarray(j, j + 0x8000));
  return btoa(text);
}

// ---- talking to the server --------------------------------------------------------------------------
async function api(path, body, raw) {
  const init = body === undefined ? {} : raw
    ? { method: "POST", body: body, headers: { "Content-Type": raw } }
    : { method: "POST", body: JSON.stringify(body), headers: { "Content-Type": "application/json" } };
  const res = await fetch(path, init);
  let data = null;
  try { data = await res.json(); } catch (e) { data = { error: `${res.status} ${res.statusText}` }; }
  if (!res.ok) {
    const err = new Error(data && data.error ? data.error : `${res.status} ${res.statusText}`);
    err.status = res.status;
    throw err;
  }
  return data;
}

// A model request on the current image; an image dropped from the server's cache is uploaded again once.
async function imageCall(path, body) {
  try {
    return await api(path, { model: S.model.name, image_id: S.imageId, ...body });
  } catch (e) {
    if (e.status !== 404 || !S.bytes || !/image .* is not on the server/.test(e.message)) throw e;
    await upload();
    return await api(path, { model: S.model.name, image_id: S.imageId, ...body });
  }
}

function status(text, kind) {
  const el = $("status");
  el.textContent = text;
  el.title = text;
  el.className = kind || "";
  if (kind !== "busy") S.error = kind === "error" ? text : null;
}

// An error goes to the status line and to a banner over the image, where the user is looking.
function showError(text) {
  status(text, "error");
  $("alert-text").textContent = text;
  $("alert").hidden = false;
}

function hideError() { $("alert").hidden = true; }

// The stages this request ran, in ms, and what came from the server's cache (never a "0 ms" row).
function showTimings(r, roundTripMs) {
  const dl = $("timings");
  dl.innerHTML = "";
  const rows = Object.entries(r.timings_ms || {}).map(([k, v]) => [k, `${v.toFixed(1)} ms`]);
  if (r.cached) rows.unshift([S.model.encodes_once ? "image embedding" : "everything", "cached"]);
  rows.push(["round trip", `${roundTripMs.toFixed(1)} ms`]);
  for (const [k, v] of rows) {
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = v;
    dl.append(dt, dd);
  }
}

// ---- models -----------------------------------------------------------------------------------------
async function loadModels() {
  const data = await api("/api/models");
  S.models = data.models;
  const sel = $("model");
  sel.innerHTML = "";
  for (const m of S.models) {
    const o = document.createElement("option");
    o.value = m.name; o.textContent = `${m.name} (${m.family})`;
    sel.append(o);
  }
  selectModel(data.default);
  S.ready = true;
  status("open an image to start");
}

function selectModel(name) {
  S.model = S.models.find((m) => m.name === name) || S.models[0];
  $("model").value = S.model.name;
  $("model-info").textContent = `${S.model.variant} · ${S.model.backend} ${S.model.precision}`;
  $("text-form").hidden = !S.model.prompts.includes("text");
  // an open-vocabulary model (YOLOE) finds the classes the text names; FastSAM keeps the mask CLIP matches
  // SAM 3 finds every instance of each concept the text names (a box drawn before is an example of it)
  $("text").placeholder = S.model.text_names_classes
    ? `classes to find, e.g. ${S.model.classes.slice(0, 2).join(", ") || "person, red car"}`
    : S.model.text_finds_concepts ? "concepts to find, e.g. yellow bus, person" : "text prompt, e.g. a dog";
  $("multimask-row").hidden = !S.model.multimask;
  $("grid").hidden = !S.model.options.includes("points_per_side");  // the everything generator's grid
  $("everything").hidden = !S.model.prompts.includes("everything");
  $("open-video").hidden = !S.models.some((m) => m.video);  // SAM 2 folders with video graphs: video.js
  $("help").innerHTML = S.model.point_rule === "select"
    ? "<b>click</b> the masks under the point · <b>shift-click</b> or <b>right-click</b> leave out the masks under it ·" +
      " <b>drag</b> the mask that best fills the box · <b>Esc</b> clear · <b>Ctrl-Z</b> undo"
    : "<b>click</b> object point · <b>shift-click</b> or <b>right-click</b> background point · <b>drag</b> box ·" +
      " <b>Esc</b> clear · <b>Ctrl-Z</b> undo";
}

// ---- image ------------------------------------------------------------------------------------------
async function openFile(file) {
  if (!file) return;
  if (isVideoFile(file)) { openVideo(file); return; }
  leaveVideoMode();
  hideError();
  S.file = file;
  S.imageId = null; S.prepared = false;
  clearPrompts(false);
  try {
    S.bytes = await file.arrayBuffer();
    S.bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
  } catch (e) {
    closeImage();
    showError(`${file.name}: not an image this page can open (JPEG, PNG, WebP, BMP, TIFF or GIF): open another file`);
    return;
  }
  $("drop").hidden = true;
  fitCanvas();
  draw();
  try {
    await upload();
    await prepare();
  } catch (e) {
    if (!S.imageId) closeImage();  // the server refused the file: do not leave it on screen as if it worked
    showError(`${file.name}: ${e.message}`);
  }
}

// No image: the stage shows the drop box again (after a file that could not be opened).
function closeImage() {
  S.bitmap = null; S.bytes = null; S.imageId = null; S.width = 0; S.height = 0; S.prepared = false;
  setMasks(null, null);
  $("drop").hidden = false;
  view.style.width = "0px"; view.style.height = "0px";
  draw();
}

async function upload() {
  status("uploading…", "busy");
  const up = await api("/api/images", S.bytes, S.file.type || "application/octet-stream");
  S.imageId = up.image_id; S.width = up.width; S.height = up.height;
  if (S.bitmap && (S.bitmap.width !== up.width || S.bitmap.height !== up.height)) {
    showError(`the server sees ${up.width}×${up.height}, the browser ${S.bitmap.width}×${S.bitmap.height}`);
  }
}

// SAM: encode now so the first click is fast; FastSAM: find every mask now (prompts select from them).
async function prepare() {
  S.prepared = false;
  status(S.model.encodes_once ? "encoding the image…" : "segmenting…", "busy");
  const t0 = performance.now();
  const r = await imageCall("/api/encode", {});
  S.prepared = true;
  showTimings(r, performance.now() - t0);
  status(`${S.width}×${S.height} ready${r.cached ? " (cached)" : ""}: click on an object`);
}

// ---- prompts ----------------------------------------------------------------------------------------
function clearPrompts(redraw = true) {
  S.points = []; S.labels = []; S.box = null; S.concept = null;
  setMasks(null, null);
  if (redraw) draw();
}

async function runPrompt() {
  if (V.on) { await videoPrompt(); return; }
  if (!S.imageId) return;
  if (!S.points.length && !S.box && S.concept) { await runText(S.concept); return; }  // the refining clicks undone
  if (!S.points.length && !S.box) { setMasks(null, null); draw(); return; }
  const single = S.points.length === 1 && !S.box;  // SAM's advice: candidates for one ambiguous click only
  const body = { points: S.points.length ? S.points : null, labels: S.points.length ? S.labels : null, box: S.box };
  if (S.concept && S.points.length && !S.box) body.text = S.concept;  // SAM 3: clicks refine the instance they are on
  else if (S.model.multimask) body.multimask = $("multimask").checked && single;
  await request("/api/predict", body, "prompt");
}

async function runEverything() {
  if (!S.imageId) return;
  S.points = []; S.labels = []; S.box = null;
  const body = S.model.options.includes("points_per_side") ? { points_per_side: Number($("grid").value) } : {};
  status("finding every mask…", "busy");
  await request("/api/everything", body, "everything");
}

async function runText(text) {
  if (!S.imageId || !text) return;
  const body = { text: text };
  if (S.model.text_finds_concepts && S.box) body.box = S.box;  // SAM 3: the box is an example of the concept
  S.points = []; S.labels = []; S.box = null;
  S.concept = S.model.text_finds_concepts ? text : null;  // the clicks that follow refine one of its instances
  await request("/api/predict", body, "prompt");
}

async function request(path, body, kind) {
  const seq = ++S.seq;
  const t0 = performance.now();
  try {
    const r = await imageCall(path, body);
    if (seq !== S.seq) return;  // a newer request is on its way
    S.roundTripMs = performance.now() - t0;
    S.labelled = S.model.class_labels || Boolean(body && body.text);  // SAM 3's concepts: named by their text
    hideError();
    setMasks(r, kind);
    showTimings(r, S.roundTripMs);
    status(answerText(r, body));
  } catch (e) {
    if (seq === S.seq) showError(e.message);
  } finally {
    if (seq === S.seq) S.doneSeq = seq;
    draw();
  }
}

// The status line for an answer; FastSAM's point rule ("select") can leave nothing, and then says why.
function answerText(r, body) {
  const n = r.count;
  let text = `${n} mask${n === 1 ? "" : "s"} · ${r.model} ${r.backend} ${r.precision}`;
  const labels = (body && body.labels) || [];
  if (S.model.point_rule === "select" && labels.includes(0)) {
    text = n === 0
      ? `no mask left: ${S.model.title} keeps the masks under a + point that are under no − point (Ctrl-Z undoes)`
      : `${text} · masks under a − point are left out`;
  }
  return text;
}

// Whether the answer is SAM's candidates for one prompt (pick one), not instances (SAM 3's concepts: list them all).
function candidates() { return S.kind === "prompt" && S.model.multimask && !S.labelled; }

function setMasks(response, kind) {
  S.response = response; S.kind = kind;
  S.masks = response ? response.instances.map((inst) => decodeRle(inst.rle)) : [];
  S.selected = 0;
  S.hidden = new Set(); S.deleted = new Set();
  if (response && candidates()) {
    response.instances.forEach((inst, i) => { if (inst.score > response.instances[S.selected].score) S.selected = i; });
  }
  refresh();
}

// Redraw everything that depends on the masks: the layer, the candidates, the list, the downloads.
function refresh() {
  if (V.on) { renderVideoLayer(); renderVideoObjects(); return; }
  renderLayer();
  renderCandidates();
  renderInstances();
  for (const id of ["dl-overlay", "dl-mask", "dl-json"]) $(id).disabled = !shownMasks().length;
}

// Indices of the masks listed: the chosen SAM candidate, else all that were not deleted.
function listedMasks() {
  if (!S.response) return [];
  if (candidates()) return S.masks.length ? [S.selected] : [];
  return S.masks.map((_, i) => i).filter((i) => !S.deleted.has(i));
}

// Indices of the masks drawn and downloaded: the listed ones not hidden.
function shownMasks() { return listedMasks().filter((i) => !S.hidden.has(i)); }

// The instance list: colour, class (FastSAM) or mask number (SAM), score, area; show/hide and delete.
function renderInstances() {
  const ul = $("instances");
  ul.innerHTML = "";
  const listed = listedMasks();
  if (!listed.length) {
    const li = document.createElement("li");
    li.className = "empty";
    li.textContent = S.response ? "nothing found" : "nothing yet";
    ul.append(li);
    return;
  }
  for (const i of listed) {
    const inst = S.response.instances[i];
    const li = document.createElement("li");
    li.dataset.index = i;
    li.className = S.hidden.has(i) ? "hidden-mask" : "";
    const show = document.createElement("input");
    show.type = "checkbox"; show.checked = !S.hidden.has(i); show.className = "show";
    show.setAttribute("aria-label", `show ${instanceName(i)}`);
    show.onchange = () => { if (show.checked) S.hidden.delete(i); else S.hidden.add(i); refresh(); draw(); };
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = `rgb(${maskColor(i).join(",")})`;
    const name = document.createElement("span");
    name.className = "name"; name.textContent = instanceName(i);
    const num = document.createElement("span");
    num.className = "num";
    num.textContent = `${inst.score.toFixed(2)} · ${inst.area.toLocaleString("en")} px`;
    num.title = `${S.model.score_name} · area in image pixels`;
    const del = document.createElement("button");
    del.className = "delete"; del.textContent = "×";
    del.setAttribute("aria-label", `delete ${instanceName(i)}`);
    del.onclick = () => { S.deleted.add(i); refresh(); draw(); };
    li.append(show, swatch, name, num, del);
    ul.append(li);
  }
}

function instanceName(i) {
  return S.labelled ? `${i + 1} ${S.response.instances[i].label}` : `mask ${i + 1}`;
}

function renderCandidates() {
  const box = $("candidates");
  box.innerHTML = "";
  if (!S.response || !candidates() || S.masks.length < 2) return;
  S.response.instances.forEach((inst, i) => {
    const b = document.createElement("button");
    b.textContent = `${i + 1} · ${inst.score.toFixed(2)}`;
    b.title = "SAM's predicted IoU";
    if (i === S.selected) b.className = "selected";
    b.onclick = () => { S.selected = i; S.hidden = new Set(); refresh(); draw(); };
    box.append(b);
  });
}

// ---- drawing ----------------------------------------------------------------------------------------
function color(i) {
  const hue = (i * 137.508) % 360;  // golden angle: neighbours differ
  const s = 0.75, l = 0.5, a = s * Math.min(l, 1 - l);
  const f = (n) => { const k = (n + hue / 30) % 12; return Math.round(255 * (l - a * Math.max(-1, Math.min(k - 3, 9 - k, 1)))); };
  return [f(0), f(8), f(4)];
}

// A prompt's mask is blue; "everything" gives each instance its own colour, kept when others are hidden.
function maskColor(i) { return S.kind === "prompt" ? [30, 144, 255] : color(i); }

function renderLayer() {
  if (!S.width) { layer = null; return; }
  layer = document.createElement("canvas");
  layer.width = S.width; layer.height = S.height;
  const shown = shownMasks();
  if (!shown.length) return;
  const lctx = layer.getContext("2d");
  const img = lctx.createImageData(S.width, S.height);
  const px = new Uint32Array(img.data.buffer);
  const h = S.height, w = S.width;
  shown.forEach((i) => {
    const [r, g, b] = maskColor(i);
    const value = (150 << 24) | (b << 16) | (g << 8) | r;  // little-endian RGBA
    for (const [a, e] of rleRuns(S.response.instances[i].rle)) {
      for (let j = a; j < e; j++) px[(j % h) * w + Math.floor(j / h)] = value;
    }
  });
  lctx.putImageData(img, 0, 0);
}

function fitCanvas() {
  if (!S.bitmap) return;
  const stage = $("stage");
  const bar = V.on ? $("video-bar").offsetHeight : 0;  // the frame scrubber under the picture
  const scale = Math.min((stage.clientWidth - 8) / S.bitmap.width, (stage.clientHeight - 8 - 2 * bar) / S.bitmap.height, 1);
  const dpr = window.devicePixelRatio || 1;
  view.style.width = `${Math.round(S.bitmap.width * scale)}px`;
  view.style.height = `${Math.round(S.bitmap.height * scale)}px`;
  view.width = Math.round(S.bitmap.width * scale * dpr);
  view.height = Math.round(S.bitmap.height * scale * dpr);
}

function draw(drag) {
  ctx.clearRect(0, 0, view.width, view.height);
  if (!S.bitmap) return;
  ctx.drawImage(S.bitmap, 0, 0, view.width, view.height);
  if (layer) ctx.drawImage(layer, 0, 0, view.width, view.height);
  const k = view.width / S.bitmap.width;
  if (!S.width) return;
  const box = drag || S.box;
  if (box) {
    ctx.strokeStyle = "#ffd400"; ctx.lineWidth = 2;
    ctx.strokeRect(box[0] * k, box[1] * k, (box[2] - box[0]) * k, (box[3] - box[1]) * k);
  }
  S.points.forEach(([x, y], i) => {
    ctx.beginPath();
    ctx.arc(x * k, y * k, 6, 0, 2 * Math.PI);
    ctx.fillStyle = S.labels[i] ? "#16c60c" : "#e81123";
    ctx.fill(); ctx.lineWidth = 2; ctx.strokeStyle = "#fff"; ctx.stroke();
  });
}

// ---- pointer: click = point, shift/right click = background point, drag = box -----------------------
function imageXY(ev) {
  const r = view.getBoundingClientRect();
  const x = ((ev.clientX - r.left) / r.width) * S.bitmap.width;
  const y = ((ev.clientY - r.top) / r.height) * S.bitmap.height;
  const clamp = (v, hi) => Math.min(Math.max(v, 0), hi - 0.01);
  return [Math.round(clamp(x, S.bitmap.width) * 100) / 100, Math.round(clamp(y, S.bitmap.height) * 100) / 100];
}

let down = null;
view.addEventListener("contextmenu", (ev) => ev.preventDefault());
view.addEventListener("pointerdown", (ev) => {
  if (!S.bitmap || (!S.imageId && !V.on)) return;
  down = { xy: imageXY(ev), x: ev.clientX, y: ev.clientY, background: ev.shiftKey || ev.button === 2 };
  view.setPointerCapture(ev.pointerId);
});
view.addEventListener("pointermove", (ev) => {
  if (!down || Math.hypot(ev.clientX - down.x, ev.clientY - down.y) < 5) return;
  const [x, y] = imageXY(ev);
  draw([Math.min(down.xy[0], x), Math.min(down.xy[1], y), Math.max(down.xy[0], x), Math.max(down.xy[1], y)]);
});
view.addEventListener("pointerup", (ev) => {
  if (!down) return;
  const start = down;
  down = null;
  if (S.kind === "everything") { S.points = []; S.labels = []; S.box = null; }
  if (Math.hypot(ev.clientX - start.x, ev.clientY - start.y) >= 5) {
    const [x, y] = imageXY(ev);
    S.box = [Math.min(start.xy[0], x), Math.min(start.xy[1], y), Math.max(start.xy[0], x), Math.max(start.xy[1], y)];
  } else {
    S.points.push(start.xy);
    S.labels.push(start.background ? 0 : 1);
  }
  draw();
  runPrompt();
});

// ---- downloads --------------------------------------------------------------------------------------
function save(blob, name) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

function stem() { return (S.file && S.file.name.replace(/\.[^.]*$/, "")) || "image"; }

function fullCanvas() {
  const c = document.createElement("canvas");
  c.width = S.width; c.height = S.height;
  return c;
}

$("dl-overlay").onclick = () => {
  const c = fullCanvas(), g = c.getContext("2d");
  g.drawImage(S.bitmap, 0, 0, S.width, S.height);
  if (layer) g.drawImage(layer, 0, 0);
  c.toBlob((b) => save(b, `${stem()}_segedge.png`), "image/png");
};
$("dl-mask").onclick = () => {
  const c = fullCanvas(), g = c.getContext("2d");
  const img = g.createImageData(S.width, S.height);
  const px = new Uint32Array(img.data.buffer);
  px.fill(0xff000000);
  for (const i of shownMasks()) S.masks[i].forEach((v, j) => { if (v) px[j] = 0xffffffff; });
  g.putImageData(img, 0, 0);
  c.toBlob((b) => save(b, `${stem()}_mask.png`), "image/png");
};
$("dl-json").onclick = () => {
  if (V.on) { downloadTrackJson(); return; }
  const instances = shownMasks().map((i) => S.response.instances[i]);
  const record = { ...S.response, count: instances.length, instances: instances };
  save(new Blob([JSON.stringify(record)], { type: "application/json" }), `${stem()}_segedge.json`);
};

// ---- wiring -----------------------------------------------------------------------------------------
$("file").addEventListener("change", (ev) => openFile(ev.target.files[0]));
$("model").addEventListener("change", async (ev) => {
  selectModel(ev.target.value);
  if (V.on) { if (S.model.video) await videoModelChanged(); else leaveVideoMode(); }
  if (V.on) return;
  clearPrompts();
  if (S.imageId) { try { await prepare(); } catch (e) { showError(e.message); } }
});
$("everything").onclick = runEverything;
$("text-form").addEventListener("submit", (ev) => { ev.preventDefault(); runText($("text").value.trim()); });
$("undo").onclick = () => { if (V.on) { videoUndo(); return; } S.points.pop(); S.labels.pop(); if (!S.points.length) S.box = null; draw(); runPrompt(); };
$("clear").onclick = () => (V.on ? videoClear() : clearPrompts());
$("alert-close").onclick = hideError;
$("multimask").addEventListener("change", () => runPrompt());
document.addEventListener("keydown", (ev) => {
  if (ev.target.tagName === "INPUT") return;
  if (ev.key === "Escape") { if (V.on) videoClear(); else clearPrompts(); }
  if (ev.key === "z" && (ev.ctrlKey || ev.metaKey)) $("undo").click();
});
document.addEventListener("dragover", (ev) => { ev.preventDefault(); document.body.classList.add("dragging"); });
document.addEventListener("dragleave", () => document.body.classList.remove("dragging"));
document.addEventListener("drop", (ev) => {
  ev.preventDefault();
  document.body.classList.remove("dragging");
  if (ev.dataTransfer.files.length) openFile(ev.dataTransfer.files[0]);
});
window.addEventListener("resize", () => { fitCanvas(); draw(); });

window.segedge = { state: S, decodeRle, rleCounts, maskBits, openFile, shownMasks, listedMasks };
renderInstances();
loadModels().catch((e) => showError(`cannot reach the server: ${e.message}`));
