// The labelling page: classes, the pool, one-by-one labelling from the keyboard,
// export. common.js (the token, fetch) and retrain.js (retraining, the curve) load first.
"use strict";

const POOL_PAGE = 24; // thumbnails per page of the pool
const SUGGESTIONS = 10; // asked for at once
const DRAGGED = "application/x-headstart-pool"; // what a dragged thumbnail carries

const view = {
  classes: [], // [{name, count, key}] as the server last said
  queue: [], // suggestions still to label, the first shown
  picked: new Set(), // pool paths picked on this page of the pool
  offset: 0, // the pool page shown
  total: 0, // unlabelled images in the pool
};

// ------------------------------------------------------------------ the project

async function loadSummary() {
  const info = $("label-info");
  let response;
  try {
    response = await api("/v1/label");
  } catch (error) {
    info.textContent = error.message;
    return;
  }
  if (response.status === 404) {
    info.textContent = "This server has no labelling: start it with --data DIR --unlabelled POOL.";
    return;
  }
  if (!response.ok) {
    info.textContent = await detail(response);
    return;
  }
  const summary = await response.json();
  const kept = summary.labels_as === "csv" ? "a labels CSV" : "class folders";
  info.textContent =
    `${plural(summary.labelled, "image")} labelled, ${summary.unlabelled} still unlabelled in ` +
    `${summary.pool}; labels go into ${summary.project} as ${kept}.`;
  showSummary(summary);
}

// Classes, their counts and keys, the pickers and the curve, from a summary.
function showSummary(summary) {
  view.classes = summary.classes;
  const list = $("classes");
  list.replaceChildren();
  for (const { name, count, key } of summary.classes) {
    const item = el(
      "li",
      { className: "class-tile" },
      el("span", { className: "key", textContent: key ? String(key) : "" }),
      el("span", { className: "class-name", textContent: name }),
      el("span", { className: "count", textContent: plural(count, "image") }),
    );
    item.dataset.class = name;
    setUpDropTarget(item, name);
    list.append(item);
  }
  if (!summary.classes.length) list.append(el("li", { textContent: "No classes yet: create one below." }));
  for (const id of ["rename-old", "pick-class"]) {
    const select = $(id);
    const chosen = select.value;
    select.replaceChildren(...summary.classes.map(({ name }) => el("option", { value: name, textContent: name })));
    if (summary.classes.some(({ name }) => name === chosen)) select.value = chosen;
  }
  showCurve(summary.curve || []);
  if (view.queue.length) showCard();
}

async function postJSON(path, body) {
  return api(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
}

async function createClass(event) {
  event.preventDefault();
  const name = $("class-name").value.trim();
  const status = $("classes-status");
  const response = await postJSON("/v1/label/classes", { name });
  if (!response.ok) {
    status.textContent = await detail(response);
    return;
  }
  $("class-name").value = "";
  status.textContent = `Class ${name} created.`;
  await loadSummary();
}

async function renameClass(event) {
  event.preventDefault();
  const old = $("rename-old").value;
  const name = $("rename-new").value.trim();
  const status = $("classes-status");
  const response = await postJSON("/v1/label/rename", { old, new: name });
  if (!response.ok) {
    status.textContent = await detail(response);
    return;
  }
  $("rename-new").value = "";
  status.textContent = `Class ${old} renamed to ${name}.`;
  view.queue.forEach((item) => {
    if (item.suggested_label === old) item.suggested_label = name;
  });
  await loadSummary();
}

// Label pool images (paths inside the pool) as `name`; true when the server kept them.
async function label(paths, name, status) {
  const labels = paths.map((path) => ({ path, label: name }));
  let response;
  try {
    response = await postJSON("/v1/label/labels", { labels });
  } catch (error) {
    status.textContent = error.message;
    return false;
  }
  if (!response.ok) {
    status.textContent = await detail(response);
    return false;
  }
  const shown = paths.length === 1 ? paths[0] : plural(paths.length, "image");
  status.textContent = `Labelled ${shown} as ${name}.`;
  for (const path of paths) view.picked.delete(path);
  const shownBefore = view.queue[0];
  view.queue = view.queue.filter((item) => !paths.includes(item.path));
  if (view.queue[0] !== shownBefore) advance(); // the next image at once, counts after
  await Promise.all([loadSummary(), loadPool()]);
  return true;
}

// ------------------------------------------------------------------ the pool

async function loadPool() {
  const response = await api(`/v1/label/pool?offset=${view.offset}&limit=${POOL_PAGE}`);
  if (!response.ok) {
    $("pool-status").textContent = await detail(response);
    return;
  }
  const page = await response.json();
  view.total = page.total;
  if (view.offset && view.offset >= page.total) {
    view.offset = Math.max(0, view.offset - POOL_PAGE);
    return loadPool();
  }
  const list = $("pool");
  list.replaceChildren(...page.images.map(thumbnail));
  const last = Math.min(view.offset + page.images.length, page.total);
  $("pool-status").textContent = page.total
    ? `Images ${view.offset + 1} to ${last} of ${page.total} unlabelled.`
    : "Every pool image is labelled.";
  $("pool-previous").disabled = view.offset === 0;
  $("pool-next").disabled = last >= page.total;
  $("pool-pages").hidden = page.total <= POOL_PAGE;
}

function thumbnail({ path, preview }) {
  const button = el("button", { type: "button", className: "thumb", draggable: true, title: path });
  button.dataset.path = path;
  button.setAttribute("aria-pressed", String(view.picked.has(path)));
  if (preview) button.append(el("img", { src: preview, alt: "", draggable: false }));
  button.append(el("span", { textContent: path }));
  button.addEventListener("click", () => {
    const picked = !view.picked.has(path);
    if (picked) view.picked.add(path);
    else view.picked.delete(path);
    button.setAttribute("aria-pressed", String(picked));
  });
  button.addEventListener("dragstart", (event) => {
    // Dragging a picked image carries every picked one; another image, itself alone.
    const paths = view.picked.has(path) ? [...view.picked] : [path];
    event.dataTransfer.setData(DRAGGED, JSON.stringify(paths));
    event.dataTransfer.effectAllowed = "copy";
  });
  return el("li", {}, button);
}

function setUpDropTarget(item, name) {
  item.addEventListener("dragover", (event) => {
    if (!event.dataTransfer.types.includes(DRAGGED)) return;
    event.preventDefault();
    item.classList.add("over");
  });
  item.addEventListener("dragleave", () => item.classList.remove("over"));
  item.addEventListener("drop", (event) => {
    event.preventDefault();
    item.classList.remove("over");
    let paths;
    try {
      paths = JSON.parse(event.dataTransfer.getData(DRAGGED));
    } catch {
      return;
    }
    if (Array.isArray(paths) && paths.length) label(paths.map(String), name, $("pool-status"));
  });
}

async function labelPicked() {
  const name = $("pick-class").value;
  const status = $("pool-status");
  if (!view.picked.size) status.textContent = "Pick images first (click them).";
  else if (!name) status.textContent = "Create a class first.";
  else await label([...view.picked], name, status);
}

// ------------------------------------------------------------------ one by one

async function suggest() {
  const status = $("suggest-status");
  const button = $("suggest-button");
  button.disabled = true;
  status.textContent = "Choosing the images to label next…";
  try {
    const response = await api(`/v1/label/suggestions?n=${SUGGESTIONS}`);
    if (!response.ok) {
      status.textContent = await detail(response);
      return;
    }
    const answer = await response.json();
    view.queue = answer.suggestions;
    const how = answer.mode === "cold start" ? "typical images of the pool (no model yet)" : "where the model is least sure";
    status.textContent = view.queue.length
      ? `${plural(view.queue.length, "image")} to label, ${how}.`
      : "Nothing left to suggest: every pool image is labelled.";
    showCard();
    if (view.queue.length) $("card").focus();
  } catch (error) {
    status.textContent = error.message;
  } finally {
    button.disabled = false;
  }
}

// The first suggestion, with a button per class; the model's guess is preselected.
function showCard() {
  const card = $("card");
  const item = view.queue[0];
  card.hidden = !item;
  if (!item) return;
  $("card-image").src = item.preview || "";
  $("card-image").alt = item.path;
  $("card-name").textContent = item.path;
  $("card-reason").textContent = item.reason;
  const guess = view.classes.some(({ name }) => name === item.suggested_label) ? item.suggested_label : null;
  $("card-guess").textContent = guess
    ? `The model's guess: ${guess} (${percent(item.probability)}). Enter takes it.`
    : "No guess from the model yet: pick a class.";
  const buttons = view.classes.map(({ name, key }) => {
    const button = el("button", { type: "button", className: "choice", textContent: key ? `${key} ${name}` : name });
    button.dataset.class = name;
    button.setAttribute("aria-pressed", String(name === guess));
    button.addEventListener("click", () => labelCurrent(name));
    return button;
  });
  $("card-classes").replaceChildren(...buttons);
}

async function labelCurrent(name) {
  const item = view.queue[0];
  if (item) await label([item.path], name, $("suggest-status"));
}

// The next suggestion is shown (or, when none is left, the way to more).
function advance() {
  showCard();
  if (!view.queue.length) {
    $("suggest-status").textContent += " No suggestions left: ask for more, or retrain first.";
    $("suggest-button").focus();
  }
}

function skip() {
  const item = view.queue.shift();
  if (!item) return;
  $("suggest-status").textContent = `Skipped ${item.path}.`;
  advance();
}

function onKey(event) {
  if (event.ctrlKey || event.metaKey || event.altKey || $("card").hidden) return;
  const target = event.target;
  if (target.closest && target.closest("input, select, textarea")) return;
  if (/^[1-9]$/.test(event.key)) {
    const found = view.classes.find(({ key }) => String(key) === event.key);
    if (found) {
      event.preventDefault();
      labelCurrent(found.name);
    }
  } else if (event.key === "s" || event.key === "S") {
    event.preventDefault();
    skip();
  } else if (event.key === "Enter" && !target.closest("button, a")) {
    const chosen = document.querySelector('#card-classes [aria-pressed="true"]');
    if (chosen) {
      event.preventDefault();
      labelCurrent(chosen.dataset.class);
    }
  }
}

// ------------------------------------------------------------------ export

async function exportLabels(to) {
  const status = $("export-status");
  const format = document.querySelector("input[name=export-format]:checked").value;
  status.textContent = "Exporting…";
  try {
    const response = await api(`/v1/label/export?format=${format}&to=${to}`, { method: "POST" });
    if (!response.ok) {
      status.textContent = await detail(response);
      return;
    }
    if (to === "server") {
      const done = await response.json();
      status.textContent = `${plural(done.images, "image")} written under the server's out folder, in ${done.written}.`;
      return;
    }
    const link = el("a", { href: URL.createObjectURL(await response.blob()), download: `labelled-${format}.zip` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
    status.textContent = `Downloaded labelled-${format}.zip.`;
  } catch (error) {
    status.textContent = error.message;
  }
}

// ------------------------------------------------------------------ start

function start() {
  loadSummary();
  loadPool().catch((error) => ($("pool-status").textContent = error.message));
}

// Another tab may have labelled meanwhile: coming back to this one shows its counts.
function onVisible() {
  if (document.visibilityState === "visible") start();
}

setUpToken(start);
$("class-form").addEventListener("submit", createClass);
$("rename-form").addEventListener("submit", renameClass);
$("pick-button").addEventListener("click", labelPicked);
$("suggest-button").addEventListener("click", suggest);
$("skip-button").addEventListener("click", skip);
$("retrain-button").addEventListener("click", retrain);
$("export-download").addEventListener("click", () => exportLabels("download"));
$("export-server").addEventListener("click", () => exportLabels("server"));
$("pool-previous").addEventListener("click", () => {
  view.offset = Math.max(0, view.offset - POOL_PAGE);
  loadPool();
});
$("pool-next").addEventListener("click", () => {
  view.offset += POOL_PAGE;
  loadPool();
});
document.addEventListener("keydown", onKey);
document.addEventListener("visibilitychange", onVisible);
start();
