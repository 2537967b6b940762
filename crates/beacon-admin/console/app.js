// Beacon console: Settings › Observability, Recent completions and Keys, on top of /admin/v1.
// Plain ES module, no build step; every value from the server is rendered with textContent.

const API = "/admin/v1";
const TOKEN_KEY = "beacon.console.token";
const TENANT_KEY = "beacon.console.tenant";
const REFRESH_MS = 2000;

const state = {
  token: sessionStorage.getItem(TOKEN_KEY) || "",
  session: null,
  tenants: [],
  tenant: sessionStorage.getItem(TENANT_KEY) || "",
  timer: null,
};

// ---------------------------------------------------------------- helpers

/** Creates an element: h("button", {class: "primary", onclick}, "Save"). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const $ = (id) => document.getElementById(id);

function toast(message) {
  const t = $("toast");
  t.textContent = message;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.textContent = ""; }, 4000);
}

class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

async function api(method, path, body) {
  const init = { method, headers: { authorization: `Bearer ${state.token}` } };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(API + path, init);
  const text = await resp.text();
  const json = text ? JSON.parse(text) : null;
  if (resp.status === 401) {
    signOut("Your session is no longer valid: sign in again.");
    throw new ApiError(resp.status, json);
  }
  if (!resp.ok) throw new ApiError(resp.status, json);
  return json;
}

const tenantPath = (rest = "") => `/tenants/${encodeURIComponent(state.tenant)}${rest}`;

function ago(unixSeconds) {
  if (!unixSeconds) return "";
  const s = Math.max(0, Math.round(Date.now() / 1000 - unixSeconds));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return new Date(unixSeconds * 1000).toLocaleString();
}

// ---------------------------------------------------------------- sign-in

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(TENANT_KEY);
  state.token = "";
  state.session = null;
  state.tenant = "";
  stopRefresh();
  renderSignIn(message);
}

function renderSignIn(message) {
  $("who").hidden = true;
  $("nav").hidden = true;
  const error = h("p", { id: "signin-error", class: "error", role: "alert" }, message || "");
  const input = h("input", {
    id: "token", type: "password", autocomplete: "current-password", required: true,
    "aria-describedby": "token-help signin-error",
  });
  const form = h("form", { class: "card signin", "aria-labelledby": "signin-title" },
    h("h1", { id: "signin-title" }, "Sign in to Beacon"),
    h("div", { class: "field" },
      h("label", { for: "token" }, "Operator token or management key"),
      input,
      h("p", { id: "token-help", class: "help" },
        "The operator token is the server's admin.token (BEACON_ADMIN_TOKEN). A tenant's management key signs in to that tenant only.")),
    error,
    h("button", { type: "submit", class: "primary" }, "Sign in"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    state.token = input.value.trim();
    error.textContent = "";
    try {
      await start();
      sessionStorage.setItem(TOKEN_KEY, state.token);
    } catch (err) {
      state.token = "";
      error.textContent = err.status === 401 || err.status === 403
        ? "This token is not accepted: use the operator token or a management key."
        : `Sign-in failed: ${err.message}`;
      input.focus();
    }
  });
  $("main").replaceChildren(form);
  input.focus();
}

async function start() {
  const session = await fetch(`${API}/session`, { headers: { authorization: `Bearer ${state.token}` } });
  const body = await session.json().catch(() => null);
  if (!session.ok) throw new ApiError(session.status, body);
  state.session = body;
  const tenants = await api("GET", "/tenants");
  state.tenants = tenants.data;
  if (body.role === "management") state.tenant = body.tenant;
  else if (!state.tenants.some((t) => t.id === state.tenant)) state.tenant = state.tenants[0]?.id || "";
  sessionStorage.setItem(TENANT_KEY, state.tenant);
  renderHeader();
  $("nav").hidden = false;
  route();
}

function renderHeader() {
  $("who").hidden = false;
  const picker = $("tenant-picker");
  const fixed = $("tenant-fixed");
  if (state.session.role === "operator") {
    picker.hidden = false;
    $("tenant-label").hidden = false;
    fixed.textContent = "operator";
    fixed.className = "badge";
    picker.replaceChildren(...state.tenants.map((t) =>
      h("option", { value: t.id, selected: t.id === state.tenant }, `${t.name} (${t.id})`)));
  } else {
    picker.hidden = true;
    $("tenant-label").hidden = true;
    fixed.textContent = `Tenant ${state.tenant}`;
    fixed.className = "";
  }
}

// ---------------------------------------------------------------- routing

function route() {
  if (!state.session) return;
  stopRefresh();
  const page = { "#/keys": "keys", "#/recent": "recent", "#/usage": "usage" }[location.hash] || "observability";
  for (const id of ["observability", "recent", "usage", "keys"]) {
    const link = $(`nav-${id}`);
    if (id === page) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (!state.tenant) {
    $("main").replaceChildren(h("div", { class: "card" },
      h("h1", {}, "No tenant yet"),
      h("p", {}, "Create a tenant with the admin API (POST /admin/v1/tenants) or `beacon tenant create`.")));
    return;
  }
  if (page === "keys") renderKeys();
  else if (page === "recent") renderRecent();
  else if (page === "usage") renderUsage();
  else renderObservability();
}

function stopRefresh() {
  clearInterval(state.timer);
  state.timer = null;
}

// ---------------------------------------------------------------- observability

async function renderObservability() {
  const main = $("main");
  const toggle = h("button", {
    type: "button", role: "switch", class: "switch", id: "broadcast-toggle",
    "aria-checked": "false", "aria-describedby": "broadcast-help",
  }, h("span", { class: "track", "aria-hidden": "true" }), h("span", { class: "state" }, "…"),
  h("span", {}, "Enable Broadcast"));
  const tbody = h("tbody", { id: "destinations-body" });
  const types = await destinationTypes();
  const picker = h("select", { id: "add-type", "aria-label": "Other destination type" },
    types.filter((t) => t.type !== "sentry").map((t) => h("option", { value: t.type }, t.label)));
  const addOther = h("div", { class: "row" }, picker,
    h("button", { type: "button", id: "add-other", onclick: () => openEditor(picker.value) }, "Add destination"));
  main.replaceChildren(
    h("nav", { "aria-label": "Breadcrumb", class: "muted small" }, "Settings › Observability"),
    h("h1", { tabindex: "-1", id: "page-title" }, "Observability"),
    h("p", { class: "lede" },
      "Send a trace of every completion — tokens, cost, timing and (unless privacy mode) the messages — to your own Sentry project, OpenTelemetry collector, Langfuse, LangSmith, Honeycomb, Grafana Cloud, Datadog, Phoenix or a signed webhook."),
    h("section", { class: "card", "aria-labelledby": "broadcast-title" },
      h("h2", { id: "broadcast-title" }, "Broadcast"),
      toggle,
      h("p", { id: "broadcast-help", class: "help" },
        "When off, no completion of this tenant is exported, whatever its destinations.")),
    h("section", { class: "card", "aria-labelledby": "destinations-title" },
      h("div", { class: "row" },
        h("h2", { id: "destinations-title" }, "Destinations"),
        h("span", { class: "spacer" }),
        h("button", { type: "button", class: "primary", id: "add-sentry", onclick: () => openEditor("sentry") }, "Add Sentry destination"),
        addOther),
      h("table", { "aria-labelledby": "destinations-title" },
        h("thead", {}, h("tr", {},
          ["Name", "Type", "Enabled", "Privacy mode", "Sampling", "Last export", "Exported", "Dropped", "Actions"]
            .map((c) => h("th", { scope: "col" }, c)))),
        tbody)));
  toggle.addEventListener("click", async () => {
    const next = toggle.getAttribute("aria-checked") !== "true";
    toggle.disabled = true;
    try {
      const r = await api("PUT", tenantPath("/broadcast"), { enabled: next });
      setToggle(toggle, r.enabled);
      toast(r.enabled ? "Broadcast enabled" : "Broadcast disabled");
    } catch (err) {
      toast(`Could not change broadcast: ${err.message}`);
    } finally {
      toggle.disabled = false;
    }
  });
  try {
    const b = await api("GET", tenantPath("/broadcast"));
    setToggle(toggle, b.enabled);
  } catch (err) {
    toast(err.message);
  }
  await refreshDestinations();
  state.timer = setInterval(refreshDestinations, REFRESH_MS);
}

function setToggle(toggle, on) {
  toggle.setAttribute("aria-checked", on ? "true" : "false");
  toggle.querySelector(".state").textContent = on ? "On" : "Off";
}

let lastDestinations = [];

async function refreshDestinations() {
  const tbody = $("destinations-body");
  if (!tbody) return;
  let list;
  try {
    list = (await api("GET", tenantPath("/destinations"))).data;
  } catch (err) {
    return;
  }
  lastDestinations = list;
  if (!$("destinations-body")) return;
  if (list.length === 0) {
    tbody.replaceChildren(h("tr", {}, h("td", { colspan: 9, class: "empty" },
      "No destinations yet. Add one, test it, and save it.")));
    return;
  }
  tbody.replaceChildren(...list.map(destinationRow));
}

function lastExport(stats) {
  const err = stats.last_error_at || 0;
  const ok = stats.last_success_at || 0;
  if (!err && !ok) return h("span", { class: "muted" }, stats.active ? "nothing yet" : "not running");
  if (err > ok) return h("span", { class: "bad", title: stats.last_error }, `✗ ${stats.last_error} (${ago(err)})`);
  return h("span", { class: "ok" }, `✓ ok (${ago(ok)})`);
}

function destinationRow(d) {
  const fromConfig = d.source === "config";
  return h("tr", { "data-destination": d.name },
    h("th", { scope: "row" }, d.name, fromConfig ? [" ", h("span", { class: "badge", title: "Declared in the config file: change it there" }, "config file")] : null),
    h("td", {}, typeLabel(d.type)),
    h("td", {}, d.enabled ? "Yes" : "No"),
    h("td", {}, d.privacy_mode ? "On" : "Off"),
    h("td", { class: "num" }, `${Math.round(d.sampling_rate * 10000) / 100} %`),
    h("td", { class: "small" }, lastExport(d.stats)),
    h("td", { class: "num", "data-col": "exported" }, String(d.stats.exported)),
    h("td", { class: "num", "data-col": "dropped", title: droppedTitle(d.stats) }, String(d.stats.dropped)),
    h("td", {}, fromConfig ? h("span", { class: "muted small" }, "read-only") : h("div", { class: "row" },
      h("button", { type: "button", "aria-label": `Edit ${d.name}`, onclick: () => openEditor(d.type, d) }, "Edit"),
      h("button", { type: "button", class: "danger", "aria-label": `Delete ${d.name}`, onclick: () => deleteDestination(d) }, "Delete"))));
}

function droppedTitle(stats) {
  const parts = Object.entries(stats.dropped_by_reason || {}).filter(([, n]) => n > 0).map(([r, n]) => `${r}: ${n}`);
  return parts.length ? parts.join(", ") : "nothing dropped";
}

async function deleteDestination(d) {
  if (!confirm(`Delete destination “${d.name}”? Completions stop being exported to it.`)) return;
  try {
    await api("DELETE", tenantPath(`/destinations/${encodeURIComponent(d.id)}`));
    toast(`Deleted ${d.name}`);
    await refreshDestinations();
  } catch (err) {
    toast(`Could not delete: ${err.message}`);
  }
}

// ---------------------------------------------------------------- destination editor

// The destination types and their fields, as the server describes them
// (GET /admin/v1/destination-types): every form below is drawn from this list.
let typeList = null;

async function destinationTypes() {
  if (!typeList) {
    try {
      typeList = (await api("GET", "/destination-types")).data;
    } catch {
      return [];
    }
  }
  return typeList;
}

function typeLabel(type) {
  return (typeList || []).find((t) => t.type === type)?.label || type;
}

function parseUrl(text) {
  try {
    const u = new URL(text.trim());
    return ["http:", "https:"].includes(u.protocol) ? u : null;
  } catch {
    return null;
  }
}

/** Client-side checks of each field by its kind; the server's word is final. */
function validate(type, v, unchanged) {
  const errors = {};
  if (!v.name.trim()) errors.name = "Give the destination a name.";
  else if (v.name.length > 100) errors.name = "At most 100 characters.";
  if (!(v.sampling_rate >= 0.0001 && v.sampling_rate <= 1)) errors.sampling_rate = "Between 0.0001 and 1.";
  for (const f of type.fields) {
    const text = (v.fields[f.name] || "").trim();
    if (!text) {
      if (f.required) errors[f.name] = "Required.";
      continue;
    }
    if (unchanged(f.name)) continue; // a stored secret, shown redacted: kept as it is
    if ((f.kind === "url" || f.kind === "secret_url") && !parseUrl(text)) errors[f.name] = "Not a URL: it starts with https://";
    if (f.kind === "dsn") {
      const dsn = parseUrl(text);
      if (!dsn) errors[f.name] = "Not a URL: a DSN looks like https://<key>@o0.ingest.sentry.io/<project id>";
      else if (!dsn.username || !/^[A-Za-z0-9]+$/.test(dsn.username)) errors[f.name] = "The public key before @ is missing: copy the whole DSN.";
      else if (!/^\d+$/.test(dsn.pathname.replace(/\/+$/, "").split("/").pop())) errors[f.name] = "The DSN must end with the numeric project id.";
    }
    if (f.kind === "headers") {
      for (const line of text.split("\n").filter((l) => l.trim())) {
        if (!/^[A-Za-z0-9!#$%&'*+.^_`|~-]+\s*:/.test(line)) {
          errors[f.name] = `“${line.slice(0, 30)}” is not “name: value”.`;
          break;
        }
      }
    }
  }
  return errors;
}

function field(id, label, input, help) {
  input.id = id;
  input.setAttribute("aria-describedby", `${id}-help ${id}-error`);
  return h("div", { class: "field" },
    h("label", { for: id }, label),
    input,
    help ? h("p", { class: "help", id: `${id}-help` }, help) : null,
    h("p", { class: "error", id: `${id}-error`, "aria-live": "polite" }));
}

/** The input of one type field, holding `value` (a string, or a headers object). */
function fieldInput(f, value) {
  if (f.kind === "headers") {
    const t = h("textarea", { spellcheck: "false", placeholder: "authorization: Bearer …" });
    t.value = Object.entries(value || {}).map(([k, v]) => `${k}: ${v}`).join("\n");
    return t;
  }
  if (f.kind === "choice") {
    const sel = h("select", {}, f.options.map((o) => h("option", { value: o }, o)));
    sel.value = value || f.default || f.options[0];
    return sel;
  }
  return h("input", {
    type: f.kind === "url" || f.kind === "secret_url" ? "url" : "text", value: value ?? "", autocomplete: "off",
    spellcheck: "false", placeholder: f.default || (f.kind.endsWith("url") ? "https://" : ""),
  });
}

async function openEditor(kind, existing) {
  await destinationTypes();
  const type = (typeList || []).find((t) => t.type === kind);
  if (!type) {
    toast(`Unknown destination type ${kind}`);
    return;
  }
  let keys = [];
  try {
    keys = (await api("GET", tenantPath("/keys"))).data.filter((k) => !k.revoked_at);
  } catch { /* the filter is optional */ }
  const isNew = !existing;
  const d = existing || { name: "", enabled: true, privacy_mode: false, sampling_rate: 1, api_keys: [] };
  const typeInputs = Object.fromEntries(type.fields.map((f) => [f.name, fieldInput(f, d[f.name])]));
  const inputs = {
    name: h("input", { type: "text", value: d.name, autocomplete: "off", required: true }),
    ...typeInputs,
    enabled: h("input", { type: "checkbox", id: "enabled", checked: d.enabled }),
    privacy_mode: h("input", { type: "checkbox", id: "privacy_mode", checked: d.privacy_mode }),
    sampling_rate: h("input", { type: "number", min: "0.0001", max: "1", step: "any", value: String(d.sampling_rate) }),
  };

  const keyBoxes = keys.map((k) => h("input", { type: "checkbox", value: k.id, id: `key-${k.id}`, checked: d.api_keys.includes(k.id) || d.api_keys.includes(k.name) }));
  const result = h("div", { id: "test-result", class: "result", role: "status", "aria-live": "polite" });
  const testButton = h("button", { type: "button", id: "test-connection" }, "Test Connection");
  const saveButton = h("button", { type: "submit", class: "primary", id: "save-destination", disabled: true }, "Save");
  const saveHint = h("span", { id: "save-hint", class: "help" });
  const formError = h("p", { class: "error", role: "alert", id: "form-error" });

  const target = type.fields.map((f) => field(f.name, f.label, typeInputs[f.name],
    !isNew && f.secret ? `${f.help} Shown redacted: leave it as it is to keep the stored value, or enter a new one.` : f.help));
  const docs = h("p", { class: "help" }, "Where to find these: ",
    h("a", { href: type.docs, target: "_blank", rel: "noopener noreferrer" }, `${type.label} documentation`), ".");

  const form = h("form", { method: "dialog", novalidate: true },
    h("div", { class: "head" }, h("h2", { id: "editor-title" },
      `${isNew ? "Add" : "Edit"} ${type.label} destination`)),
    h("div", { class: "body" },
      field("name", "Name", inputs.name, "Shown in this list and in Beacon's metrics."),
      target,
      docs,
      h("div", { class: "field" }, h("label", { class: "check" }, inputs.enabled, h("span", {}, "Enabled"))),
      h("div", { class: "field" },
        h("label", { class: "check" }, inputs.privacy_mode, h("span", {}, "Privacy mode")),
        h("p", { class: "help" }, "No prompt or completion text leaves Beacon; tokens, cost, timing and model are still sent.")),
      field("sampling_rate", "Sampling rate", inputs.sampling_rate,
        "Fraction of sessions exported (1 = all). A session is kept or dropped whole."),
      h("fieldset", {}, h("legend", {}, "API-key filter"),
        keyBoxes.length
          ? keys.map((k, i) => h("label", { class: "check", for: `key-${k.id}` }, keyBoxes[i], h("span", {}, `${k.name} `, h("span", { class: "muted small" }, `${k.id} · ${k.role}`))))
          : h("p", { class: "muted small" }, "This tenant has no keys in the store yet."),
        h("p", { class: "help" }, "Export only completions made with the checked keys. None checked: every key.")),
      result,
      formError),
    h("div", { class: "foot" },
      testButton, saveButton, saveHint, h("span", { class: "spacer" }),
      h("button", { type: "button", id: "cancel-editor", onclick: () => dialog.close() }, "Cancel")));
  const dialog = h("dialog", { "aria-labelledby": "editor-title", id: "destination-editor" }, form);
  document.body.append(dialog);
  dialog.addEventListener("close", () => dialog.remove());

  const targetKeys = type.fields.map((f) => f.name);
  const original = {};
  for (const k of targetKeys) original[k] = inputs[k].value;
  let passedFor = null; // the target values that last passed a test

  const values = () => ({
    name: inputs.name.value,
    fields: Object.fromEntries(targetKeys.map((k) => [k, inputs[k].value])),
    sampling_rate: Number(inputs.sampling_rate.value),
  });
  const unchanged = (k) => !isNew && inputs[k].value === original[k];
  const targetNow = () => JSON.stringify(targetKeys.map((k) => inputs[k].value));
  const targetChanged = () => isNew || targetKeys.some((k) => inputs[k].value !== original[k]);

  function body() {
    const v = values();
    const b = {
      type: kind, name: v.name.trim(), enabled: inputs.enabled.checked,
      privacy_mode: inputs.privacy_mode.checked, sampling_rate: v.sampling_rate,
      api_keys: keyBoxes.filter((c) => c.checked).map((c) => c.value),
    };
    for (const f of type.fields) {
      const text = v.fields[f.name].trim();
      if (f.kind === "headers") {
        b[f.name] = Object.fromEntries(text.split("\n").filter((l) => l.includes(":"))
          .map((l) => [l.slice(0, l.indexOf(":")).trim(), l.slice(l.indexOf(":") + 1).trim()]));
      } else if (text) {
        b[f.name] = text;
      } else if (!isNew) {
        b[f.name] = null; // cleared: its default applies again
      }
    }
    return b;
  }

  function showErrors(errors, touchedOnly) {
    for (const [k, input] of Object.entries(inputs)) {
      const slot = document.getElementById(`${k}-error`);
      if (!slot) continue;
      const show = errors[k] && (!touchedOnly || input.dataset.touched);
      slot.textContent = show ? errors[k] : "";
      if (show) input.setAttribute("aria-invalid", "true");
      else input.removeAttribute("aria-invalid");
    }
  }

  function update() {
    const errors = validate(type, values(), unchanged);
    showErrors(errors, true);
    const valid = Object.keys(errors).length === 0;
    testButton.disabled = !valid;
    const tested = passedFor === targetNow();
    const needsTest = targetChanged() && !tested;
    saveButton.disabled = !valid || needsTest;
    saveHint.textContent = !valid ? "Fix the highlighted fields."
      : needsTest ? "Save is enabled once Test Connection passes for these values."
      : tested ? "Test passed: ready to save." : "";
    return valid;
  }

  for (const input of Object.values(inputs)) {
    input.addEventListener("input", () => { input.dataset.touched = "1"; update(); });
    input.addEventListener("change", () => { input.dataset.touched = "1"; update(); });
    input.addEventListener("blur", () => { input.dataset.touched = "1"; update(); });
  }

  function showReport(report) {
    result.className = `result ${report.ok ? "pass" : "fail"}`;
    const head = report.ok ? "✓ Connection OK" : (report.reached ? "✗ Destination refused the test" : "✗ Destination not reached");
    const facts = [report.status ? `HTTP ${report.status}` : null, `${report.latency_ms} ms`].filter(Boolean).join(" · ");
    result.replaceChildren(h("strong", {}, head), ` — ${facts}`, h("br"), h("span", { class: "test-message" }, report.message));
    result.scrollIntoView({ block: "nearest" });
  }

  function showServerError(err) {
    const fields = err.body?.error?.fields;
    if (err.status === 400 && fields) {
      const errors = Object.fromEntries(fields.map((f) => [f.field, f.message]));
      for (const k of Object.keys(errors)) if (inputs[k]) inputs[k].dataset.touched = "1";
      showErrors(errors, false);
      formError.textContent = fields.some((f) => !inputs[f.field]) ? err.message : "";
    } else {
      formError.textContent = err.message;
    }
  }

  testButton.addEventListener("click", async () => {
    for (const input of Object.values(inputs)) input.dataset.touched = "1";
    if (!update()) return;
    const tested = targetNow();
    testButton.disabled = true;
    formError.textContent = "";
    result.className = "result pending";
    result.textContent = kind === "sentry"
      ? "Testing… sending one test span, then asking Sentry again about 1, 2 and 4 seconds later."
      : "Testing… sending one test delivery.";
    try {
      const payload = body();
      let report = null;
      if (isNew) {
        report = await api("POST", tenantPath("/destinations/test"), payload);
      } else if (targetChanged()) {
        // The stored destination with these changes: a secret left redacted keeps its value.
        delete payload.type;
        report = await api("POST", tenantPath(`/destinations/${encodeURIComponent(d.id)}/test`), payload);
      }
      if (report) {
        showReport(report);
        if (report.ok) passedFor = tested;
      } else {
        result.className = "result pass";
        result.textContent = "The endpoint and credentials are the saved ones, which passed when they were saved.";
        passedFor = tested;
      }
    } catch (err) {
      result.textContent = "";
      showServerError(err);
    } finally {
      update();
    }
  });

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!update()) return;
    saveButton.disabled = true;
    formError.textContent = "";
    saveHint.textContent = isNew || targetChanged() ? "Saving… (tested again on save)" : "Saving…";
    try {
      if (isNew) {
        await api("POST", tenantPath("/destinations"), body());
      } else {
        const patch = body();
        delete patch.type;
        await api("PATCH", tenantPath(`/destinations/${encodeURIComponent(d.id)}`), patch);
      }
      dialog.close();
      toast(`Saved ${inputs.name.value.trim()}`);
      await refreshDestinations();
    } catch (err) {
      if (err.status === 422 && err.body?.test) {
        showReport(err.body.test);
        passedFor = null;
        formError.textContent = "Not saved: Test Connection failed.";
      } else {
        showServerError(err);
      }
      update();
    }
  });

  dialog.showModal();
  update();
  inputs.name.focus();
}

// ---------------------------------------------------------------- recent completions

const OUTCOME_TEXT = { ok: "ok", upstream_error: "upstream error", client_cancelled: "cancelled", timeout: "timeout", shutdown: "shutdown" };

function usd(cost) {
  if (!cost || cost.total === undefined) return "—";
  const n = Number(cost.total);
  return n < 0.01 ? `$${n.toPrecision(3)}` : `$${n.toFixed(4)}`;
}

function ms(us) {
  return us === null || us === undefined ? "—" : `${(us / 1000).toFixed(us < 10000 ? 1 : 0)} ms`;
}

function deliveries(destinations) {
  if (!destinations.length) return h("span", { class: "muted" }, "none (broadcast off or no destination)");
  return destinations.map((d) => h("span", {
    class: `badge ${d.state === "exported" ? "ok" : d.state === "dropped" ? "bad" : "muted"}`,
    title: d.reason ? `${d.state}: ${d.reason}` : d.state,
  }, `${d.name}: ${d.state === "dropped" ? d.reason : d.state}`));
}

async function renderRecent() {
  const main = $("main");
  const tbody = h("tbody", { id: "recent-body" });
  main.replaceChildren(
    h("h1", { tabindex: "-1", id: "page-title" }, "Recent completions"),
    h("p", { class: "lede" },
      "The last completions this node handled for this tenant — model, tokens, cost, timings, outcome, and what each destination received. Choose one to see its spans exactly as they were exported."),
    h("section", { class: "card", "aria-labelledby": "recent-title" },
      h("h2", { id: "recent-title" }, "Completions"),
      h("table", { "aria-labelledby": "recent-title" },
        h("thead", {}, h("tr", {},
          ["Time", "Model", "API", "Tokens in / out", "Cost", "First chunk", "Duration", "Outcome", "Destinations", ""]
            .map((c) => h("th", { scope: "col" }, c)))),
        tbody)),
    h("section", { class: "card", id: "recent-detail", "aria-live": "polite", hidden: true }));
  await refreshRecent();
  state.timer = setInterval(refreshRecent, REFRESH_MS);
}

async function refreshRecent() {
  const tbody = $("recent-body");
  if (!tbody) return;
  let list;
  try {
    list = (await api("GET", tenantPath("/recent"))).data;
  } catch (err) {
    return;
  }
  if (!$("recent-body")) return;
  if (list.length === 0) {
    tbody.replaceChildren(h("tr", {}, h("td", { colspan: 10, class: "empty" },
      "No completions on this node yet. Send a request with one of this tenant's keys.")));
    return;
  }
  tbody.replaceChildren(...list.map((e) => {
    const r = e.record;
    const when = new Date(Math.floor(r.timings.received_unix_nanos / 1e6));
    return h("tr", { "data-request": e.request_id },
      h("td", { class: "small" }, when.toLocaleTimeString()),
      h("th", { scope: "row" }, r.requested_model),
      h("td", {}, r.api),
      h("td", { class: "num" }, `${r.usage.prompt_tokens} / ${r.usage.completion_tokens}${r.usage.estimated ? " (est.)" : ""}`),
      h("td", { class: "num", "data-col": "cost" }, usd(r.cost)),
      h("td", { class: "num" }, ms(r.timings.first_chunk_us)),
      h("td", { class: "num" }, ms(r.timings.last_byte_us)),
      h("td", {}, h("span", { class: r.outcome.kind === "ok" ? "ok" : "bad" }, OUTCOME_TEXT[r.outcome.kind] || r.outcome.kind)),
      h("td", { class: "small" }, deliveries(e.destinations)),
      h("td", {}, h("button", { type: "button", "aria-label": `Spans of ${e.request_id}`, onclick: () => showCompletion(e.request_id) }, "Spans")));
  }));
}

async function showCompletion(requestId) {
  const panel = $("recent-detail");
  if (!panel) return;
  let e;
  try {
    e = await api("GET", tenantPath(`/recent/${encodeURIComponent(requestId)}`));
  } catch (err) {
    toast(err.message);
    return;
  }
  const r = e.record;
  const facts = [
    ["Request", e.request_id], ["Model", `${r.requested_model} → ${r.provider}/${r.served_model || r.upstream_model}`],
    ["Tokens", `${r.usage.prompt_tokens} in (${r.usage.cached_tokens} cached), ${r.usage.completion_tokens} out (${r.usage.reasoning_tokens} reasoning)`],
    ["Cost", `${usd(r.cost)} (${r.cost.source})`], ["Gateway overhead", ms(r.timings.gateway_overhead_us)],
    ["Upstream status", r.upstream_status ?? "—"], ["Attempts", String(r.attempts.length + 1)],
  ];
  panel.hidden = false;
  panel.replaceChildren(
    h("h2", { id: "detail-title" }, `Completion ${e.request_id}`),
    h("dl", { class: "facts" }, facts.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v))])),
    ...e.destinations.map((d) => h("section", { class: "spans", "data-destination": d.name },
      h("h3", {}, `${d.name} — ${d.state}${d.reason ? ` (${d.reason})` : ""}`),
      Array.isArray(d.spans)
        ? d.spans.map((s) => h("details", { class: "span", "data-span": s.name },
          h("summary", {}, h("strong", {}, s.name), " ", h("code", { class: "small" }, s.span_id),
            s.parent_span_id ? h("span", { class: "muted small" }, ` parent ${s.parent_span_id}`) : null,
            h("span", { class: "muted small" }, ` ${((s.end_time_unix_nano - s.start_time_unix_nano) / 1e6).toFixed(1)} ms`)),
          h("table", { class: "attrs" }, h("tbody", {},
            Object.entries(s.attributes).map(([k, v]) => h("tr", {},
              h("th", { scope: "row" }, h("code", {}, k)),
              h("td", {}, typeof v === "string" ? v : JSON.stringify(v))))))))
        : h("p", { class: "muted" }, d.spans?.omitted || (d.state === "exported" ? "Spans not kept." : "Nothing was exported to this destination.")))));
  panel.querySelector("details")?.setAttribute("open", "");
  $("detail-title").scrollIntoView({ block: "nearest" });
}

// ---------------------------------------------------------------- usage and limits

const LIMIT_FIELDS = [
  ["requests_per_minute", "Requests per minute"],
  ["tokens_per_minute", "Tokens per minute"],
  ["concurrent_requests", "Concurrent requests"],
  ["usd_per_day", "USD per day (UTC)"],
  ["usd_per_month", "USD per month (UTC)"],
];

function dayString(d) {
  return d.toISOString().slice(0, 10);
}

function money(usd) {
  return usd < 0.01 && usd > 0 ? `$${usd.toPrecision(3)}` : `$${usd.toFixed(2)}`;
}

/** Spend per day as an SVG bar chart (attributes only: the page's CSP allows no inline style). */
function spendChart(days, rows) {
  const byDay = Object.fromEntries(rows.map((r) => [r.group, r.cost_usd]));
  const values = days.map((d) => byDay[d] || 0);
  const max = Math.max(...values, 1e-9);
  const W = 720, H = 160, pad = 24, bw = (W - pad) / days.length;
  const svgNS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(svgNS, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H + 24}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("class", "chart");
  svg.setAttribute("aria-label", `Spend per day, ${days[0]} to ${days[days.length - 1]}: total ${money(values.reduce((a, b) => a + b, 0))}`);
  days.forEach((d, i) => {
    const h = Math.round((values[i] / max) * H);
    const rect = document.createElementNS(svgNS, "rect");
    rect.setAttribute("x", String(pad + i * bw + 2));
    rect.setAttribute("y", String(H - h));
    rect.setAttribute("width", String(Math.max(bw - 4, 1)));
    rect.setAttribute("height", String(Math.max(h, values[i] > 0 ? 1 : 0)));
    rect.setAttribute("class", "bar");
    rect.setAttribute("data-day", d);
    const title = document.createElementNS(svgNS, "title");
    title.textContent = `${d}: ${money(values[i])}`;
    rect.append(title);
    svg.append(rect);
    if (i % Math.ceil(days.length / 7) === 0) {
      const t = document.createElementNS(svgNS, "text");
      t.setAttribute("x", String(pad + i * bw + 2));
      t.setAttribute("y", String(H + 16));
      t.setAttribute("class", "axis");
      t.textContent = d.slice(5);
      svg.append(t);
    }
  });
  return svg;
}

function usageTable(id, title, rows, label) {
  const sorted = [...rows].sort((a, b) => b.cost_usd - a.cost_usd || b.requests - a.requests).slice(0, 10);
  return h("section", { class: "card", "aria-labelledby": `${id}-title` },
    h("h2", { id: `${id}-title` }, title),
    h("table", { "aria-labelledby": `${id}-title` },
      h("thead", {}, h("tr", {}, [label, "Requests", "Tokens in / out", "Errors", "Spend"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", { id: `${id}-body` }, sorted.length ? sorted.map((r) => h("tr", { "data-group": r.group },
        h("th", { scope: "row" }, h("code", {}, r.group)),
        h("td", { class: "num" }, String(r.requests)),
        h("td", { class: "num" }, `${r.input_tokens} / ${r.output_tokens}`),
        h("td", { class: "num" }, String(r.errors)),
        h("td", { class: "num" }, money(r.cost_usd)))) : h("tr", {}, h("td", { colspan: 5, class: "empty" }, "No usage in this period.")))));
}

/** "used / limit (pct)" with a meter, or "no limit". */
function closeness(used, limit, fmt = String) {
  if (limit === undefined || limit === null) return h("span", { class: "muted" }, "no limit");
  const pct = limit > 0 ? Math.min(100, Math.round((used / limit) * 100)) : 100;
  return h("span", { class: pct >= 90 ? "bad" : pct >= 70 ? "warn" : "ok" },
    h("meter", { min: "0", max: "100", value: String(pct), "aria-label": `${pct} % of the limit` }),
    ` ${fmt(used)} / ${fmt(limit)} (${pct} %)`);
}

async function renderUsage() {
  const main = $("main");
  const days = [];
  const today = new Date();
  for (let i = 29; i >= 0; i--) days.push(dayString(new Date(Date.UTC(today.getUTCFullYear(), today.getUTCMonth(), today.getUTCDate() - i))));
  const from = Math.floor(Date.UTC(today.getUTCFullYear(), today.getUTCMonth(), today.getUTCDate() - 29) / 1000);
  let byDay, byKey, byModel, todayByKey, minuteByKey, limits, keys;
  try {
    const startOfDay = Math.floor(Date.UTC(today.getUTCFullYear(), today.getUTCMonth(), today.getUTCDate()) / 1000);
    [byDay, byKey, byModel, todayByKey, minuteByKey, limits, keys] = await Promise.all([
      api("GET", tenantPath(`/usage?group_by=day&from=${from}`)),
      api("GET", tenantPath(`/usage?group_by=key&from=${from}`)),
      api("GET", tenantPath(`/usage?group_by=model&from=${from}`)),
      api("GET", tenantPath(`/usage?group_by=key&from=${startOfDay}`)),
      api("GET", tenantPath(`/usage?group_by=key&from=${Math.floor(Date.now() / 1000) - 60}`)),
      api("GET", tenantPath("/limits")),
      api("GET", tenantPath("/keys")),
    ]);
  } catch (err) {
    main.replaceChildren(h("p", { class: "error", role: "alert" }, `Could not load usage: ${err.message}`));
    return;
  }
  const today_ = Object.fromEntries(todayByKey.data.map((r) => [r.group, r]));
  const minute = Object.fromEntries(minuteByKey.data.map((r) => [r.group, r]));
  const limitRows = keys.data.filter((k) => !k.revoked_at).map((k) => {
    const l = limits.keys[k.id] || {};
    return h("tr", { "data-key": k.id },
      h("th", { scope: "row" }, k.name, " ", h("code", { class: "small" }, k.id)),
      h("td", { class: "small" }, closeness(minute[k.id]?.requests || 0, l.requests_per_minute)),
      h("td", { class: "small" }, closeness(today_[k.id]?.cost_usd || 0, l.usd_per_day, money)),
      h("td", { class: "small" }, Object.keys(l).length ? Object.entries(l).map(([f, v]) => `${f} = ${v}`).join(", ") : h("span", { class: "muted" }, "none")));
  });
  main.replaceChildren(
    h("h1", { tabindex: "-1", id: "page-title" }, "Usage"),
    h("p", { class: "lede" }, `Spend, tokens and requests of this tenant over the last 30 days (UTC), from every node's usage ledger, and each key's limits with how close it is now. Total: ${money(byDay.total.cost_usd)} over ${byDay.total.requests} requests.`),
    h("section", { class: "card", "aria-labelledby": "spend-title" },
      h("h2", { id: "spend-title" }, "Spend per day"), spendChart(days, byDay.data)),
    h("div", { class: "two" },
      usageTable("top-keys", "Top keys", byKey.data, "Key"),
      usageTable("top-models", "Top models", byModel.data, "Model")),
    h("section", { class: "card", "aria-labelledby": "limits-title" },
      h("h2", { id: "limits-title" }, "Limits"),
      h("p", { class: "help" }, "Tenant limits: ",
        Object.keys(limits.tenant).length ? Object.entries(limits.tenant).map(([f, v]) => `${f} = ${v}`).join(", ") : "none",
        state.session.role === "operator" ? "" : " (set by the operator)"),
      h("table", { "aria-labelledby": "limits-title" },
        h("thead", {}, h("tr", {}, ["Key", "Requests in the last minute", "Spend today", "Limits"].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", { id: "limits-body" }, limitRows.length ? limitRows : h("tr", {}, h("td", { colspan: 4, class: "empty" }, "No active keys."))))),
    limitsEditor(keys.data.filter((k) => !k.revoked_at), limits));
}

function limitsEditor(keys, limits) {
  const target = h("select", { id: "limits-target" },
    state.session.role === "operator" ? h("option", { value: "" }, "The whole tenant") : null,
    keys.map((k) => h("option", { value: k.id }, `Key ${k.name} (${k.id})`)));
  const inputs = Object.fromEntries(LIMIT_FIELDS.map(([f]) => [f, h("input", { id: `limit-${f}`, type: "number", min: "0", step: f.startsWith("usd") ? "0.01" : "1", inputmode: "decimal" })]));
  const error = h("p", { class: "error", role: "alert", id: "limits-error" });
  const fill = () => {
    const current = target.value ? limits.keys[target.value] || {} : limits.tenant;
    for (const [f] of LIMIT_FIELDS) inputs[f].value = current[f] ?? "";
  };
  target.addEventListener("change", fill);
  // Validated here, with the field named in the message, not by the browser's bubbles.
  const form = h("form", { "aria-labelledby": "editor-title", novalidate: true },
    h("div", { class: "field" }, h("label", { for: "limits-target" }, "Limits of"), target),
    h("div", { class: "grid" }, LIMIT_FIELDS.map(([f, label]) => h("div", { class: "field" }, h("label", { for: `limit-${f}` }, label), inputs[f]))),
    h("p", { class: "help" }, "Leave a field empty for no limit. Over a limit, requests get 429 (rate_limit_exceeded or budget_exceeded) until it frees up."),
    error,
    h("button", { type: "submit", class: "primary", id: "save-limits" }, "Save limits"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    error.textContent = "";
    const body = {};
    for (const [f] of LIMIT_FIELDS) {
      const v = inputs[f].value.trim();
      if (v === "") continue;
      const n = Number(v);
      if (!Number.isFinite(n) || n < 0 || (!f.startsWith("usd") && !Number.isInteger(n))) {
        error.textContent = `${f}: ${f.startsWith("usd") ? "a number of USD, 0 or more" : "a whole number, 0 or more"}.`;
        inputs[f].focus();
        return;
      }
      body[f] = n;
    }
    try {
      const path = target.value ? `/keys/${encodeURIComponent(target.value)}/limits` : "/limits";
      await api("PUT", tenantPath(path), body);
      toast("Limits saved: in force on every node within a second");
      await renderUsage();
    } catch (err) {
      error.textContent = err.message;
    }
  });
  fill();
  return h("section", { class: "card", "aria-labelledby": "editor-title" }, h("h2", { id: "editor-title" }, "Edit limits"), form);
}

// ---------------------------------------------------------------- keys

async function renderKeys() {
  const main = $("main");
  const name = h("input", { type: "text", required: true, autocomplete: "off", maxlength: "100" });
  const role = h("select", {},
    h("option", { value: "client" }, "client — completions"),
    h("option", { value: "management" }, "management — this tenant's console and admin API"));
  const created = h("div", { id: "created-key", "aria-live": "polite" });
  const formError = h("p", { class: "error", role: "alert" });
  const form = h("form", { class: "row", "aria-label": "Create a key" },
    h("div", { class: "field" }, h("label", { for: "key-name" }, "Name"), Object.assign(name, { id: "key-name" })),
    h("div", { class: "field" }, h("label", { for: "key-role" }, "Role"), Object.assign(role, { id: "key-role" })),
    h("button", { type: "submit", class: "primary", id: "create-key" }, "Create key"));
  const tbody = h("tbody", { id: "keys-body" });
  main.replaceChildren(
    h("h1", { tabindex: "-1", id: "page-title" }, "Keys"),
    h("p", { class: "lede" }, "Clients send a key as their OpenAI API key. A key is shown once, when it is created; Beacon keeps only its hash."),
    h("section", { class: "card", "aria-labelledby": "new-key-title" },
      h("h2", { id: "new-key-title" }, "New key"), form, formError, created),
    h("section", { class: "card", "aria-labelledby": "keys-title" },
      h("h2", { id: "keys-title" }, "Existing keys"),
      h("table", { "aria-labelledby": "keys-title" },
        h("thead", {}, h("tr", {}, ["Name", "ID", "Role", "Created", "Status", "Actions"].map((c) => h("th", { scope: "col" }, c)))),
        tbody)));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    formError.textContent = "";
    if (!name.value.trim()) {
      formError.textContent = "Give the key a name.";
      name.focus();
      return;
    }
    try {
      const k = await api("POST", tenantPath("/keys"), { name: name.value.trim(), role: role.value });
      const secret = h("input", { type: "text", readonly: true, class: "secret", id: "new-key-value", value: k.key, "aria-label": "The new key" });
      const copy = h("button", { type: "button", id: "copy-key" }, "Copy");
      copy.addEventListener("click", async () => {
        try {
          await navigator.clipboard.writeText(k.key);
        } catch {
          secret.select();
          document.execCommand("copy");
        }
        copy.textContent = "Copied";
        toast("Key copied to the clipboard");
      });
      created.replaceChildren(h("div", { class: "callout" },
        h("p", {}, h("strong", {}, `Key “${k.name}” (${k.role}) created. Copy it now: it will not be shown again.`)),
        h("div", { class: "row" }, secret, copy)));
      secret.focus();
      secret.select();
      name.value = "";
      await refreshKeys();
    } catch (err) {
      formError.textContent = err.message;
    }
  });
  await refreshKeys();
}

async function refreshKeys() {
  const tbody = $("keys-body");
  if (!tbody) return;
  const keys = (await api("GET", tenantPath("/keys"))).data;
  if (keys.length === 0) {
    tbody.replaceChildren(h("tr", {}, h("td", { colspan: 6, class: "empty" }, "No keys in the store yet.")));
    return;
  }
  tbody.replaceChildren(...keys.map((k) => h("tr", { "data-key": k.id },
    h("th", { scope: "row" }, k.name),
    h("td", { class: "small" }, h("code", {}, k.id)),
    h("td", {}, k.role),
    h("td", { class: "small" }, new Date(k.created_at * 1000).toLocaleString()),
    h("td", {}, k.revoked_at ? h("span", { class: "bad" }, "revoked") : h("span", { class: "ok" }, "active")),
    h("td", {}, k.revoked_at ? null : h("button", {
      type: "button", class: "danger", "aria-label": `Revoke ${k.name}`,
      onclick: async () => {
        if (!confirm(`Revoke key “${k.name}”? Requests with it are refused on every node within seconds.`)) return;
        try {
          await api("DELETE", tenantPath(`/keys/${encodeURIComponent(k.id)}`));
          toast(`Revoked ${k.name}`);
        } catch (err) {
          toast(`Could not revoke: ${err.message}`);
        }
        await refreshKeys();
      },
    }, "Revoke")))));
}

// ---------------------------------------------------------------- boot

window.addEventListener("hashchange", () => {
  route();
  $("page-title")?.focus();
});
document.addEventListener("DOMContentLoaded", () => {
  $("sign-out").addEventListener("click", () => signOut("Signed out."));
  $("tenant-picker").addEventListener("change", (e) => {
    state.tenant = e.target.value;
    sessionStorage.setItem(TENANT_KEY, state.tenant);
    route();
  });
  if (state.token) start().catch(() => signOut("Sign in again."));
  else renderSignIn();
});
