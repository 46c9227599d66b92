// The review page: claim a doubtful cutout, look at it, accept / reject / repaint it.
//
// The mask lives here as one byte per photo pixel (0 = background, 255 = product), at the
// photo's full resolution. Strokes change exactly the pixels whose centres lie within the brush
// radius of the stroke's polyline: the same rule as clearbg.review.snap.stroke_area, so the
// server and the tests know which pixels a stroke may touch. "Snap to edges" sends the finished
// stroke to the server, which refines it inside its own area (clearbg/review/snap.py).
"use strict";

const RING_PX = 2;            // clearbg.review.snap.RING_PX: the seed ring a snapped stroke needs
const OVERLAY = [255, 61, 139]; // product tint over the photo
const OVERLAY_ALPHA = 0.45;
const RENEW_MS = 60_000;      // well inside the queue's 10-minute lease
const $ = (id) => document.getElementById(id);

const view = { scale: 1, x: 0, y: 0 };
const tool = { name: "brush", radius: 20, snap: false };
const history = [];           // this page's items, in the order they were shown
let pos = -1;                 // index of the current item in history
let stroke = null;            // the stroke being painted: {points, before}
let lastStroke = null;        // the last finished stroke, exactly as painted (window.review.state)
let pan = null;               // {x, y, vx, vy} while dragging with space held
let spaceDown = false;
let busy = false;

// ----------------------------------------------------------------------------- server

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, { method = "GET", json, body, headers = {}, keepalive = false } = {}) {
  const all = { "X-Clearbg": "review", ...headers };   // every change carries it (see guard.py)
  if (json !== undefined) { all["Content-Type"] = "application/json"; body = JSON.stringify(json); }
  const response = await fetch(path, { method, headers: all, body, keepalive, credentials: "same-origin" });
  if (!response.ok) {
    let message = response.statusText;
    try { message = (await response.json()).error || message; } catch (_) { /* not JSON */ }
    throw new ApiError(response.status, message);
  }
  return response;
}

const itemPath = (entry, what = "") => `/api/items/${entry.item.id}${what ? "/" + what : ""}`;
const claimHeaders = (entry) => ({ "X-Claim-Token": entry.token });

function bytesToBase64(bytes) {
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(text);
}

function base64ToBytes(text) {
  const raw = atob(text);
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}

async function imagePixels(blob, options) {
  const bitmap = await createImageBitmap(blob, options);
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.drawImage(bitmap, 0, 0);
  return { bitmap, data: context.getImageData(0, 0, bitmap.width, bitmap.height).data };
}

// ----------------------------------------------------------------------------- items

async function loadEntry(item, token) {
  const entry = { item, token, w: item.width, h: item.height, undo: [], redo: [], strokes: 0,
                  seconds: 0, shownAt: null, decided: item.status === "claimed" ? null : item.status };
  const maskPath = item.corrected ? "corrected" : "mask";
  const [photoBlob, maskBlob] = await Promise.all([
    api(itemPath(entry, "photo")).then((r) => r.blob()),
    api(itemPath(entry, maskPath)).then((r) => r.blob()),
  ]);
  const photo = await imagePixels(photoBlob);
  // No colour management and no premultiplication: the mask's bytes must come through as they are.
  const mask = await imagePixels(maskBlob, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  if (photo.bitmap.width !== entry.w || mask.bitmap.width !== entry.w || mask.bitmap.height !== entry.h) {
    throw new Error(`the photo or mask of ${item.id} is not ${entry.w}x${entry.h}`);
  }
  entry.photo = photo.bitmap;
  entry.mask = new Uint8Array(entry.w * entry.h);
  for (let i = 0; i < entry.mask.length; i++) entry.mask[i] = mask.data[4 * i];
  entry.cutout = new ImageData(new Uint8ClampedArray(photo.data), entry.w, entry.h);  // alpha follows the mask
  entry.overlay = new ImageData(entry.w, entry.h);
  entry.cutoutCanvas = new OffscreenCanvas(entry.w, entry.h);
  refreshPixels(entry, 0, 0, entry.w, entry.h);
  return entry;
}

function current() { return pos >= 0 ? history[pos] : null; }

function editable(entry) { return entry && !entry.decided && !busy; }

async function claimNext() {
  const reviewer = $("reviewer").value.trim();
  if (!reviewer) { setStatus("Type your name in the Reviewer field first: decisions are recorded under it."); $("reviewer").focus(); return false; }
  setState("busy");
  try {
    const { item } = await (await api("/api/claim", { method: "POST", json: { reviewer } })).json();
    if (!item) { setStatus("Nothing is waiting for review. 🎉"); setState(current() ? stateOf(current()) : "empty"); return false; }
    const { token, ...fields } = item;
    history.push(await loadEntry(fields, token));
    show(history.length - 1);
    refreshProgress();  // one more in review, one fewer waiting
    return true;
  } catch (err) { fail(err); return false; }
}

function show(index) {
  const previous = current();
  if (previous) pauseClock(previous);
  pos = index;
  const entry = current();
  const { item } = entry;
  for (const canvas of [$("photo"), $("overlay")]) { canvas.width = entry.w; canvas.height = entry.h; }
  $("photo").getContext("2d").drawImage(entry.photo, 0, 0);
  $("overlay").getContext("2d").putImageData(entry.overlay, 0, 0);
  $("score").textContent = `${item.score.toFixed(3)}${item.threshold != null ? ` (gate ${item.threshold.toFixed(3)})` : ""}`;
  $("model").textContent = item.model;
  $("source").textContent = `${item.source} · ${entry.w}×${entry.h}`;
  $("item-status").textContent = entry.decided ? `${entry.decided}${item.reason ? `: ${item.reason}` : ""}` : "yours to review";
  document.body.dataset.item = item.id;
  fit();
  drawPreviews(entry);
  startClock(entry);
  setState(stateOf(entry));
  updateButtons();
  setStatus(entry.decided ? `This item is ${entry.decided}; → for the next one.` : "");
}

function stateOf(entry) { return entry.decided ? "decided" : "ready"; }

async function next() {
  if (busy) return;
  const later = history.findIndex((e, i) => i > pos && !e.decided);
  if (pos < history.length - 1) show(later >= 0 ? later : pos + 1);
  else await claimNext();
}

function previous() { if (!busy && pos > 0) show(pos - 1); }

// ----------------------------------------------------------------------------- time spent

function startClock(entry) { if (!entry.decided && document.visibilityState === "visible") entry.shownAt = performance.now(); }

function pauseClock(entry) {
  if (entry.shownAt !== null) { entry.seconds += (performance.now() - entry.shownAt) / 1000; entry.shownAt = null; }
}

function secondsSpent(entry) { pauseClock(entry); return Math.round(entry.seconds * 10) / 10; }

document.addEventListener("visibilitychange", () => {
  const entry = current();
  if (!entry) return;
  if (document.visibilityState === "visible") startClock(entry); else pauseClock(entry);
});

// ----------------------------------------------------------------------------- verdicts

async function decide(action, { reason = "" } = {}) {
  const entry = current();
  if (!editable(entry)) return;
  setState("busy");
  busy = true;
  const seconds = secondsSpent(entry);
  try {
    let item;
    if (action === "correct") {
      const compressed = await new Response(new Blob([entry.mask]).stream().pipeThrough(new CompressionStream("deflate"))).arrayBuffer();
      item = await (await api(itemPath(entry, "correct"), { method: "POST", body: compressed,
        headers: { ...claimHeaders(entry), "Content-Type": "application/octet-stream",
                   "X-Seconds": String(seconds), "X-Strokes": String(entry.strokes) } })).json();
    } else {
      item = await (await api(itemPath(entry, action), { method: "POST", headers: claimHeaders(entry),
        json: { seconds, strokes: entry.strokes, reason } })).json();
    }
    entry.item = item;
    entry.decided = item.status;
    busy = false;
    const said = `${item.status}${reason ? ` (${reason})` : ""} after ${seconds.toFixed(0)} s, ${entry.strokes} strokes`;
    await refreshProgress();
    await next();
    setStatus(`Previous item ${said}.`);
  } catch (err) {
    busy = false;
    startClock(entry);
    fail(err);
  }
}

function save() {
  const entry = current();
  if (!editable(entry)) return;
  // Nothing repainted (or all of it undone): the predicted mask is the answer.
  if (entry.undo.length === 0) decide("accept"); else decide("correct");
}

function openReject() {
  if (!editable(current())) return;
  $("reason").value = "";
  $("reject-dialog").showModal();
  $("reason").focus();
}

$("reason").addEventListener("keydown", (event) => {
  // Enter rejects (the form's first button is Cancel, which a plain Enter would press).
  if (event.key === "Enter" && $("reason").value.trim()) { event.preventDefault(); $("reject-dialog").close("reject"); }
});

$("reject-dialog").addEventListener("close", () => {
  const reason = $("reason").value.trim();
  if ($("reject-dialog").returnValue === "reject" && reason) decide("reject", { reason });
  $("reject-dialog").returnValue = "";
});

// ----------------------------------------------------------------------------- painting

function clientToImage(clientX, clientY) {
  const rect = $("viewport").getBoundingClientRect();
  return [(clientX - rect.left - view.x) / view.scale, (clientY - rect.top - view.y) / view.scale];
}

function imageToClient(x, y) {
  const rect = $("viewport").getBoundingClientRect();
  return [rect.left + view.x + x * view.scale, rect.top + view.y + y * view.scale];
}

function strokeBox(points, radius, margin, w, h) {
  // clearbg.review.snap.Stroke.box, to the pixel.
  let minX = Infinity, minY = Infinity, maxX = -Infinity, maxY = -Infinity;
  for (const [x, y] of points) { minX = Math.min(minX, x); minY = Math.min(minY, y); maxX = Math.max(maxX, x); maxY = Math.max(maxY, y); }
  const reach = radius + margin;
  return [Math.max(Math.floor(minX - reach), 0), Math.max(Math.floor(minY - reach), 0),
          Math.min(Math.ceil(maxX + reach) + 1, w), Math.min(Math.ceil(maxY + reach) + 1, h)];
}

function paintSegment(entry, a, b, radius, value) {
  // Every pixel whose centre is within `radius` of segment a-b (clearbg.review.snap.stroke_area).
  const [x0, y0, x1, y1] = strokeBox([a, b], radius, 0, entry.w, entry.h);
  const [ax, ay] = a, dx = b[0] - a[0], dy = b[1] - a[1];
  const length2 = dx * dx + dy * dy, r2 = radius * radius;
  for (let y = y0; y < y1; y++) {
    const py = y + 0.5;
    for (let x = x0; x < x1; x++) {
      const px = x + 0.5;
      let t = length2 > 0 ? ((px - ax) * dx + (py - ay) * dy) / length2 : 0;
      t = Math.min(Math.max(t, 0), 1);
      const ex = px - (ax + t * dx), ey = py - (ay + t * dy);
      if (ex * ex + ey * ey <= r2) entry.mask[y * entry.w + x] = value;
    }
  }
  refreshPixels(entry, x0, y0, x1, y1);
}

function refreshPixels(entry, x0, y0, x1, y1) {
  // Overlay tint and cutout alpha follow the mask inside the box.
  const { mask, overlay, cutout, w } = entry;
  for (let y = y0; y < y1; y++) {
    for (let x = x0; x < x1; x++) {
      const i = y * w + x, m = mask[i];
      overlay.data[4 * i] = OVERLAY[0]; overlay.data[4 * i + 1] = OVERLAY[1]; overlay.data[4 * i + 2] = OVERLAY[2];
      overlay.data[4 * i + 3] = Math.round(m * OVERLAY_ALPHA);
      cutout.data[4 * i + 3] = m;
    }
  }
  if (entry === current() && x1 > x0 && y1 > y0) {
    $("overlay").getContext("2d").putImageData(overlay, 0, 0, x0, y0, x1 - x0, y1 - y0);
  }
}

function drawPreviews(entry) {
  entry.cutoutCanvas.getContext("2d").putImageData(entry.cutout, 0, 0);
  for (const [id, white] of [["on-checker", false], ["on-white", true]]) {
    const canvas = $(id);
    const scale = Math.min(1, 320 / Math.max(entry.w, entry.h));
    canvas.width = Math.max(1, Math.round(entry.w * scale));
    canvas.height = Math.max(1, Math.round(entry.h * scale));
    const context = canvas.getContext("2d");
    context.clearRect(0, 0, canvas.width, canvas.height);
    if (white) { context.fillStyle = "#fff"; context.fillRect(0, 0, canvas.width, canvas.height); }
    context.drawImage(entry.cutoutCanvas, 0, 0, canvas.width, canvas.height);
  }
}

function beginStroke(event) {
  const entry = current();
  if (!editable(entry)) return;
  const point = clientToImage(event.clientX, event.clientY);
  stroke = { points: [point], before: entry.mask.slice(), tool: tool.name, radius: tool.radius };
  paintSegment(entry, point, point, stroke.radius, stroke.tool === "brush" ? 255 : 0);
}

function extendStroke(event) {
  const entry = current();
  const point = clientToImage(event.clientX, event.clientY);
  const last = stroke.points[stroke.points.length - 1];
  if (Math.hypot(point[0] - last[0], point[1] - last[1]) < 0.5) return;
  stroke.points.push(point);
  paintSegment(entry, last, point, stroke.radius, stroke.tool === "brush" ? 255 : 0);
}

async function endStroke() {
  const entry = current();
  const done = stroke;
  stroke = null;
  entry.strokes += 1;
  const box = strokeBox(done.points, done.radius, tool.snap ? RING_PX : 0, entry.w, entry.h);
  if (tool.snap) {
    busy = true;
    setState("busy");
    try {
      const patch = crop(done.before, entry.w, box);
      const answer = await (await api(itemPath(entry, "snap"), { method: "POST", headers: claimHeaders(entry),
        json: { points: done.points, radius: done.radius, tool: done.tool, mask: bytesToBase64(patch) } })).json();
      paste(entry.mask, entry.w, answer.box, base64ToBytes(answer.mask));
      refreshPixels(entry, ...answer.box);
    } catch (err) {
      entry.mask.set(done.before);    // a stroke that could not be snapped is not kept half-done
      refreshPixels(entry, ...box);
      busy = false;
      fail(err);
      return;
    }
    busy = false;
  }
  lastStroke = { points: done.points, radius: done.radius, tool: done.tool, snap: tool.snap };
  entry.undo.push({ box, before: crop(done.before, entry.w, box), after: crop(entry.mask, entry.w, box) });
  entry.redo.length = 0;
  drawPreviews(entry);
  setState("ready");
  updateButtons();
}

function crop(mask, w, [x0, y0, x1, y1]) {
  const out = new Uint8Array((x1 - x0) * (y1 - y0));
  for (let y = y0; y < y1; y++) out.set(mask.subarray(y * w + x0, y * w + x1), (y - y0) * (x1 - x0));
  return out;
}

function paste(mask, w, [x0, y0, x1, y1], patch) {
  for (let y = y0; y < y1; y++) mask.set(patch.subarray((y - y0) * (x1 - x0), (y - y0 + 1) * (x1 - x0)), y * w + x0);
}

function undo(redo = false) {
  const entry = current();
  if (!editable(entry) || stroke) return;
  const [from, to] = redo ? [entry.redo, entry.undo] : [entry.undo, entry.redo];
  const step = from.pop();
  if (!step) return;
  paste(entry.mask, entry.w, step.box, redo ? step.after : step.before);
  to.push(step);
  refreshPixels(entry, ...step.box);
  drawPreviews(entry);
  updateButtons();
}

// ----------------------------------------------------------------------------- view

function applyView() {
  $("stage").style.transform = `translate(${view.x}px, ${view.y}px) scale(${view.scale})`;
  $("cursor").style.width = $("cursor").style.height = `${2 * tool.radius * view.scale}px`;
}

function fit() {
  const entry = current();
  if (!entry) return;
  const rect = $("viewport").getBoundingClientRect();
  view.scale = Math.min(rect.width / entry.w, rect.height / entry.h) * 0.96;
  view.x = (rect.width - entry.w * view.scale) / 2;
  view.y = (rect.height - entry.h * view.scale) / 2;
  applyView();
}

function zoomAt(clientX, clientY, factor) {
  const rect = $("viewport").getBoundingClientRect();
  const scale = Math.min(Math.max(view.scale * factor, 0.05), 32);
  const [ix, iy] = clientToImage(clientX, clientY);
  view.scale = scale;
  view.x = clientX - rect.left - ix * scale;
  view.y = clientY - rect.top - iy * scale;
  applyView();
}

function moveCursor(event) {
  const rect = $("viewport").getBoundingClientRect();
  const cursor = $("cursor");
  const d = 2 * tool.radius * view.scale;
  cursor.hidden = spaceDown || pan !== null;
  cursor.style.left = `${event.clientX - rect.left - d / 2}px`;
  cursor.style.top = `${event.clientY - rect.top - d / 2}px`;
}

const viewport = $("viewport");
viewport.addEventListener("wheel", (event) => {
  event.preventDefault();
  zoomAt(event.clientX, event.clientY, Math.exp(-event.deltaY * 0.0015));
}, { passive: false });

viewport.addEventListener("pointerdown", (event) => {
  viewport.focus();
  if (spaceDown || event.button === 1) {
    pan = { x: event.clientX, y: event.clientY, vx: view.x, vy: view.y };
  } else if (event.button === 0) {
    beginStroke(event);
  } else return;
  viewport.setPointerCapture(event.pointerId);
  event.preventDefault();
});

viewport.addEventListener("pointermove", (event) => {
  moveCursor(event);
  if (pan) {
    view.x = pan.vx + event.clientX - pan.x;
    view.y = pan.vy + event.clientY - pan.y;
    applyView();
  } else if (stroke) {
    for (const e of event.getCoalescedEvents ? event.getCoalescedEvents() : [event]) extendStroke(e);
  }
});

function pointerUp() {
  if (pan) pan = null;
  else if (stroke) endStroke();
}
viewport.addEventListener("pointerup", pointerUp);
viewport.addEventListener("pointercancel", pointerUp);
viewport.addEventListener("pointerleave", () => { $("cursor").hidden = true; });
viewport.addEventListener("pointerenter", () => { $("cursor").hidden = false; });

// ----------------------------------------------------------------------------- tools and keys

function setTool(name) { tool.name = name; updateButtons(); }

function setSize(radius) {
  tool.radius = Math.min(Math.max(Math.round(radius * 10) / 10, 1), 500);
  $("size").value = String(tool.radius);
  applyView();
}

function setSnap(on) { tool.snap = on; $("snap").checked = on; }

function setOverlay(on) { $("show-overlay").checked = on; $("overlay").hidden = !on; }

function updateButtons() {
  const entry = current();
  for (const id of ["brush", "eraser"]) $(id).setAttribute("aria-pressed", String(tool.name === id));
  const open = editable(entry);
  for (const id of ["accept", "reject", "save"]) $(id).disabled = !open;
  $("undo").disabled = !open || entry.undo.length === 0;
  $("redo").disabled = !open || entry.redo.length === 0;
  $("prev").disabled = pos <= 0;
}

document.addEventListener("keydown", (event) => {
  if (event.target instanceof HTMLInputElement && event.target.type !== "checkbox") return;  // typing a name or a reason
  if ($("reject-dialog").open) return;
  const ctrl = event.ctrlKey || event.metaKey;
  let handled = true;
  if (ctrl && event.key === "Enter") save();
  else if (ctrl && event.code === "KeyZ") undo(event.shiftKey);
  else if (ctrl && event.code === "KeyY") undo(true);
  else if (ctrl || event.altKey) handled = false;
  else if (event.code === "Space") { spaceDown = true; viewport.classList.add("panning"); $("cursor").hidden = true; }
  else if (event.code === "KeyA") decide("accept");
  else if (event.code === "KeyR") openReject();
  else if (event.code === "KeyB") setTool("brush");
  else if (event.code === "KeyE") setTool("eraser");
  else if (event.key === "[") setSize(tool.radius / 1.25);
  else if (event.key === "]") setSize(tool.radius * 1.25);
  else if (event.code === "KeyS") setSnap(!tool.snap);
  else if (event.code === "KeyO") setOverlay(!$("show-overlay").checked);
  else if (event.code === "KeyF") fit();
  else if (event.key === "ArrowRight") next();
  else if (event.key === "ArrowLeft") previous();
  else handled = false;
  if (handled) event.preventDefault();
});

document.addEventListener("keyup", (event) => {
  if (event.code === "Space") { spaceDown = false; viewport.classList.remove("panning"); }
});

$("brush").addEventListener("click", () => setTool("brush"));
$("eraser").addEventListener("click", () => setTool("eraser"));
$("snap").addEventListener("change", (event) => setSnap(event.target.checked));
$("show-overlay").addEventListener("change", (event) => setOverlay(event.target.checked));
$("undo").addEventListener("click", () => undo(false));
$("redo").addEventListener("click", () => undo(true));
$("fit").addEventListener("click", fit);
$("accept").addEventListener("click", () => decide("accept"));
$("reject").addEventListener("click", openReject);
$("save").addEventListener("click", save);
$("prev").addEventListener("click", previous);
$("next").addEventListener("click", next);
$("reviewer").addEventListener("change", () => {
  localStorage.setItem("clearbg.reviewer", $("reviewer").value.trim());
  if (!current()) claimNext();
});
window.addEventListener("resize", fit);

// ----------------------------------------------------------------------------- leases, progress

setInterval(() => {
  for (const entry of history) {
    if (!entry.decided) api(itemPath(entry, "renew"), { method: "POST", headers: claimHeaders(entry) }).catch(fail);
  }
}, RENEW_MS);

window.addEventListener("pagehide", () => {
  // Items skipped with → and never decided go back to the queue for the others at once.
  for (const entry of history) {
    if (!entry.decided) api(itemPath(entry, "release"), { method: "POST", headers: claimHeaders(entry), keepalive: true }).catch(() => {});
  }
});

async function refreshProgress() {
  const reviewer = $("reviewer").value.trim();
  try {
    const p = await (await api(`/api/progress?reviewer=${encodeURIComponent(reviewer)}`)).json();
    let line = `${p.remaining} left (${p.waiting} waiting, ${p.in_review} in review)`;
    if (p.pace_s != null) {
      line += ` · you: ${p.yours} done, ${Math.round(p.pace_s)} s per item · about ${formatDuration(p.eta_s)} to go at your pace`;
    } else if (reviewer) line += " · your pace shows after your first decision";
    $("progress").textContent = line;
    $("progress").dataset.remaining = String(p.remaining);
  } catch (err) { fail(err); }
}

function formatDuration(seconds) {
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

// ----------------------------------------------------------------------------- status

function setState(state) { document.body.dataset.state = state; }

function setStatus(text) { $("status").textContent = text; }

function fail(err) {
  setState("error");
  setStatus(err instanceof ApiError && err.status === 409
    ? `${err.message} (your lease ran out while the page was away)` : `Error: ${err.message || err}`);
}

// What tests and power users need: coordinates and the current state, nothing that bypasses the UI.
window.review = {
  imageToClient,
  state: () => {
    const entry = current();
    return entry && { id: entry.item.id, tool: tool.name, radius: tool.radius, snap: tool.snap, scale: view.scale,
                      strokes: entry.strokes, undo: entry.undo.length, redo: entry.redo.length, decided: entry.decided,
                      position: pos, items: history.length, overlay: !$("overlay").hidden, lastStroke };
  },
};

(async function start() {
  const fromUrl = new URLSearchParams(location.search).get("reviewer");
  $("reviewer").value = fromUrl || localStorage.getItem("clearbg.reviewer") || "";
  setSize(tool.radius);
  updateButtons();
  await refreshProgress();
  if (!$("reviewer").value.trim()) {
    setState("empty");
    setStatus("Type your name in the Reviewer field to start.");
    return;
  }
  await claimNext();
})();
