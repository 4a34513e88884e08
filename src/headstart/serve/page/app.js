// The headstart page: predict, train. Plain JavaScript, no library, no network beyond
// this server; common.js (loaded first) holds the token and fetch.
"use strict";

// ------------------------------------------------------------------ the model

async function loadModel() {
  const info = $("model-info");
  try {
    const response = await api("/v1/model");
    if (response.status === 503) {
      info.textContent = "No model yet: train one below.";
    } else if (!response.ok) {
      info.textContent = await detail(response);
    } else {
      const model = await response.json();
      $("explain-choice").hidden = !model.explain; // an ONNX model has no heatmaps
      if (!model.explain) $("explain").checked = false;
      const accuracy = model.metrics && model.metrics.test && model.metrics.test.accuracy;
      info.textContent =
        `${model.strategy} on ${model.backbone}: ${model.classes.length} classes ` +
        `(${model.classes.join(", ")})` +
        (accuracy !== undefined ? `, test accuracy ${(accuracy * 100).toFixed(1)} %` : "");
    }
  } catch (error) {
    info.textContent = error.message;
  }
  loadTraining();
  loadLabelling();
}

// A server started with --unlabelled POOL has a labelling page: link to it.
async function loadLabelling() {
  try {
    $("label-link").hidden = !(await api("/v1/label")).ok;
  } catch {
    // no token yet: the token form is showing
  }
}

// ------------------------------------------------------------------ predict

// What a browser draws from the file itself; anything else (DICOM, TIFF, a file named
// IM0001) is shown from the server's preview: the picture the model saw, windowed.
const DRAWABLE = /^image\/(png|jpeg|gif|webp|bmp|avif|svg\+xml)$/;

async function predict(files) {
  files = [...files];
  if (!files.length) return;
  const status = $("predict-status");
  status.textContent = `Predicting ${files.length} image${files.length > 1 ? "s" : ""}…`;
  const form = new FormData();
  for (const file of files) form.append("files", file, file.name);
  const topK = Math.max(1, parseInt($("top-k").value, 10) || 3);
  const preview = files.some((file) => !DRAWABLE.test(file.type)) ? "&preview=true" : "";
  try {
    const explain = $("explain").checked ? "&explain=true" : "";
    const query = `top_k=${topK}${preview}${explain}`;
    const response = await api(`/v1/predict?${query}`, { method: "POST", body: form });
    if (!response.ok) {
      status.textContent = await detail(response);
      return;
    }
    const answer = await response.json();
    const list = $("results");
    list.replaceChildren();
    answer.predictions.forEach((entry, i) => list.append(resultItem(entry, files[i])));
    const bad = answer.predictions.filter((p) => p.error).length;
    status.textContent = `${answer.predictions.length - bad} predicted` + (bad ? `, ${bad} could not be read` : "") + ".";
  } catch (error) {
    status.textContent = error.message;
  }
}

function resultItem(entry, file) {
  const item = el("li", { className: entry.error ? "result bad" : "result" });
  item.dataset.name = entry.name;
  // The server's preview where it sent one (always for DICOM), else the file itself.
  const src = entry.preview || (file && DRAWABLE.test(file.type) ? URL.createObjectURL(file) : "");
  if (!entry.error && src) {
    item.append(el("img", { src, alt: "" }));
  }
  if (entry.heatmap && entry.heatmap.startsWith("data:image/png;base64,")) {
    const alt = `Where the model looked for ${entry.class}`;
    item.append(el("img", { className: "heatmap", src: entry.heatmap, alt, title: alt }));
  }
  const text = el("div", {}, el("p", { className: "name", textContent: entry.name }));
  if (entry.error) {
    text.append(el("p", { className: "error", textContent: "Could not read: " + entry.error }));
  } else {
    const top = el("ol", { className: "top" });
    for (const { class: name, probability } of entry.top) {
      const percent = (probability * 100).toFixed(1) + " %";
      const bar = el("div", { className: "bar" }, el("span"));
      bar.firstChild.style.width = (probability * 100).toFixed(1) + "%";
      bar.setAttribute("role", "img");
      bar.setAttribute("aria-label", `${name}: ${percent}`);
      top.append(el("li", {}, el("span", { className: "class", textContent: `${name} ${percent}` }), bar));
    }
    text.append(top);
  }
  item.append(text);
  return item;
}

function setUpDropZone() {
  const zone = $("drop-zone");
  const input = $("images");
  zone.addEventListener("click", (event) => {
    if (event.target === zone || event.target.tagName === "P") input.click();
  });
  for (const name of ["dragenter", "dragover"]) {
    zone.addEventListener(name, (event) => {
      event.preventDefault();
      zone.classList.add("over");
    });
  }
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    predict(event.dataTransfer.files);
  });
  input.addEventListener("change", () => {
    predict(input.files);
    input.value = "";
  });
}

// ------------------------------------------------------------------ train

async function loadTraining() {
  let response;
  try {
    response = await api("/v1/train");
  } catch {
    return;
  }
  if (!response.ok) return; // this server does not train
  const info = await response.json();
  $("train-section").hidden = false;
  const select = $("strategy");
  if (!select.options.length) {
    for (const name of info.strategies) select.append(el("option", { value: name, textContent: name }));
    select.value = info.strategies.includes("feature-extraction") ? "feature-extraction" : info.strategies[0];
  }
  $("epochs").max = info.max_epochs;
  $("server-choice").hidden = !info.server_data;
  $("data-name").textContent = info.data_name ? `(${info.data_name})` : "";
  const source = info.server_data ? "source-server" : "source-upload";
  if (!document.querySelector("input[name=source]:checked")) $(source).checked = true;
}

function logLine(text) {
  const log = $("train-log");
  log.append(el("li", { textContent: text }));
  log.scrollTop = log.scrollHeight;
}

async function train(event) {
  event.preventDefault();
  const button = $("train-button");
  const source = document.querySelector("input[name=source]:checked").value;
  const params = new URLSearchParams({ strategy: $("strategy").value, source });
  if ($("epochs").value) params.set("epochs", $("epochs").value);
  const options = { method: "POST" };
  if (source === "upload") {
    const zip = $("zip").files[0];
    if (!zip) {
      $("train-status").textContent = "Pick a zip file first.";
      $("progress-box").hidden = false;
      return;
    }
    options.body = zip;
    options.headers = { "Content-Type": "application/zip" };
  }
  button.disabled = true;
  $("progress-box").hidden = false;
  $("report-box").hidden = true;
  $("train-log").replaceChildren();
  $("train-progress").value = 0;
  $("train-status").textContent = "Starting…";
  try {
    const response = await api("/v1/train?" + params, options);
    if (!response.ok) {
      $("train-status").textContent = await detail(response);
      return;
    }
    const job = await response.json();
    await follow(job.id, (event) => onEvent(job.id, event));
  } catch (error) {
    $("train-status").textContent = error.message;
  } finally {
    button.disabled = false;
  }
}

const runs = { index: 0, total: 1 };

async function onEvent(jobId, event) {
  const status = $("train-status");
  const bar = $("train-progress");
  switch (event.type) {
    case "data":
      logLine(`${event.train_images} training and ${event.test_images} test images, classes ${event.classes.join(", ")}` +
        (event.skipped ? `; ${event.skipped} files could not be read` : ""));
      break;
    case "run":
      Object.assign(runs, { index: event.index, total: event.total + 1 });
      status.textContent = `Run ${event.index} of ${event.total}: ${event.run}`;
      bar.value = (event.index - 1) / runs.total;
      logLine(status.textContent);
      break;
    case "run_end":
      logLine(event.status === "ok"
        ? `${event.id}: test accuracy ${(event.accuracy * 100).toFixed(1)} % (${event.train_seconds.toFixed(1)} s)`
        : `${event.id}: failed (${event.error})`);
      bar.value = runs.index / runs.total;
      break;
    case "stage":
      logLine(`${event.name}: ${event.detail}`);
      break;
    case "epoch":
      status.textContent = `${event.stage} epoch ${event.epoch}: train loss ${event.train_loss.toFixed(3)}`;
      break;
    case "step":
      status.textContent = `epoch ${event.epoch}: step ${event.step} of ${event.steps}`;
      break;
    case "progress":
      status.textContent = `${event.label}: ${event.done} of ${event.total}`;
      break;
    case "report": {
      const response = await api(`/v1/train/${jobId}/report`);
      if (response.ok) {
        $("report").srcdoc = await response.text();
        $("report-box").hidden = false;
      }
      bar.value = (runs.total - 1) / runs.total;
      break;
    }
    case "model":
      logLine(`New model served: test accuracy ${(event.test_accuracy * 100).toFixed(1)} %`);
      break;
    case "error":
      status.textContent = "Training failed: " + event.message;
      logLine(status.textContent);
      break;
    case "end":
      if (event.status === "done") {
        bar.value = 1;
        status.textContent = "Done: the new model is served. Predict with it above.";
        loadModel();
      }
      return "end";
  }
  return "";
}

// ------------------------------------------------------------------ start

setUpToken(loadModel);
$("train-form").addEventListener("submit", train);
setUpDropZone();
loadModel();
