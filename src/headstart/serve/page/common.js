// What both headstart pages share: the token, fetch through it, server-sent events.
// Plain JavaScript, no library, no network beyond this server.
"use strict";

const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("headstart-token") || "";

function headers(extra = {}) {
  return token ? { ...extra, Authorization: "Bearer " + token } : extra;
}

// fetch with the token; a 401 shows the token form and stops here.
async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers(options.headers) });
  if (response.status === 401) {
    $("token-section").hidden = false;
    $("token").focus();
    throw new Error("This server needs a valid token.");
  }
  return response;
}

async function detail(response) {
  try {
    const body = await response.json();
    return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
  } catch {
    return response.status + " " + response.statusText;
  }
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  for (const child of children) node.append(child);
  return node;
}

function plural(count, word) {
  return `${count} ${word}${count === 1 ? "" : "s"}`;
}

function percent(value) {
  return (value * 100).toFixed(1) + " %";
}

// The token form: the token is kept for this tab, then `start()` runs again.
function setUpToken(start) {
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    token = $("token").value.trim();
    sessionStorage.setItem("headstart-token", token);
    $("token-section").hidden = true;
    start();
  });
}

// A training job's server-sent events, read through fetch (so the token goes along as
// a header), each given to `onEvent(event)` until it answers "end" or the stream ends.
async function follow(jobId, onEvent) {
  const response = await api(`/v1/train/${jobId}/events`);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
      if (data && (await onEvent(JSON.parse(data))) === "end") return;
    }
  }
}
