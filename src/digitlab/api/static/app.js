// digitlab drawing page: draw on the canvas, and the model's answer follows as you draw.
// Plain JavaScript, no build step, nothing loaded from elsewhere.
"use strict";

const PEN_WIDTH = 18; // px of the 280-px canvas: about MNIST's stroke once shrunk to 20 px
const THROTTLE_MS = 150; // at most one prediction request this often while drawing

const pad = document.getElementById("pad");
const context = pad.getContext("2d");
const statusLine = document.getElementById("status");
const digitOut = document.getElementById("digit");
const confidence = document.getElementById("confidence");
const seen = document.getElementById("seen");
const bars = document.getElementById("bars");
const layersPanel = document.getElementById("layers");
const insideSeen = document.getElementById("inside-seen");
const saliencyImage = document.getElementById("saliency");
const seenFigure = seen.closest("figure");
const overlayFigure = saliencyImage.closest("figure");
const CELLS_PER_ROW = 50; // a Dense layer's units wrap into rows of this many cells

let classNames = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
let hasInk = false;
let drawing = null; // the pointer drawing now, and its last point
let showingPicture = false; // an upload or test digit is on the canvas: drawing starts fresh
let timer = null;
let inFlight = false;
let again = false;
let requestId = 0;

function clearPad() {
  context.fillStyle = "#fff";
  context.fillRect(0, 0, pad.width, pad.height);
  hasInk = false;
  showingPicture = false;
}

function say(message, isError = false) {
  statusLine.textContent = message;
  statusLine.classList.toggle("error", isError);
}

function buildBars() {
  bars.replaceChildren();
  classNames.forEach((name, i) => {
    const row = document.createElement("li");
    row.dataset.digit = String(i);
    row.innerHTML =
      '<span class="label"></span><span class="track"><span class="bar"></span></span>' +
      '<span class="value">–</span>';
    row.querySelector(".label").textContent = name;
    bars.append(row);
  });
}

// The verdict (issues 12 and 22): the server's one rule, digitlab.confidence.judge, decides
// `confident` and `reason`, and digitlab.conformal the `prediction_set`; the page only words
// them. The probability is the network's own number, never called "sure".
const VERDICT_WORDS = {
  confident:
    "Confident: no other digit comes close, and other networks, built differently, read the same.",
  "not a digit":
    "Not a digit? It is unlike every digit the network learned from, so its answer means little.",
  unsure:
    "Unsure: another digit comes close, or another network, built differently, reads another digit.",
};
const SET_NOTE =
  "(sets like this held the true digit 95% of the time on digits the network never saw)";

function probabilityText(p) {
  return p >= 0.9995 ? "probability above 0.999" : `probability ${p.toFixed(3)}`;
}

function setWords(digits) {
  const names = digits.map((d) => classNames[d] ?? String(d));
  if (names.length === classNames.length && names.length > 2) return `any of the ${names.length}`;
  if (names.length <= 1) return names.join("");
  return `${names.slice(0, -1).join(", ")} or ${names.at(-1)}`;
}

function showVerdict(result) {
  const words = document.getElementById("verdict-words");
  const known = typeof result.confident === "boolean";
  const key = result.confident ? "confident" : result.reason;
  words.textContent = known ? VERDICT_WORDS[key] || VERDICT_WORDS.unsure : "";
  words.hidden = !known;
  words.classList.toggle("trusted", result.confident === true);
  digitOut.classList.toggle("doubtful", result.confident === false);
  document.getElementById("probability-note").hidden = !("probabilities" in result);

  const set = document.getElementById("set");
  set.replaceChildren();
  const digits = result.prediction_set;
  set.hidden = !Array.isArray(digits) || digits.length === 0;
  if (set.hidden) return;
  const lead = result.reason === "not a digit" ? "If it is a digit at all, it is " : "95% set: ";
  const strong = document.createElement("strong");
  strong.textContent = setWords(digits);
  set.append(lead, strong, ` ${SET_NOTE}`);
  set.dataset.digits = digits.join(",");
}

function showPrediction(result) {
  digitOut.textContent = result.label;
  digitOut.classList.remove("idle");
  seenFigure.hidden = false;
  confidence.textContent = probabilityText(result.probabilities[result.digit]);
  showVerdict(result);
  seen.src = `data:image/png;base64,${result.preprocessed}`;
  bars.querySelectorAll("li").forEach((row, i) => {
    const p = result.probabilities[i] ?? 0;
    row.querySelector(".bar").style.width = `${(p * 100).toFixed(1)}%`;
    row.querySelector(".value").textContent = p.toFixed(2);
    row.classList.toggle("top", i === result.digit);
  });
}

// "Inside the network": one canvas per layer, a cell per Dense unit (or the conv layer's
// feature maps side by side), coloured dark (0) to bright (the layer's largest activation).
function cellColour(value) {
  const t = Math.max(0, Math.min(1, value));
  return `hsl(${Math.round(250 - 210 * t)}, 85%, ${Math.round(12 + 50 * t)}%)`;
}

function layerRow(index, layer) {
  let row = layersPanel.children[index];
  if (!row) {
    row = document.createElement("div");
    row.className = "layer";
    row.innerHTML = '<span class="layer-name"></span><canvas></canvas>';
    layersPanel.append(row);
  }
  row.dataset.layer = layer.name;
  row.querySelector(".layer-name").textContent =
    `${layer.name}: ${layer.type}, ${layer.activation}, ${layer.shape.join("×")}`;
  return row.querySelector("canvas");
}

function drawLayer(canvas, layer) {
  const grids = layer.maps ?? [chunk(layer.values, CELLS_PER_ROW)];
  const rows = Math.max(...grids.map((g) => g.length));
  const cols = grids.reduce((sum, g) => sum + g[0].length, 0) + grids.length - 1;
  const cell = 8;
  canvas.width = cols * cell;
  canvas.height = rows * cell;
  const draw = canvas.getContext("2d");
  draw.clearRect(0, 0, canvas.width, canvas.height);
  const all = grids.flat(2);
  const top = Math.max(...all.map(Math.abs)) || 1;
  let left = 0;
  for (const grid of grids) {
    grid.forEach((line, r) =>
      line.forEach((value, c) => {
        draw.fillStyle = cellColour(value / top);
        draw.fillRect((left + c) * cell, r * cell, cell - 1, cell - 1);
      }),
    );
    left += grid[0].length + 1;
  }
  canvas.dataset.active = String(all.filter((v) => v > 0).length);
}

function chunk(values, size) {
  const rows = [];
  for (let i = 0; i < values.length; i += size) rows.push(values.slice(i, i + size));
  while (rows.length > 1 && rows.at(-1).length < size) rows.at(-1).push(0);
  return rows;
}

function showInside(result) {
  if (!Array.isArray(result.layers)) return; // an answer from /predict: nothing to show
  insideSeen.src = `data:image/png;base64,${result.preprocessed}`;
  saliencyImage.src = `data:image/png;base64,${result.saliency}`;
  overlayFigure.hidden = false;
  result.layers.forEach((layer, i) => drawLayer(layerRow(i, layer), layer));
  while (layersPanel.children.length > result.layers.length) layersPanel.lastChild.remove();
}

function resetInside() {
  insideSeen.removeAttribute("src");
  saliencyImage.removeAttribute("src");
  overlayFigure.hidden = true;
  layersPanel.replaceChildren();
}

function resetPrediction() {
  digitOut.textContent = "–";
  digitOut.classList.add("idle");
  confidence.textContent = "no prediction yet";
  showVerdict({});
  seen.removeAttribute("src");
  seenFigure.hidden = true;
  bars.querySelectorAll("li").forEach((row) => {
    row.querySelector(".bar").style.width = "0%";
    row.querySelector(".value").textContent = "–";
    row.classList.remove("top");
  });
}

async function post(body, url = "/predict") {
  const init = { method: "POST", body };
  if (typeof body === "string") init.headers = { "content-type": "application/json" };
  const response = await fetch(url, init);
  const payload = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(payload.detail || `the server answered ${response.status}`);
  return payload;
}

// One request at a time; strokes made meanwhile are sent when it returns.
async function predictCanvas() {
  timer = null;
  if (!hasInk) return;
  if (inFlight) {
    again = true;
    return;
  }
  inFlight = true;
  const id = ++requestId;
  try {
    const blob = await new Promise((resolve) => pad.toBlob(resolve, "image/png"));
    const form = new FormData();
    form.append("file", blob, "drawing.png");
    const result = await post(form, "/explain");
    if (id === requestId && hasInk) {
      showPrediction(result);
      showInside(result);
      say("Keep drawing, or Clear to start again.");
    }
  } catch (error) {
    if (id === requestId) say(error.message, true);
  } finally {
    inFlight = false;
    if (again) {
      again = false;
      predictCanvas();
    }
  }
}

function schedulePrediction() {
  if (timer === null) timer = setTimeout(predictCanvas, THROTTLE_MS);
}

function pointAt(event) {
  const box = pad.getBoundingClientRect();
  return {
    x: ((event.clientX - box.left) * pad.width) / box.width,
    y: ((event.clientY - box.top) * pad.height) / box.height,
  };
}

function strokeTo(point) {
  context.beginPath();
  context.moveTo(drawing.last.x, drawing.last.y);
  context.lineTo(point.x, point.y);
  context.stroke();
  drawing.last = point;
}

pad.addEventListener("pointerdown", (event) => {
  if (event.button !== 0) return;
  event.preventDefault();
  if (showingPicture) clearPad();
  pad.setPointerCapture(event.pointerId);
  context.strokeStyle = "#000";
  context.lineWidth = PEN_WIDTH;
  context.lineCap = "round";
  context.lineJoin = "round";
  const point = pointAt(event);
  drawing = { id: event.pointerId, last: point };
  strokeTo({ x: point.x + 0.01, y: point.y }); // a tap leaves a dot
  hasInk = true;
  schedulePrediction();
});

pad.addEventListener("pointermove", (event) => {
  if (!drawing || event.pointerId !== drawing.id) return;
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
  for (const e of events.length ? events : [event]) strokeTo(pointAt(e));
  schedulePrediction();
});

function endStroke(event) {
  if (!drawing || event.pointerId !== drawing.id) return;
  drawing = null;
  clearTimeout(timer);
  predictCanvas();
}
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);

document.getElementById("clear").addEventListener("click", () => {
  requestId++;
  clearPad();
  resetPrediction();
  resetInside();
  say("Cleared. Draw a digit.");
});

// Show a picture on the canvas, fitted inside it, so the user sees what was sent.
function showOnPad(source, width, height, background = "#fff") {
  clearPad();
  context.fillStyle = background;
  context.fillRect(0, 0, pad.width, pad.height);
  const scale = Math.min(pad.width / width, pad.height / height);
  const w = width * scale;
  const h = height * scale;
  context.imageSmoothingEnabled = background === "#fff";
  context.drawImage(source, (pad.width - w) / 2, (pad.height - h) / 2, w, h);
  showingPicture = true;
}

document.getElementById("upload").addEventListener("change", async (event) => {
  const file = event.target.files[0];
  event.target.value = ""; // choosing the same file again still fires
  if (!file) return;
  const id = ++requestId;
  say(`Reading ${file.name}…`);
  try {
    const form = new FormData();
    form.append("file", file, file.name);
    const result = await post(form, "/explain");
    if (id !== requestId) return;
    try {
      const bitmap = await createImageBitmap(file);
      showOnPad(bitmap, bitmap.width, bitmap.height);
    } catch {
      clearPad(); // a format the browser can't show; the server read it anyway
    }
    showPrediction(result);
    showInside(result);
    say(`${file.name}: predicted ${result.label}.`);
  } catch (error) {
    if (id === requestId) say(`${file.name}: ${error.message}`, true);
  }
});

document.getElementById("random").addEventListener("click", async () => {
  const id = ++requestId;
  try {
    const response = await fetch("/random-test-digit");
    const result = await response.json();
    if (!response.ok) throw new Error(result.detail || `the server answered ${response.status}`);
    if (id !== requestId) return;
    const picture = new Image();
    picture.src = `data:image/png;base64,${result.preprocessed}`;
    await picture.decode();
    showOnPad(picture, picture.naturalWidth, picture.naturalHeight, "#000"); // the run's own size
    showPrediction(result);
    explainPicture(picture, id);
    const verdict = result.digit === result.expected ? "right" : "wrong";
    say(`Test digit #${result.index}, labelled ${classNames[result.expected]}: the model is ${verdict}.`);
  } catch (error) {
    if (id === requestId) say(error.message, true);
  }
});

// A test digit is already the run's 28×28: send its pixels, which skip preprocessing.
async function explainPicture(picture, id) {
  const small = document.createElement("canvas");
  small.width = picture.naturalWidth;
  small.height = picture.naturalHeight;
  const draw = small.getContext("2d");
  draw.drawImage(picture, 0, 0);
  const rgba = draw.getImageData(0, 0, small.width, small.height).data;
  const pixels = Array.from({ length: rgba.length / 4 }, (_, i) => rgba[4 * i]);
  try {
    const result = await post(JSON.stringify({ pixels }), "/explain");
    if (id === requestId) showInside(result);
  } catch {
    resetInside(); // the answer above still stands
  }
}

async function loadModelInfo() {
  const info = document.getElementById("model-info");
  try {
    const response = await fetch("/model");
    const model = await response.json();
    if (Array.isArray(model.class_names) && model.class_names.length) {
      classNames = model.class_names;
      buildBars();
    }
    const accuracy =
      model.test_accuracy == null ? "" : `, ${(model.test_accuracy * 100).toFixed(2)}% on the test set`;
    info.textContent = `run ${model.run} (${model.preset ?? "custom"} on ${model.dataset}${accuracy})`;
  } catch {
    info.textContent = "model information unavailable";
  }
}

clearPad();
buildBars();
loadModelInfo();
