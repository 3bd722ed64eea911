// The page of src/serve.py: a scene-graph editor, the generation request, and the players of its samples.
// Plain DOM code, no library: the page must work offline and be driven by a headless browser in the tests.
"use strict";

const $ = (id) => document.getElementById(id);
async function call(path, init) {
  try {
    const reply = await fetch(path, init);
    return {status: reply.status, data: await reply.json()};
  } catch (err) {  // the server stopped, or the network between
    return {status: 0, data: {error: `the server does not answer (${err.message})`, where: "request"}};
  }
}
const api = {
  post: (path, body) => call(path, {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)}),
  get: (path) => call(path),
};
const COLOURS = {red: "#f00", green: "#0f0", blue: "#44f", yellow: "#ff0", magenta: "#f0f", cyan: "#0ff", white: "#fff", orange: "#f80"};
let info = null;
// the graph being edited: names of objects, and segments of relations [subject index, predicate, object index]
const graph = {objects: [], timeline: false, segments: [{end: null, relations: [], boxes: null}]};
let job = null, pollTimer = null, checkTimer = null, checks = 0;
const runs = [];  // the last two results shown: [previous, current]

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith("data-")) node.setAttribute(k, v); else node[k] = v;
  }
  for (const child of children) node.append(child);
  return node;
}
function colourOf(name, k) {
  const word = name.split(" ")[0];
  return COLOURS[word] || `hsl(${(k * 67) % 360} 80% 60%)`;
}
function options(select, names, chosen) {
  select.replaceChildren(...names.map((n, i) => el("option", {value: String(i), textContent: n})));
  select.value = String(chosen);
}

// -- the graph <-> graph JSON (shared/specs/graph_json.md) --------------------------------------------------

function graphJSON() {
  const out = {objects: graph.objects.slice()};
  if (!graph.timeline) {
    out.relations = graph.segments[0].relations.map((r) => r.slice());
    if (graph.segments[0].boxes) out.boxes = graph.segments[0].boxes;
    return out;
  }
  let start = 0;
  out.timeline = graph.segments.map((s) => {
    const seg = {frames: [start, s.end], relations: s.relations.map((r) => r.slice())};
    if (s.boxes) seg.boxes = s.boxes;
    start = s.end;
    return seg;
  });
  return out;
}
function fromForm(form) {  // the server's editor form of a loaded file (sg2video.serve.requests.editor_form)
  graph.objects = form.objects.slice();
  graph.timeline = !form.static;
  graph.segments = form.segments.map((s) => ({end: s.frames ? s.frames[1] : null, relations: s.relations, boxes: s.boxes}));
  if (form.static) $("frames").value = "";
}
function request() {
  const number = (id) => ($(id).value === "" ? null : Number($(id).value));
  return {graph: graphJSON(), frames: graph.timeline ? null : number("frames"), num: number("num"),
          seed: number("seed"), steps: number("steps"), guidance: number("guidance"),
          sampler: $("sampler").value, layout: $("layout").value};
}

// -- the editor ---------------------------------------------------------------------------------------------

function addObject(name) {
  graph.objects.push(name);
  for (const s of graph.segments) if (s.boxes) s.boxes.push(null);
  changed();
}
function removeObject(k) {
  graph.objects.splice(k, 1);
  for (const s of graph.segments) {
    s.relations = s.relations.filter((r) => r[0] !== k && r[2] !== k)
      .map((r) => [r[0] > k ? r[0] - 1 : r[0], r[1], r[2] > k ? r[2] - 1 : r[2]]);
    if (s.boxes) s.boxes.splice(k, 1);
  }
  changed();
}
function relationRow(seg, j, where) {
  const rel = seg.relations[j];
  const names = graph.objects.map((n, k) => `${k}: ${n}`);
  const subject = el("select", {className: "subject", onchange: () => { rel[0] = Number(subject.value); changed(); }});
  const predicate = el("select", {className: "predicate", onchange: () => { rel[1] = info.predicates[Number(predicate.value)]; changed(); }});
  const object = el("select", {className: "object", onchange: () => { rel[2] = Number(object.value); changed(); }});
  options(subject, names, rel[0]);
  options(predicate, info.predicates, Math.max(0, info.predicates.indexOf(rel[1])));
  options(object, names, rel[2]);
  const flip = el("button", {type: "button", className: "flip", title: "swap subject and object", textContent: "\u21c4",
                             onclick: () => { seg.relations[j] = [rel[2], rel[1], rel[0]]; changed(); }});
  const drop = el("button", {type: "button", className: "remove", title: "remove", textContent: "\u00d7",
                             onclick: () => { seg.relations.splice(j, 1); changed(); }});
  return el("div", {className: "relation", "data-where": where}, subject, predicate, object, flip, drop, el("span", {className: "err"}));
}
// A segment's boxes, drawn and dragged on a canvas: drag on empty ground draws the chosen object's box, drag a box to
// move it, double-click a box to drop it. Boxes are [x0, y0, x1, y1] in [0, 1]; objects without one are null, and
// the layout model draws those (a graph without any box is the default: boxes are optional).
const BOX_SIDE = 192, MIN_BOX = 0.03;
function boxAt(seg, x, y) {  // the object whose box holds (x, y), the last drawn (topmost) first
  if (!seg.boxes) return -1;
  for (let k = seg.boxes.length - 1; k >= 0; k--) {
    const b = seg.boxes[k];
    if (b && x >= b[0] && x <= b[2] && y >= b[1] && y <= b[3]) return k;
  }
  return -1;
}
function drawBoxes(canvas, seg) {
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#111";
  ctx.fillRect(0, 0, BOX_SIDE, BOX_SIDE);
  ctx.strokeStyle = "#333";
  ctx.lineWidth = 1;
  for (let i = 1; i < 4; i++) {  // quarter lines, to place boxes by eye
    ctx.beginPath(); ctx.moveTo(i * BOX_SIDE / 4, 0); ctx.lineTo(i * BOX_SIDE / 4, BOX_SIDE); ctx.stroke();
    ctx.beginPath(); ctx.moveTo(0, i * BOX_SIDE / 4); ctx.lineTo(BOX_SIDE, i * BOX_SIDE / 4); ctx.stroke();
  }
  ctx.font = "12px sans-serif";
  (seg.boxes || []).forEach((b, k) => {
    if (!b) return;
    ctx.strokeStyle = ctx.fillStyle = colourOf(graph.objects[k], k);
    ctx.lineWidth = k === seg.target ? 3 : 2;
    ctx.strokeRect(b[0] * BOX_SIDE, b[1] * BOX_SIDE, (b[2] - b[0]) * BOX_SIDE, (b[3] - b[1]) * BOX_SIDE);
    ctx.fillText(`${k}`, b[0] * BOX_SIDE + 3, b[1] * BOX_SIDE + 12);
  });
}
function boxEditor(seg, where) {
  if (!(seg.target < graph.objects.length)) seg.target = 0;  // the object a new box is drawn for (not saved)
  const target = el("select", {className: "box-target", onchange: () => { seg.target = Number(target.value); drawBoxes(canvas, seg); }});
  options(target, graph.objects.map((n, k) => `${k}: ${n}`), seg.target);
  const canvas = el("canvas", {className: "box-canvas", width: BOX_SIDE, height: BOX_SIDE,
                               title: "drag: draw the chosen object's box; drag a box: move it; double-click: drop it"});
  const clamp = (v) => Math.min(1, Math.max(0, v));
  const at = (e) => { const r = canvas.getBoundingClientRect(); return [clamp((e.clientX - r.left) / r.width), clamp((e.clientY - r.top) / r.height)]; };
  const round = (b) => b.map((v) => Math.round(v * 1000) / 1000);
  let drag = null;
  canvas.onpointerdown = (e) => {
    const [x, y] = at(e);
    const k = boxAt(seg, x, y);
    drag = k >= 0 ? {move: k, from: [x, y], box: seg.boxes[k].slice()} : {draw: seg.target, from: [x, y]};
    canvas.setPointerCapture(e.pointerId);
  };
  canvas.onpointermove = (e) => {
    if (!drag) return;
    const [x, y] = at(e);
    if (drag.move !== undefined) {
      const b = drag.box, w = b[2] - b[0], h = b[3] - b[1];
      const x0 = Math.min(1 - w, Math.max(0, b[0] + x - drag.from[0])), y0 = Math.min(1 - h, Math.max(0, b[1] + y - drag.from[1]));
      seg.boxes[drag.move] = round([x0, y0, x0 + w, y0 + h]);
      drag.changed = drag.changed || x0 !== b[0] || y0 !== b[1];
    } else {
      if (Math.abs(x - drag.from[0]) < MIN_BOX || Math.abs(y - drag.from[1]) < MIN_BOX) return;  // a click, not yet a box
      if (!seg.boxes) seg.boxes = graph.objects.map(() => null);
      seg.boxes[drag.draw] = round([Math.min(x, drag.from[0]), Math.min(y, drag.from[1]), Math.max(x, drag.from[0]), Math.max(y, drag.from[1])]);
      drag.changed = true;
    }
    drawBoxes(canvas, seg);
  };
  canvas.onpointerup = () => {
    if (!drag) return;
    const done = drag;
    drag = null;
    if (!done.changed) {  // a click: a box clicked becomes the chosen object (the canvas stays, so a double-click can follow)
      if (done.move !== undefined) { seg.target = done.move; target.value = String(done.move); drawBoxes(canvas, seg); }
      return;
    }
    if (done.draw !== undefined && seg.target < graph.objects.length - 1) seg.target += 1;  // next object: a row of drags draws a row of boxes
    changed();
  };
  canvas.ondblclick = (e) => {
    const k = boxAt(seg, ...at(e));
    if (k < 0) return;
    seg.boxes[k] = null;
    if (seg.boxes.every((b) => b === null)) seg.boxes = null;
    changed();
  };
  drawBoxes(canvas, seg);
  return el("details", {className: "box-editor", open: Boolean(seg.boxes) || seg.open, ontoggle: (e) => { seg.open = e.target.open; }},
            el("summary", {textContent: seg.boxes ? "boxes (given)" : "boxes (optional: the layout model places objects)"}),
            el("div", {className: "row", "data-where": where}, "draw a box for ", target, el("span", {className: "err"})), canvas);
}
function render() {
  $("objects").replaceChildren(...graph.objects.map((name, k) => {
    const pick = el("select", {className: "object-class", onchange: () => { graph.objects[k] = info.objects[Number(pick.value)]; changed(); }});
    options(pick, info.objects, info.objects.indexOf(name));
    const swatch = el("span", {className: "swatch"});
    swatch.style.background = colourOf(name, k);
    return el("li", {className: "obj", "data-where": `objects[${k}]`}, swatch, pick,
              el("button", {type: "button", className: "remove", textContent: "\u00d7", title: "remove",
                            onclick: () => removeObject(k)}), el("span", {className: "err"}));
  }));
  $("timeline-mode").checked = graph.timeline;
  $("frames-row").hidden = graph.timeline;
  $("add-segment").hidden = !graph.timeline;
  let start = 0;
  const blocks = graph.segments.map((seg, i) => {
    const prefix = graph.timeline ? `timeline[${i}].` : "";
    const block = graph.timeline ? el("div", {className: "segment", "data-where": `timeline[${i}]`}, el("span", {className: "err"}))
                                 : el("div", {className: "segment"});
    if (graph.timeline) {
      const end = el("input", {type: "number", className: "segment-end", value: seg.end ?? "", min: 1,
                               onchange: () => { seg.end = end.value === "" ? null : Number(end.value); changed(); }});
      const drop = el("button", {type: "button", className: "remove", textContent: "\u00d7", title: "remove segment",
                                 disabled: graph.segments.length === 1,
                                 onclick: () => { graph.segments.splice(i, 1); changed(); }});
      block.append(el("div", {className: "row segment-head", "data-where": `timeline[${i}].frames`},
                      `frames ${start} to `, end, drop, el("span", {className: "err"})));
      start = seg.end ?? start;
    }
    block.append(el("div", {className: "rows", "data-where": `${prefix}relations`},
                    ...seg.relations.map((_, j) => relationRow(seg, j, `${prefix}relations[${j}]`)), el("span", {className: "err"})));
    block.append(el("button", {type: "button", className: "add-relation", textContent: "+ relation", disabled: !graph.objects.length,
                               onclick: () => { seg.relations.push([0, info.predicates[0], Math.min(1, graph.objects.length - 1)]); changed(); }}));
    if (graph.objects.length) block.append(boxEditor(seg, `${prefix}boxes`));
    return block;
  });
  $("segments").replaceChildren(...blocks, el("span", {className: "err"}));
  const boxes = graph.segments.filter((s) => s.boxes).length;
  $("boxes-row").hidden = boxes === 0;
  $("boxes-note").textContent = `${boxes} segment(s) give boxes (kept; the layout model draws the others)`;
}
function changed() {
  // render() rebuilds the rows: keep the keyboard's place (the same control of the same row) across it
  const active = document.activeElement;
  const holder = active && active.closest("#editor [data-where]");
  const place = holder && active.className ? [holder.dataset.where, active.className] : null;
  render();
  if (place) {
    const again = document.querySelector(`#editor [data-where="${place[0]}"] .${place[1].split(" ")[0]}`);
    if (again) again.focus();
  }
  clearTimeout(checkTimer);
  checkTimer = setTimeout(check, 250);  // check as the person edits: the message appears beside the field at fault
}

// -- messages beside the field at fault ------------------------------------------------------------------------

function clearErrors() {
  for (const node of document.querySelectorAll("#editor .err")) node.textContent = "";
  for (const node of document.querySelectorAll("#editor .invalid")) node.classList.remove("invalid");
}
function showError(where, message) {
  // "timeline[1].relations[0]" -> that row; failing that its segment, ..., else the line under Generate
  for (let key = where || "request"; key; key = (key.match(/^(.*)(\.[a-z]+|\[\d+\])$/) || [null, ""])[1]) {
    const holder = document.querySelector(`#editor [data-where="${key}"]`);
    const err = holder && holder.querySelector(":scope > .err");
    if (err) { err.textContent = message; holder.classList.add("invalid"); return; }
  }
  $("general-error").textContent = message;
}
async function check() {
  if (!graph.objects.length) { clearErrors(); return true; }
  const mine = ++checks;
  const {status, data} = await api.post("/api/check", request());
  if (mine !== checks) return;  // a later edit's check is under way: this reply is stale
  clearErrors();
  if (status !== 200) { showError(data.where, data.error); return false; }
  if (!job) $("status").textContent = `${data.frames} frames`;
  return true;
}

// -- generation ------------------------------------------------------------------------------------------------

async function generate() {
  clearErrors();
  const {status, data} = await api.post("/api/generate", request());
  if (status !== 202) { showError(data.where, data.error); return; }
  job = data.job;
  $("generate").disabled = true;
  $("cancel").disabled = false;
  poll();
}
async function poll() {
  const {status, data} = await api.get(`/api/jobs/${job}`);
  if (status !== 200) { finish(data.error); return; }
  const [done, total] = data.progress;
  $("progress").value = total ? done / total : 0;
  if (data.state === "queued") $("status").textContent = `waiting: ${data.position} request(s) ahead`;
  else if (data.state === "running") $("status").textContent = data.stage === "writing" ? "writing the videos" : `sampling: step ${done} of ${total || "?"}`;
  else if (data.state === "done") { showRun(data); finish(""); $("status").textContent = `done in ${data.seconds} s`; return; }
  else { finish(data.error || data.state); return; }
  pollTimer = setTimeout(poll, 250);
}
function finish(message) {
  clearTimeout(pollTimer);
  job = null;
  $("generate").disabled = false;
  $("cancel").disabled = true;
  $("progress").value = 0;
  if (message) $("general-error").textContent = message;
}
async function cancel() {
  if (job) await api.post(`/api/jobs/${job}/cancel`, {});
}

// -- results: each sample's player, layout, verdicts and downloads ----------------------------------------------

function relationText(objects, r) {  // ends are indices (the editor's) or names (graph JSON allows both)
  const name = (end) => (typeof end === "number" ? objects[end] : end);
  return `${name(r[0])} ${r[1]} ${name(r[2])}`;
}
function graphLines(g) {  // "[start, end) subject predicate object" per relation of a graph JSON the server echoed
  const segments = g.timeline || [{frames: null, relations: g.relations || []}];
  return segments.flatMap((s) => s.relations.map((r) => (s.frames ? `[${s.frames[0]}, ${s.frames[1]}) ` : "") + relationText(g.objects, r)));
}
class Player {
  constructor(job, index, result) {
    this.result = result;
    this.layout = result.samples[index].layout;
    this.objects = result.graph.objects;
    this.canvas = el("canvas", {className: "player", width: 192, height: 192, title: "click: pause / play"});
    this.canvas.dataset.frames = result.frames;
    this.canvas.dataset.shown = 0;
    this.caption = el("div", {className: "muted frame-caption"});
    this.shown = new Set();
    this.t = 0;
    this.sheet = new Image();
    this.sheet.onload = () => { this.canvas.dataset.loaded = "1"; this.play(); };
    this.sheet.src = `/api/jobs/${job}/${index}.png`;
    this.canvas.onclick = () => (this.timer ? this.pause() : this.play());
  }
  play() { if (!this.timer) this.timer = setInterval(() => this.step(), 1000 / this.result.fps); this.draw(); }
  pause() { clearInterval(this.timer); this.timer = null; }
  step() { this.t = (this.t + 1) % this.result.frames; this.draw(); }
  draw() {
    if (!this.sheet.complete || !this.sheet.naturalWidth) return;
    const {size, cols, frames} = this.result;
    const ctx = this.canvas.getContext("2d");
    const side = this.canvas.width;
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(this.sheet, (this.t % cols) * size, Math.floor(this.t / cols) * size, size, size, 0, 0, side, side);
    if ($("show-layout").checked) {
      ctx.lineWidth = 2;
      ctx.font = "12px sans-serif";
      (this.layout[this.t] || []).forEach((box, k) => {
        if (!box) return;
        ctx.strokeStyle = ctx.fillStyle = colourOf(this.objects[k], k);
        ctx.setLineDash([4, 3]);
        ctx.strokeRect(box[0] * side, box[1] * side, (box[2] - box[0]) * side, (box[3] - box[1]) * side);
        ctx.fillText(String(k), box[0] * side + 3, box[1] * side + 12);
      });
    }
    this.shown.add(this.t);
    this.canvas.dataset.frame = this.t;
    this.canvas.dataset.shown = this.shown.size;
    this.caption.textContent = `frame ${this.t + 1} / ${frames}`;
  }
}
function verdictList(result, sample) {
  const list = el("ul", {className: "verdicts"});
  if (!result.checker) return list;
  const segments = result.graph.timeline || [{frames: null, relations: result.graph.relations || []}];
  segments.forEach((seg, i) => seg.relations.forEach((r, j) => {
    const v = sample.verdicts.relations[i][j];
    const verdict = v.held === v.frames ? "yes" : v.held === 0 ? "no" : "partly";
    const span = seg.frames ? `[${seg.frames[0]}, ${seg.frames[1]}) ` : "";
    list.append(el("li", {className: "relation-verdict", "data-segment": i, "data-relation": j, "data-verdict": verdict,
                          textContent: `${span}${relationText(result.graph.objects, r)}: ${v.held}/${v.frames} frames`}));
  }));
  sample.verdicts.objects.forEach((v, k) => list.append(el("li", {
    className: "object-verdict", "data-object": k, "data-verdict": v.held === v.frames ? "yes" : v.held === 0 ? "no" : "partly",
    textContent: `${result.graph.objects[k]} drawn: ${v.held}/${v.frames}`})));
  return list;
}
function showRun(status) {
  const result = status.result;
  const before = runs.length ? new Set(graphLines(runs[runs.length - 1].result.graph)) : null;
  const lines = graphLines(result.graph);
  const players = [];
  const samples = result.samples.map((sample, i) => {
    const player = new Player(status.job, i, result);
    players.push(player);
    const link = (kind, text) => el("a", {href: `/api/jobs/${status.job}/${i}.${kind}`, download: `sample_${String(i).padStart(3, "0")}.${kind}`, textContent: text});
    return el("div", {className: "sample", "data-index": i}, player.canvas, player.caption, verdictList(result, sample),
              el("div", {className: "downloads"}, link("gif", "GIF"), link("mp4", "MP4"), link("json", "graph + boxes")));
  });
  const s = result.settings;
  const node = el("div", {className: "run"},
    el("h3", {textContent: `seed ${s.seed}, ${s.num} sample(s), ${result.frames} frames, ${s.sampler} ${s.steps} steps, guidance ${s.guidance}`}),
    el("ul", {className: "graph-text"}, ...lines.map((line) => el("li", {className: before && !before.has(line) ? "changed" : "", textContent: line}))),
    el("div", {className: "samples"}, ...samples));
  runs.push({result, node, players});
  while (runs.length > 2) runs.shift().players.forEach((p) => p.pause());
  runs.forEach((run, i) => run.node.setAttribute("data-role", i === runs.length - 1 ? "current" : "previous"));
  $("runs").replaceChildren(...runs.map((run) => run.node));
  $("hint").hidden = true;
}

// -- start ----------------------------------------------------------------------------------------------------------

function saveJSON() {
  const blob = new Blob([JSON.stringify(graphJSON(), null, 1) + "\n"], {type: "application/json"});
  const a = el("a", {href: URL.createObjectURL(blob), download: "graph.json"});
  document.body.append(a);
  a.click();
  a.remove();
}
async function loadFile(file) {
  const text = await file.text();
  const {status, data} = await api.post("/api/parse", {name: file.name, text});
  $("load-file").value = "";
  if (status !== 200) { showError("file", data.error); return; }  // the editor keeps its graph and its messages
  fromForm(data.graph);
  changed();
}
async function start() {
  info = (await api.get("/api/info")).data;
  $("model").textContent = `${info.model}: ${info.objects.length} object classes, ${info.predicates.length} predicates, clips of ${info.clip_frames} frames`;
  $("object-names").replaceChildren(...info.objects.map((n) => el("option", {value: n})));
  if (info.objects.length <= 48) {
    $("palette").replaceChildren(...info.objects.map((name, k) => {
      const swatch = el("span", {className: "swatch"});
      swatch.style.background = colourOf(name, k);
      return el("button", {type: "button", className: "pick", "data-name": name, onclick: () => addObject(name)}, swatch, name);
    }));
  }
  for (const key of ["num", "seed", "steps", "guidance", "sampler", "layout"]) $(key).value = info.defaults[key];
  $("num").max = info.max_num;
  $("frames").placeholder = String(info.clip_frames);
  $("add-object").onclick = () => {
    const name = $("object-name").value.trim();
    if (!info.objects.includes(name)) { clearErrors(); showError("objects", `unknown object "${name}" (pick one of the list)`); return; }
    $("object-name").value = "";
    addObject(name);
  };
  $("object-name").onkeydown = (e) => { if (e.key === "Enter") $("add-object").click(); };
  $("timeline-mode").onchange = () => {
    graph.timeline = $("timeline-mode").checked;
    if (graph.timeline) graph.segments[0].end = Number($("frames").value) || info.clip_frames;
    else { $("frames").value = graph.segments[0].end ?? ""; graph.segments = [graph.segments[0]]; }
    changed();
  };
  $("add-segment").onclick = () => {
    const last = graph.segments[graph.segments.length - 1];
    graph.segments.push({end: (last.end || 0) + info.clip_frames, relations: last.relations.map((r) => r.slice()),
                         boxes: last.boxes ? last.boxes.slice() : null});
    changed();
  };
  $("clear-boxes").onclick = () => { graph.segments.forEach((s) => (s.boxes = null)); changed(); };
  for (const key of ["frames", "num", "seed", "steps", "guidance", "sampler", "layout"]) $(key).onchange = changed;
  $("new-seed").onclick = () => { $("seed").value = Math.floor(Math.random() * 1e6); };
  $("generate").onclick = generate;
  $("cancel").onclick = cancel;
  $("save-json").onclick = saveJSON;
  $("load-file").onchange = () => { if ($("load-file").files.length) loadFile($("load-file").files[0]); };
  $("show-layout").onchange = () => runs.forEach((run) => run.players.forEach((p) => p.draw()));
  // a closing tab cancels its request (and the server drops one nobody asks about: sg2video.serve.jobs)
  window.addEventListener("pagehide", () => { if (job) navigator.sendBeacon(`/api/jobs/${job}/cancel`); });
  render();
  document.body.dataset.ready = "1";
}
start();
