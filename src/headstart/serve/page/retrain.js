// Retraining from the labelling page, and the label-saving curve: test accuracy after
// each retrain against the labels it had, drawn as inline SVG (no library), with a
// table of the same numbers. Uses common.js; label.js calls in here.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const CURVE = { width: 480, height: 220, left: 44, right: 12, top: 12, bottom: 36 };

function svg(tag, attributes = {}, text = "") {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  if (text) node.textContent = text;
  return node;
}

// `points`: [{labels, accuracy}] in the order the retrains ran.
function drawCurve(container, points) {
  const { width, height, left, right, top, bottom } = CURVE;
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "curve", "aria-hidden": "true" });
  const most = Math.max(1, ...points.map((p) => p.labels));
  const x = (labels) => left + (labels / most) * (width - left - right);
  const y = (accuracy) => top + (1 - accuracy) * (height - top - bottom);
  for (const tick of [0, 0.25, 0.5, 0.75, 1]) {
    chart.append(svg("line", { x1: left, x2: width - right, y1: y(tick), y2: y(tick), class: "grid" }));
    chart.append(svg("text", { x: left - 6, y: y(tick) + 4, "text-anchor": "end" }, `${tick * 100} %`));
  }
  for (const tick of [0, Math.round(most / 2), most]) {
    chart.append(svg("text", { x: x(tick), y: height - bottom + 16, "text-anchor": "middle" }, String(tick)));
  }
  chart.append(svg("text", { x: (left + width - right) / 2, y: height - 4, "text-anchor": "middle" }, "labels"));
  const sorted = [...points].sort((a, b) => a.labels - b.labels);
  const line = sorted.map((p) => `${x(p.labels).toFixed(1)},${y(p.accuracy).toFixed(1)}`).join(" ");
  chart.append(svg("polyline", { points: line, class: "line" }));
  for (const p of sorted) {
    const dot = svg("circle", { cx: x(p.labels), cy: y(p.accuracy), r: 4, class: "point" });
    dot.append(svg("title", {}, `${p.labels} labels: ${(p.accuracy * 100).toFixed(1)} %`));
    chart.append(dot);
  }
  container.replaceChildren(chart);
}

async function retrain() {
  const status = $("retrain-status");
  const button = $("retrain-button");
  button.disabled = true;
  status.textContent = "Starting…";
  try {
    const response = await api("/v1/label/retrain", { method: "POST" });
    if (!response.ok) {
      status.textContent = await detail(response);
      return;
    }
    const job = await response.json();
    await follow(job.id, onRetrainEvent);
    await loadSummary();
  } catch (error) {
    status.textContent = error.message;
  } finally {
    button.disabled = false;
  }
}

const retraining = { test: 0, train: 0 };

function onRetrainEvent(event) {
  const status = $("retrain-status");
  switch (event.type) {
    case "data":
      Object.assign(retraining, { test: event.test_images, train: event.train_images });
      status.textContent = `Training on ${event.train_images} images, testing on ${event.test_images}…`;
      break;
    case "progress":
      status.textContent = `${event.label}: ${event.done} of ${event.total}`;
      break;
    case "model":
      status.textContent =
        `Test accuracy ${percent(event.test_accuracy)} on ${plural(retraining.test, "test image")} ` +
        `(trained on ${retraining.train}); the new model is served.`;
      break;
    case "error":
      status.textContent = "Retraining failed: " + event.message;
      break;
    case "end":
      return "end";
  }
  return "";
}

function showCurve(points) {
  $("curve-box").hidden = !points.length;
  drawCurve($("curve"), points);
  const rows = points.map(({ labels, accuracy }) =>
    el("tr", {}, el("td", { textContent: String(labels) }), el("td", { textContent: percent(accuracy) })),
  );
  $("curve-table").tBodies[0].replaceChildren(...rows);
}
