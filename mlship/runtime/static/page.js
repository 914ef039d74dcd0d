// The model's page: everything comes from this server's JSON API (metadata, readyz, v2/models/{name}); the DOM is
// built with textContent only (a column name or an error message is never parsed as HTML). URLs are relative, so
// the page works behind a path prefix. Served by mlship_runtime/_ui.py under a CSP that forbids inline script.
"use strict";

const TOKEN_KEY = "mlship.token";
const WIDE = 8; // columns beyond which the CSV row and file inputs start open
const MAX_CSV_BYTES = 1024 * 1024;
const base = new URL(".", window.location.href);

function token() {
  try { return window.sessionStorage.getItem(TOKEN_KEY) || ""; } catch (e) { return ""; }
}

async function api(path, options) {
  const opts = Object.assign({ headers: {} }, options || {});
  if (token()) { opts.headers.Authorization = "Bearer " + token(); }
  const response = await fetch(new URL(path, base), opts);
  let body = null;
  const text = await response.text();
  try { body = JSON.parse(text); } catch (e) { body = text; }
  return { status: response.status, body: body };
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) { continue; }
    if (key === "text") { node.textContent = value; } else { node.setAttribute(key, value === true ? "" : value); }
  }
  for (const child of children) {
    if (child !== null && child !== undefined) { node.append(child); }
  }
  return node;
}

// -- values -------------------------------------------------------------------------------------------------

const NUMBER = /^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/;

// What a form field's text becomes in the request. Text that is not of the column's type is sent as typed,
// so that the server's own check names the problem (and the page shows it next to the field).
function parseValue(text, type) {
  const raw = String(text);
  const trimmed = raw.trim();
  if (trimmed === "") { return type === "string" ? (raw === "" ? null : raw) : null; }
  if (type === "number" || type === "integer") { return NUMBER.test(trimmed) ? Number(trimmed) : raw; }
  if (type === "boolean") {
    const lower = trimmed.toLowerCase();
    if (lower === "true") { return true; }
    if (lower === "false") { return false; }
    return raw;
  }
  if (type === "any") {
    try { return JSON.parse(trimmed); } catch (e) { return raw; }
  }
  return raw; // string, datetime
}

function showValue(value) {
  if (value === null || value === undefined) { return ""; }
  return typeof value === "string" ? value : JSON.stringify(value);
}

// RFC 4180 CSV: quoted fields, doubled quotes, CRLF or LF; returns a list of rows of strings.
function parseCsv(text) {
  const rows = [];
  let row = [], field = "", quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') { field += '"'; i++; } else if (c === '"') { quoted = false; } else { field += c; }
    } else if (c === '"') { quoted = true; } else if (c === ",") { row.push(field); field = ""; } else if (c === "\n" || c === "\r") {
      if (c === "\r" && text[i + 1] === "\n") { i++; }
      row.push(field); rows.push(row); row = []; field = "";
    } else { field += c; }
  }
  if (field !== "" || row.length) { row.push(field); rows.push(row); }
  return rows.filter((r) => r.length > 1 || r[0] !== "");
}

// CSV text -> rows as objects keyed by column; a header row is used when it names the columns.
function csvRows(text, columns) {
  const names = columns.map((c) => String(c.name));
  const rows = parseCsv(text);
  if (!rows.length) { throw new Error("the CSV holds no row"); }
  let header = names;
  if (rows[0].every((cell) => names.includes(cell.trim())) && rows[0].length > 0) {
    header = rows.shift().map((cell) => cell.trim());
    const missing = names.filter((name) => !header.includes(name));
    if (missing.length) { throw new Error("the CSV header lacks the columns " + missing.join(", ")); }
  }
  return rows.map((cells, index) => {
    if (cells.length !== header.length) {
      throw new Error(`CSV row ${index + 1} has ${cells.length} values, expected ${header.length}`);
    }
    const row = {};
    for (const column of columns) {
      row[column.name] = parseValue(cells[header.indexOf(String(column.name))], column.type);
    }
    return row;
  });
}

// -- snippets -----------------------------------------------------------------------------------------------

function py(value) {
  if (value === null || value === undefined) { return "None"; }
  if (value === true) { return "True"; }
  if (value === false) { return "False"; }
  if (Array.isArray(value)) { return "[" + value.map(py).join(", ") + "]"; }
  if (typeof value === "object") {
    return "{" + Object.entries(value).map(([k, v]) => JSON.stringify(k) + ": " + py(v)).join(", ") + "}";
  }
  return JSON.stringify(value);
}

function shellQuote(text) { return "'" + text.replace(/'/g, "'\\''") + "'"; }

const V2_TYPES = { number: "FP64", integer: "INT64", boolean: "BOOL" };

function snippets(meta, v2, auth) {
  const url = base.href.replace(/\/$/, "");
  const method = meta.methods.includes("predict") ? "predict" : meta.methods[0];
  const row = meta.input.example;
  const body = JSON.stringify({ instances: [row] });
  const hostPort = base.host;
  const port = base.port || (base.protocol === "https:" ? "443" : "80");
  const curl = ["curl -s " + shellQuote(`${url}/${method}`) + " \\",
    "  -H 'Content-Type: application/json' \\"];
  if (auth) { curl.push('  -H "Authorization: Bearer $MLSHIP_API_TOKEN" \\'); }
  curl.push("  -d " + shellQuote(body));
  const requests = ["import requests", ""];
  if (auth) { requests.splice(1, 0, "import os"); }
  requests.push(`row = ${py(row)}`,
    `answer = requests.post(${JSON.stringify(url + "/" + method)}, json={"instances": [row]},` +
    (auth ? ' headers={"Authorization": "Bearer " + os.environ["MLSHIP_API_TOKEN"]},' : "") + " timeout=30)",
    "answer.raise_for_status()", 'print(answer.json()["predictions"])');
  const columns = ["dataframe", "records", "columns"].includes(meta.input.kind);
  const mlflow = [columns ? "import pandas as pd" : "import numpy as np",
    "from mlflow.pyfunc.scoring_server.client import ScoringServerClient", "",
    `client = ScoringServerClient(${JSON.stringify(base.hostname)}, ${port})  # POST /invocations`,
    `row = ${py(row)}`,
    columns ? "print(client.invoke(pd.DataFrame([row])).get_predictions())"
      : "print(client.invoke(np.array([row])).get_predictions())"];
  if (auth) { mlflow.push("# ScoringServerClient sends no token: with authentication on, use requests on /invocations"); }
  const inputs = (v2 && Array.isArray(v2.inputs)) ? v2.inputs : (columns
    ? meta.input.columns.map((c) => ({ name: c.name, datatype: V2_TYPES[c.type] || "BYTES" }))
    : [{ name: "input-0", datatype: V2_TYPES[meta.input.type] || "BYTES" }]);
  const oip = [...(auth ? ["import os"] : []), "import numpy as np", "import tritonclient.http as httpclient",
    "from tritonclient.utils import triton_to_np_dtype", "",
    `client = httpclient.InferenceServerClient(${JSON.stringify(hostPort)}${base.protocol === "https:" ? ", ssl=True" : ""})`,
    `row = ${py(row)}`, "inputs = []"];
  if (columns) {
    oip.push(`for name, datatype in ${py(inputs.map((i) => [i.name, i.datatype]))}:`,
      "    data = np.array([row[name]], dtype=triton_to_np_dtype(datatype))");
  } else {
    oip.push(`for name, datatype in ${py(inputs.map((i) => [i.name, i.datatype]))}:`,
      "    data = np.array([row], dtype=triton_to_np_dtype(datatype))");
  }
  oip.push("    tensor = httpclient.InferInput(name, list(data.shape), datatype)",
    "    tensor.set_data_from_numpy(data, binary_data=False)", "    inputs.append(tensor)",
    `result = client.infer(${JSON.stringify(meta.name)}, inputs` +
    (auth ? ', headers={"Authorization": "Bearer " + os.environ["MLSHIP_API_TOKEN"]}' : "") + ")",
    `print(result.as_numpy(${JSON.stringify(method)}))`);
  return [
    ["curl", curl.join("\n")],
    ["Python (requests)", requests.join("\n")],
    ["MLflow client", mlflow.join("\n")],
    ["Open Inference Protocol client (tritonclient)", oip.join("\n")],
  ];
}

// -- sections -----------------------------------------------------------------------------------------------

function badge(kind, text) { return el("span", { class: "badge " + kind, text: text }); }

function facts(pairs) {
  const dl = el("dl", { class: "facts" });
  for (const [term, value] of pairs) {
    if (value === null || value === undefined || value === "") { continue; }
    dl.append(el("dt", { text: term }), el("dd", {}, value));
  }
  return dl;
}

function aboutSection(meta, readiness) {
  const ready = readiness.status === 200;
  const why = ready ? "ready" : "not ready: " + ((readiness.body && readiness.body.error) || readiness.status);
  const source = meta.source || {};
  return el("section", { id: "about" },
    el("h2", {}, `${meta.name} ${meta.version} `, badge(ready ? "ok" : "bad", ready ? "ready" : "not ready")),
    facts([
      ["source notebook", source.notebook ? el("code", { id: "source-notebook", text: source.notebook }) : null],
      ["notebook sha256", source.sha256 ? el("code", { id: "source-sha256", text: source.sha256 }) : null],
      ["packaged", meta.created_at],
      ["methods", el("span", { id: "methods", text: meta.methods.join(", ") })],
      ["readiness", el("span", { id: "readiness", text: why })],
      ["python", meta.python ? `${meta.python.implementation || ""} ${meta.python.version || ""}` : null],
      ["batched", meta.batch_safe ? "yes: concurrent requests are merged into one model call" : "no"],
    ]));
}

function schemaSection(meta, published) {
  const input = meta.input;
  const section = el("section", { id: "schema" }, el("h2", { text: "Input" }),
    el("p", { class: "note", text: `kind: ${input.kind}` + (input.shape ? `, shape ${JSON.stringify(input.shape)}` : "") +
      (published ? "" : ". The examples are synthetic (a value of each type); the operator can publish the " +
        "notebook's first golden row with MLSHIP_PUBLISH_EXAMPLE=1.") }));
  const table = el("table", { id: "schema-table" },
    el("thead", {}, el("tr", {}, ...["column", "type", "dtype", "nullable", "example"].map((h) => el("th", { text: h })))));
  const body = el("tbody");
  const columns = input.columns || [{ name: input.name === undefined ? "(each row)" : input.name, type: input.type,
    dtype: input.dtype, nullable: input.nullable }];
  for (const column of columns) {
    const example = input.columns ? (input.example || {})[column.name] : input.example;
    body.append(el("tr", {}, el("td", {}, el("code", { text: String(column.name) })), el("td", { text: column.type }),
      el("td", { text: column.dtype || "" }), el("td", { text: column.nullable ? "yes" : "no" }),
      el("td", {}, el("code", { text: showValue(example) }))));
  }
  table.append(body);
  section.append(table);
  return section;
}

const SHOWN_PASSED = 20; // passed cases listed openly; beyond, they fold away (failed ones are always shown)

function goldenRows(cases) {
  const body = el("tbody");
  for (const c of cases) {
    const kind = c.startup === "passed" ? "ok" : c.startup === "failed" ? "bad" : "none";
    body.append(el("tr", { class: "case-" + kind }, el("td", {}, el("code", { text: c.id })),
      el("td", { text: c.method }), el("td", { text: String(c.rows) }), el("td", {}, badge(kind, c.startup))));
    if (c.startup === "failed") {
      body.append(el("tr", { class: "case-detail" }, el("td", { colspan: "4" },
        el("div", { class: "error", text: c.detail }),
        facts([["expected", el("code", { text: showValue(c.expected) })],
          ["this server", el("code", { text: c.actual === null ? "(no output)" : showValue(c.actual) })]]))));
    }
  }
  return body;
}

function goldenTable(id, cases) {
  const table = el("table", { id: id },
    el("thead", {}, el("tr", {}, ...["case", "method", "rows", "at start-up"].map((h) => el("th", { text: h })))));
  table.append(goldenRows(cases));
  return table;
}

function goldenSection(meta) {
  const cases = meta.golden || [];
  const passed = cases.filter((c) => c.startup === "passed");
  const failed = cases.filter((c) => c.startup === "failed");
  const replayed = passed.length + failed.length;
  const verdict = replayed === 0 ? "This server has not replayed them yet (the model is still loading)."
    : `This server replayed ${replayed === cases.length ? "all " + cases.length : replayed + " of " + cases.length}` +
      ` at start-up: ${passed.length} passed, ${failed.length} failed` +
      (failed.length ? ", so it is not ready (it serves only what reproduces the notebook)." : ".");
  const section = el("section", { id: "golden" }, el("h2", { text: "Golden cases" }),
    el("p", { class: "note", text: `The notebook's own outputs for ${cases.length} inputs. ${verdict} ` +
      "`mlship verify BUNDLE --url URL` replays them against any running server." }));
  if (cases.length <= SHOWN_PASSED) {
    section.append(goldenTable("golden-table", cases));
    return section;
  }
  const rest = cases.filter((c) => c.startup !== "failed");
  if (failed.length) { section.append(goldenTable("golden-failed", failed)); }
  const fold = el("details", { id: "golden-passed" },
    el("summary", { text: `${rest.length} ${failed.length ? "other " : ""}cases` +
      (rest.length === passed.length ? ", all passed" : "") }));
  fold.append(goldenTable("golden-table", rest));
  section.append(fold);
  return section;
}

function snippetSection(meta, v2, auth) {
  const section = el("section", { id: "snippets" }, el("h2", { text: "Call it" }));
  for (const [title, code] of snippets(meta, v2, auth)) {
    const pre = el("pre", {}, el("code", { text: code }));
    const copy = el("button", { type: "button", class: "quiet", text: "copy" });
    copy.addEventListener("click", () => {
      const done = () => { copy.textContent = "copied"; window.setTimeout(() => { copy.textContent = "copy"; }, 1500); };
      if (navigator.clipboard) { navigator.clipboard.writeText(code).then(done, () => selectText(pre)); } else { selectText(pre); }
    });
    section.append(el("div", { class: "snippet" }, el("h3", {}, title, copy), pre));
  }
  return section;
}

function selectText(node) {
  const range = document.createRange();
  range.selectNodeContents(node);
  window.getSelection().removeAllRanges();
  window.getSelection().addRange(range);
}

// -- the try-it form ----------------------------------------------------------------------------------------

function inputFor(column, value, id) {
  if (column.type === "boolean") {
    const select = el("select", { id: id, name: String(column.name) });
    const options = column.nullable ? ["true", "false", ""] : ["true", "false"];
    for (const option of options) { select.append(el("option", { value: option, text: option || "(null)" })); }
    select.value = value === null || value === undefined ? "" : String(value);
    return select;
  }
  const mode = column.type === "number" ? "decimal" : column.type === "integer" ? "numeric" : null;
  const placeholder = column.type === "datetime" ? "2026-01-01T00:00:00" : column.nullable ? "(empty: null)" : null;
  const input = el("input", { id: id, type: "text", name: String(column.name), inputmode: mode, placeholder: placeholder,
    autocomplete: "off", spellcheck: "false" });
  input.value = showValue(value);
  return input;
}

function tryForm(meta) {
  const input = meta.input;
  const columns = input.columns || null;
  const form = el("form", { id: "try-form", novalidate: true });
  const method = el("select", { id: "method", name: "method" });
  for (const name of meta.methods) { method.append(el("option", { value: name, text: name })); }
  const fields = [];
  const grid = el("div", { class: "fields" });
  if (columns) {
    columns.forEach((column, index) => {
      const id = `field-${index}`;
      const control = inputFor(column, (input.example || {})[column.name], id);
      const error = el("span", { class: "error", id: `error-${index}`, "aria-live": "polite" });
      grid.append(el("div", { class: "field" }, el("label", { for: id }, String(column.name) + " ",
        el("span", { class: "type", text: column.type + (column.nullable ? ", nullable" : "") })), control, error));
      fields.push({ column: column, control: control, error: error });
    });
  } else {
    const text = input.type === "string";
    const control = el("textarea", { id: "field-0", class: "wide", name: "row", spellcheck: text ? "true" : "false" });
    control.value = text ? showValue(input.example) : JSON.stringify(input.example);
    const error = el("span", { class: "error", id: "error-0", "aria-live": "polite" });
    grid.style.display = "block";
    grid.append(el("div", { class: "field" }, el("label", { for: "field-0", text: text ? "Text (one row)" :
      "One row, as JSON" + (input.shape ? ` (shape ${JSON.stringify(input.shape.slice(1))})` : "") }), control, error));
    fields.push({ column: { name: null, type: text ? "string" : "json" }, control: control, error: error });
  }
  const formError = el("span", { class: "error", id: "form-error", "aria-live": "polite" });
  const answer = el("pre", { id: "answer", class: "answer", hidden: true });
  const status = el("span", { id: "answer-status", class: "note" });
  form.append(el("div", { class: "row" }, el("label", { for: "method", text: "method" }), method), grid);
  if (columns) { form.append(csvInputs(columns, fields, formError, send)); }
  form.append(el("div", { class: "row" }, el("button", { id: "send", type: "submit", text: "Send" }), status),
    formError, answer);

  function clearErrors() {
    formError.textContent = "";
    for (const f of fields) { f.error.textContent = ""; f.control.classList.remove("invalid"); }
  }

  function fieldError(f, message) {
    f.error.textContent = (f.error.textContent ? f.error.textContent + "\n" : "") + message;
    f.control.classList.add("invalid");
  }

  // The server's 4xx message, each of its problems next to the field it names (`column "x", row 0: ...`).
  function placeErrors(message) {
    const rest = [];
    for (const part of String(message).split("; ")) {
      let placed = false;
      for (const f of fields) {
        const named = f.column.name === null ? /^row 0\b/.test(part) : part.startsWith(`column "${f.column.name}"`);
        if (named) { fieldError(f, part); placed = true; break; }
      }
      if (!placed) { rest.push(part); }
    }
    if (rest.length) { formError.textContent = rest.join("; "); }
  }

  function row() {
    if (columns) {
      const value = {};
      for (const f of fields) { value[f.column.name] = parseValue(f.control.value, f.column.type); }
      return value;
    }
    const f = fields[0];
    if (f.column.type === "string") { return f.control.value; }
    try { return JSON.parse(f.control.value); } catch (e) {
      fieldError(f, "not valid JSON: " + e.message);
      return undefined;
    }
  }

  async function send(rows, fromFile) {
    answer.hidden = true;
    status.textContent = "sending…";
    const name = method.value;
    let result;
    try {
      result = await api(encodeURIComponent(name), { method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ instances: rows }) });
    } catch (e) {
      status.textContent = "";
      formError.textContent = "the request failed: " + e.message;
      return;
    }
    status.textContent = `POST ${name}: ${result.status}`;
    if (result.status === 200 && result.body && "predictions" in result.body) {
      answer.textContent = JSON.stringify(result.body.predictions, null, rows.length > 1 ? 1 : 2);
      answer.className = "answer ok";
      answer.hidden = false;
      return;
    }
    const message = result.body && typeof result.body === "object" ? result.body.error : String(result.body);
    if (fromFile) { formError.textContent = message; } else { placeErrors(message); }
    if (result.status === 401) { showAuth("the token was refused; enter it again"); }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    clearErrors();
    const value = row();
    if (value !== undefined) { send([value], false); }
  });
  return el("section", { id: "try" }, el("h2", { text: "Try it" }),
    el("p", { class: "note", text: "Prefilled with the example; the request goes to this server and its answer, or " +
      "its error next to the field it names, shows below." }), form);
}

function csvInputs(columns, fields, formError, send) {
  const details = el("details", { id: "csv", open: columns.length > WIDE });
  const pasted = el("textarea", { id: "csv-row", class: "wide", spellcheck: "false",
    placeholder: columns.map((c) => c.name).join(",") + "\n(one row of values, header line optional)" });
  const fill = el("button", { id: "csv-fill", type: "button", class: "quiet", text: "fill the form" });
  const file = el("input", { id: "csv-file", type: "file", accept: ".csv,text/csv" });
  fill.addEventListener("click", () => {
    formError.textContent = "";
    try {
      const rows = csvRows(pasted.value, columns);
      fields.forEach((f) => { f.control.value = showValue(rows[0][f.column.name]); });
    } catch (e) { formError.textContent = e.message; }
  });
  file.addEventListener("change", () => {
    formError.textContent = "";
    const chosen = file.files && file.files[0];
    if (!chosen) { return; }
    if (chosen.size > MAX_CSV_BYTES) { formError.textContent = `the file is larger than ${MAX_CSV_BYTES} bytes`; return; }
    chosen.text().then((text) => {
      try { send(csvRows(text, columns), true); } catch (e) { formError.textContent = e.message; }
    });
  });
  details.append(el("summary", { text: "Paste a CSV row, or send a small CSV file (a header row, then rows)" }),
    pasted, el("div", { class: "row" }, fill, el("label", {}, "CSV file ", file)));
  return details;
}

// -- the page -----------------------------------------------------------------------------------------------

function showAuth(message) {
  const form = document.getElementById("auth");
  form.hidden = false;
  document.getElementById("status").textContent = message;
}

async function load() {
  const status = document.getElementById("status");
  const models = document.getElementById("models");
  let meta;
  try { meta = await api("metadata"); } catch (e) { status.textContent = "cannot reach the server: " + e.message; return; }
  if (meta.status === 401) { showAuth("This server requires a bearer token."); return; }
  if (meta.status !== 200) { status.textContent = `GET metadata answered ${meta.status}`; return; }
  document.getElementById("auth").hidden = true;
  const auth = Boolean(token());
  // One model today; the page renders a list, so that a service of several models shows each in turn.
  const list = Array.isArray(meta.body.models) ? meta.body.models : [meta.body];
  const readiness = await api("readyz");
  models.replaceChildren();
  for (const model of list) {
    const v2 = await api(`v2/models/${encodeURIComponent(model.name)}`).catch(() => null);
    const published = model.example_published === true;
    document.title = `${model.name} ${model.version}`;
    document.getElementById("title").textContent = `${model.name} ${model.version}`;
    models.append(el("article", { class: "model" }, aboutSection(model, readiness), schemaSection(model, published),
      goldenSection(model), tryForm(model), snippetSection(model, v2 && v2.status === 200 ? v2.body : null, auth)));
  }
  status.textContent = "";
  status.hidden = true;
}

document.getElementById("auth").addEventListener("submit", (event) => {
  event.preventDefault();
  try { window.sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value.trim()); } catch (e) { /* */ }
  load();
});
load();
