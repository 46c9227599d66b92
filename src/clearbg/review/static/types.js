// The product types page: move photos between a dataset's types (clearbg/review/types.py).
"use strict";

const $ = (id) => document.getElementById(id);
let types = [];        // [{cluster, name, count}]
let photos = [];       // [{index, id, type, moved}]
let order = [];        // photo ids in the order shown (type by type)
const selected = new Set();
let focusId = null;
let anchorId = null;
const undoStack = [];  // [[{id, from}], ...] one entry per move

async function api(path, json) {
  const options = json === undefined ? {} : { method: "POST", body: JSON.stringify(json),
    headers: { "Content-Type": "application/json", "X-Clearbg": "review" } };  // see guard.py
  const response = await fetch(path, { credentials: "same-origin", ...options });
  if (!response.ok) {
    let message = response.statusText;
    try { message = (await response.json()).error || message; } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return response.json();
}

async function load() {
  const table = await api("/api/types");
  types = table.types;
  photos = table.photos;
  render();
}

function render() {
  const main = $("types");
  main.replaceChildren();
  order = [];
  types.forEach((type, i) => {
    const section = document.createElement("section");
    section.className = "type";
    section.dataset.type = type.name;
    const title = document.createElement("h2");
    title.textContent = `${i < 9 ? i + 1 : "–"} · ${type.name} (${type.count})`;
    const grid = document.createElement("div");
    grid.className = "grid";
    for (const photo of photos.filter((p) => p.type === type.name)) {
      const button = document.createElement("button");
      button.className = "photo" + (selected.has(photo.id) ? " selected" : "") + (photo.moved ? " moved" : "");
      button.dataset.id = photo.id;
      button.tabIndex = -1;
      const image = document.createElement("img");
      image.src = `/api/types/photos/${photo.index}/thumb`;
      image.loading = "lazy";
      image.alt = photo.id;
      const label = document.createElement("span");
      label.textContent = photo.id;
      button.append(image, label);
      button.addEventListener("click", (event) => click(photo.id, event));
      grid.append(button);
      order.push(photo.id);
    }
    section.append(title, grid);
    main.append(section);
  });
  $("summary").textContent = `${photos.length} photos in ${types.length} types · ${selected.size} selected`;
  if (focusId && order.includes(focusId)) button(focusId).focus({ preventScroll: false });
  document.body.dataset.state = "ready";
}

const button = (id) => document.querySelector(`button.photo[data-id="${CSS.escape(id)}"]`);
const typeOf = (id) => photos.find((p) => p.id === id).type;

function click(id, event) {
  if (event.shiftKey && anchorId) selectRange(anchorId, id);
  else if (event.ctrlKey || event.metaKey) toggle(id);
  else { selected.clear(); selected.add(id); anchorId = id; }
  focusId = id;
  render();
}

function toggle(id) { if (selected.has(id)) selected.delete(id); else selected.add(id); anchorId = id; }

function selectRange(from, to) {
  const [a, b] = [order.indexOf(from), order.indexOf(to)].sort((x, y) => x - y);
  for (const id of order.slice(a, b + 1)) selected.add(id);
}

function columns() {
  // Photos per row in the focused photo's grid: those on the first row share its top offset.
  const grid = focusId ? button(focusId).parentElement : null;
  if (!grid || !grid.children.length) return 1;
  const top = grid.children[0].offsetTop;
  return Math.max(1, [...grid.children].filter((c) => c.offsetTop === top).length);
}

function moveFocus(step, extend) {
  if (!order.length) return;
  const from = focusId ? order.indexOf(focusId) : -1;
  const to = Math.min(Math.max(from + step, 0), order.length - 1);
  focusId = order[to];
  if (extend) { anchorId = anchorId || order[Math.max(from, 0)]; selectRange(anchorId, focusId); }
  render();
}

async function moveSelection(name) {
  const reviewer = $("reviewer").value.trim();
  if (!reviewer) { setStatus("Type your name in the Reviewer field first: moves are recorded under it."); $("reviewer").focus(); return; }
  const ids = [...selected].filter((id) => typeOf(id) !== name);
  if (!ids.length) return;
  document.body.dataset.state = "busy";
  try {
    const undo = ids.map((id) => ({ id, from: typeOf(id) }));
    const { moved } = await api("/api/types/move", { ids, to: name, reviewer });
    undoStack.push(undo);
    selected.clear();
    await load();
    setStatus(`Moved ${moved} photo${moved === 1 ? "" : "s"} to ${name}.`);
  } catch (err) { fail(err); }
}

async function undo() {
  const last = undoStack.pop();
  if (!last) return;
  document.body.dataset.state = "busy";
  try {
    const byType = new Map();
    for (const { id, from } of last) byType.set(from, [...(byType.get(from) || []), id]);
    for (const [name, ids] of byType) await api("/api/types/move", { ids, to: name, reviewer: $("reviewer").value.trim() });
    await load();
    setStatus(`Undone: ${last.length} photo${last.length === 1 ? "" : "s"} back.`);
  } catch (err) { fail(err); }
}

function setStatus(text) { $("status").textContent = text; }

function fail(err) { document.body.dataset.state = "error"; setStatus(`Error: ${err.message || err}`); }

document.addEventListener("keydown", (event) => {
  if (event.target instanceof HTMLInputElement || $("new-type").open) return;
  const ctrl = event.ctrlKey || event.metaKey;
  let handled = true;
  if (ctrl && event.code === "KeyZ") undo();
  else if (ctrl && event.code === "KeyA") {
    if (focusId) { const type = typeOf(focusId); for (const p of photos) if (p.type === type) selected.add(p.id); render(); }
  } else if (ctrl || event.altKey) handled = false;
  else if (event.key === "ArrowRight") moveFocus(1, event.shiftKey);
  else if (event.key === "ArrowLeft") moveFocus(-1, event.shiftKey);
  else if (event.key === "ArrowDown") moveFocus(columns(), event.shiftKey);
  else if (event.key === "ArrowUp") moveFocus(-columns(), event.shiftKey);
  else if (event.code === "Space") { if (focusId) { toggle(focusId); render(); } }
  else if (event.key === "Escape") { selected.clear(); render(); }
  else if (/^[1-9]$/.test(event.key) && types[Number(event.key) - 1]) moveSelection(types[Number(event.key) - 1].name);
  else if (event.code === "KeyN" && selected.size) { $("type-name").value = ""; $("new-type").showModal(); }
  else handled = false;
  if (handled) event.preventDefault();
});

$("type-name").addEventListener("keydown", (event) => {
  // Enter moves (the form's first button is Cancel, which a plain Enter would press).
  if (event.key === "Enter" && $("type-name").value.trim()) { event.preventDefault(); $("new-type").close("ok"); }
});

$("new-type").addEventListener("close", () => {
  const name = $("type-name").value.trim();
  if ($("new-type").returnValue === "ok" && name) moveSelection(name);
  $("new-type").returnValue = "";
});

$("reviewer").addEventListener("change", () => localStorage.setItem("clearbg.reviewer", $("reviewer").value.trim()));

// What tests need: the selection and focus, nothing that bypasses the page.
window.types = { state: () => ({ selected: [...selected].sort(), focus: focusId, types: types.map((t) => t.name) }) };

(async function start() {
  $("reviewer").value = new URLSearchParams(location.search).get("reviewer") || localStorage.getItem("clearbg.reviewer") || "";
  try { await load(); } catch (err) { fail(err); }
})();
