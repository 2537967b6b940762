// Browser test of the console (issue 5), driven by tests/tests/console.rs, which starts a
// real `beacon`, a mock upstream and a mock Sentry and passes their addresses here:
//   BEACON_URL, BEACON_OPERATOR_TOKEN, SENTRY_ENDPOINT, SENTRY_DSN, SENTRY_WRONG_DSN,
//   SCREENSHOT_DIR, CHROMIUM (default /usr/bin/chromium); and a `beacon demo` beside it:
//   DEMO_URL, DEMO_TOKEN, DEMO_KEY, FIRST_RUN (its first-run block)
// Debian's Chromium, headless, through playwright-core; axe-core audits each main state.

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { chromium } from "playwright-core";

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set: run this through \`cargo test -p beacon-e2e --test console\``);
  return v;
};
const BEACON = env("BEACON_URL");
const OPERATOR = env("BEACON_OPERATOR_TOKEN");
const ENDPOINT = env("SENTRY_ENDPOINT");
const DSN = env("SENTRY_DSN");
const WRONG_DSN = env("SENTRY_WRONG_DSN");
const SHOTS = env("SCREENSHOT_DIR");
const COLLECTOR = env("COLLECTOR_ENDPOINT");
const DEMO = env("DEMO_URL");
const DEMO_TOKEN = env("DEMO_TOKEN");
const DEMO_KEY = env("DEMO_KEY");
const FIRST_RUN = env("FIRST_RUN");
const PRESETS = JSON.parse(env("PRESETS"));
mkdirSync(SHOTS, { recursive: true });
const AXE = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");

async function shot(page, name) {
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

/** axe-core on the current page: no serious or critical violations. */
async function audit(page, what) {
  // Evaluated through the DevTools protocol: the page's CSP (script-src 'self') stays on.
  await page.evaluate(AXE);
  const result = await page.evaluate(async () =>
    // eslint-disable-next-line no-undef
    axe.run(document, { resultTypes: ["violations"] }));
  const bad = result.violations.filter((v) => ["serious", "critical"].includes(v.impact));
  assert.deepEqual(bad.map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target).join(", ")})`), [],
    `accessibility violations on ${what}`);
}

/** Debian's Chromium, headless. */
function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}

test("Settings › Observability: enable broadcast, test, save, and watch exports rise", async () => {
  const browser = await launch();
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    const consoleErrors = [];
    // Refused requests (the wrong token's 401) are logged by Chromium itself; anything else
    // in the console is the page's own error.
    page.on("console", (m) => {
      if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) consoleErrors.push(m.text());
    });
    page.on("pageerror", (e) => consoleErrors.push(String(e)));

    // Sign in: a wrong token is refused with a message, the operator token works.
    await page.goto(`${BEACON}/console`);
    await page.getByLabel("Operator token or management key").fill("definitely-not-the-token");
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("alert").filter({ hasText: "not accepted" }).waitFor();
    await audit(page, "sign-in");
    await shot(page, "01-sign-in");
    await page.getByLabel("Operator token or management key").fill(OPERATOR);
    await page.keyboard.press("Enter");
    await page.getByRole("heading", { name: "Observability" }).waitFor();
    assert.equal(await page.locator("#tenant-picker").inputValue(), "acme");

    // Enable Broadcast.
    const toggle = page.getByRole("switch", { name: /Enable Broadcast/ });
    await toggle.waitFor();
    await page.waitForFunction(() => document.querySelector("#broadcast-toggle .state").textContent !== "…");
    assert.equal(await toggle.getAttribute("aria-checked"), "false");
    await toggle.click();
    await page.waitForFunction(() => document.querySelector("#broadcast-toggle").getAttribute("aria-checked") === "true");
    await page.locator("#destinations-body").getByText("No destinations yet").waitFor();

    // Keyboard: the editor opens from the keyboard and Escape closes it.
    await page.getByRole("button", { name: "Add Sentry destination" }).focus();
    await page.keyboard.press("Enter");
    const dialog = page.getByRole("dialog", { name: "Add Sentry destination" });
    await dialog.waitFor();
    await page.keyboard.press("Escape");
    await dialog.waitFor({ state: "detached" });

    // A malformed DSN: an inline error on the field, nothing can be tested or saved.
    await page.getByRole("button", { name: "Add Sentry destination" }).click();
    await dialog.waitFor();
    await dialog.getByLabel("Name").fill("Sentry production");
    await dialog.getByLabel("OTLP Traces Endpoint").fill(ENDPOINT);
    const dsn = dialog.getByLabel("Sentry DSN");
    await dsn.fill("this is not a dsn");
    await dsn.blur();
    await dialog.locator("#dsn-error").filter({ hasText: "Not a URL" }).waitFor();
    assert.equal(await dsn.getAttribute("aria-invalid"), "true");
    assert.equal(await dialog.getByRole("button", { name: "Test Connection" }).isDisabled(), true);
    assert.equal(await dialog.getByRole("button", { name: "Save" }).isDisabled(), true);
    await audit(page, "editor with an inline error");
    await shot(page, "02-inline-error");

    // A DSN whose key Sentry refuses: the test fails with Sentry's text; Save stays disabled.
    await dsn.fill(WRONG_DSN);
    assert.equal(await dialog.getByRole("button", { name: "Save" }).isDisabled(), true);
    await dialog.getByRole("button", { name: "Test Connection" }).click();
    const result = dialog.locator("#test-result");
    await result.filter({ hasText: "refused the test" }).waitFor({ timeout: 15000 });
    const failed = await result.textContent();
    assert.match(failed, /HTTP 403/);
    assert.match(failed, /sentry_key/);
    assert.equal(await dialog.getByRole("button", { name: "Save" }).isDisabled(), true);
    await shot(page, "03-test-failed");

    // The right DSN: the test passes, Save is enabled and works.
    await dsn.fill(DSN);
    assert.equal(await dialog.getByRole("button", { name: "Save" }).isDisabled(), true, "a new value needs a new test");
    await dialog.getByRole("button", { name: "Test Connection" }).click();
    await result.filter({ hasText: "Connection OK" }).waitFor({ timeout: 15000 });
    assert.match(await result.textContent(), /HTTP 200/);
    assert.match(await result.textContent(), /beacon test connection/);
    await page.waitForFunction(() => !document.querySelector("#save-destination").disabled);
    await shot(page, "04-test-passed");
    await dialog.getByRole("button", { name: "Save" }).click();
    await dialog.waitFor({ state: "detached", timeout: 15000 });
    const row = page.locator('tr[data-destination="Sentry production"]');
    await row.waitFor();
    assert.equal((await row.locator('[data-col="exported"]').textContent()).trim(), "0");
    assert.doesNotMatch(await page.locator("#destinations-body").textContent(), new RegExp(new URL(DSN).username));

    // Keys: a new client key is shown once, with a copy button.
    await page.getByRole("link", { name: "Keys" }).click();
    await page.getByRole("heading", { name: "Keys", exact: true }).waitFor();
    await page.getByLabel("Name").fill("checkout-service");
    await page.getByRole("button", { name: "Create key" }).click();
    const secret = page.locator("#new-key-value");
    await secret.waitFor();
    const key = await secret.inputValue();
    assert.match(key, /^bk-/);
    await page.getByRole("button", { name: "Copy" }).click();
    await page.getByRole("button", { name: "Copied" }).waitFor();
    await page.locator('tr[data-key]').filter({ hasText: "checkout-service" }).waitFor();
    await audit(page, "keys");
    await shot(page, "05-key-created");

    // A completion through the gateway with that key makes the exported count rise.
    const completion = await fetch(`${BEACON}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: JSON.stringify({ model: "mock/echo", messages: [{ role: "user", content: "hello from the console test" }] }),
    });
    assert.equal(completion.status, 200);
    await page.getByRole("link", { name: "Settings › Observability" }).click();
    await page.waitForFunction(() => {
      const cell = document.querySelector('tr[data-destination="Sentry production"] [data-col="exported"]');
      return cell && Number(cell.textContent) >= 1;
    }, null, { timeout: 15000 });
    await page.locator('tr[data-destination="Sentry production"]').getByText("✓ ok").waitFor();
    await audit(page, "observability with a destination");
    await shot(page, "06-exported");

    // Recent completions: the completion, delivered to the destination, with its spans.
    await page.getByRole("link", { name: "Recent completions" }).click();
    await page.getByRole("heading", { name: "Recent completions" }).waitFor();
    const recent = page.locator("#recent-body tr[data-request]").first();
    await recent.getByText("mock/echo").waitFor({ timeout: 15000 });
    await recent.getByText("Sentry production: exported").waitFor({ timeout: 15000 });
    await recent.getByRole("button", { name: /^Spans of / }).click();
    await page.locator('#recent-detail section[data-destination="Sentry production"] details[data-span="chat mock/echo"]').waitFor();
    await page.locator("#recent-detail").getByText("gen_ai.usage.input_tokens").first().waitFor();
    await audit(page, "recent completions");

    // Usage: the completion in the ledger (written every 2 s), the chart, top keys; then a
    // limit set on the key through the editor.
    let keyRow = null;
    for (let i = 0; i < 40 && !keyRow; i++) {
      await page.getByRole("link", { name: "Recent completions" }).click();
      await page.getByRole("link", { name: "Usage" }).click();
      await page.getByRole("heading", { name: "Usage" }).waitFor();
      if (await page.locator("#top-keys-body tr[data-group]").count() > 0) keyRow = page.locator("#top-keys-body tr[data-group]").first();
      else await page.waitForTimeout(500);
    }
    assert.ok(keyRow, "the completion reached the usage ledger");
    const keyId = await keyRow.getAttribute("data-group");
    assert.match(keyId, /^key_[0-9a-f]{12}$/);
    assert.ok(await page.locator("svg.chart rect.bar").count() === 30, "30 days of bars");
    await page.locator("#top-models-body tr[data-group=\"mock/echo\"]").waitFor();
    await page.getByLabel("Limits of").selectOption(keyId);
    await page.getByLabel("Requests per minute").fill("-1");
    await page.getByRole("button", { name: "Save limits" }).click();
    await page.locator("#limits-error").filter({ hasText: "requests_per_minute" }).waitFor();
    await page.getByLabel("Requests per minute").fill("100");
    await page.getByLabel("USD per day (UTC)").fill("2.5");
    await page.getByRole("button", { name: "Save limits" }).click();
    await page.locator(`#limits-body tr[data-key="${keyId}"]`).getByText("requests_per_minute = 100").waitFor();
    await page.locator(`#limits-body tr[data-key="${keyId}"]`).getByText("/ 100").waitFor();
    await audit(page, "usage");
    await shot(page, "08-usage");
    await page.getByRole("link", { name: "Settings › Observability" }).click();
    await page.getByRole("heading", { name: "Observability" }).waitFor();

    // Edit: a change that does not touch the endpoint or DSN saves without a new test.
    await page.getByRole("button", { name: "Edit Sentry production" }).click();
    const edit = page.getByRole("dialog", { name: "Edit Sentry destination" });
    await edit.waitFor();
    assert.match(await edit.getByLabel("Sentry DSN").inputValue(), /…@/);
    await edit.getByLabel("Sampling rate").fill("0.5");
    await page.waitForFunction(() => !document.querySelector("#save-destination").disabled);
    await edit.getByRole("button", { name: "Save" }).click();
    await edit.waitFor({ state: "detached" });
    await page.locator('tr[data-destination="Sentry production"]').getByText("50 %").waitFor();

    // A management key signs in to its own tenant only.
    await page.getByRole("link", { name: "Keys" }).click();
    await page.getByLabel("Name").fill("acme-admin");
    await page.getByLabel("Role").selectOption("management");
    await page.getByRole("button", { name: "Create key" }).click();
    const mgmt = await page.locator("#new-key-value").inputValue();
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.getByLabel("Operator token or management key").fill(mgmt);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("heading", { name: "Keys", exact: true }).waitFor(); // the page it was on
    await page.getByRole("link", { name: "Settings › Observability" }).click();
    await page.getByRole("heading", { name: "Observability" }).waitFor();
    assert.equal(await page.locator("#tenant-picker").isHidden(), true);
    await page.getByText("Tenant acme").waitFor();

    // A generic OTLP destination with a header: tested, saved, the header value redacted.
    await page.getByLabel("Other destination type").selectOption("otlp");
    await page.getByRole("button", { name: "Add destination", exact: true }).click();
    const otlp = page.getByRole("dialog", { name: "Add OTLP destination" });
    await otlp.waitFor();
    await otlp.getByLabel("Name").fill("Collector");
    await otlp.getByLabel("OTLP/HTTP traces endpoint").fill(COLLECTOR);
    await otlp.getByLabel("Headers").fill("no colon here");
    await otlp.getByLabel("Headers").blur();
    await otlp.locator("#headers-error").filter({ hasText: "name: value" }).waitFor();
    await otlp.getByLabel("Headers").fill("authorization: Bearer collector-secret-42");
    await otlp.getByRole("button", { name: "Test Connection" }).click();
    await otlp.locator("#test-result").filter({ hasText: "Connection OK" }).waitFor({ timeout: 15000 });
    await otlp.getByRole("button", { name: "Save" }).click();
    await otlp.waitFor({ state: "detached", timeout: 15000 });
    await page.locator('tr[data-destination="Collector"]').waitFor();
    await page.getByRole("button", { name: "Edit Collector" }).click();
    const otlpEdit = page.getByRole("dialog", { name: "Edit OTLP destination" });
    const headers = await otlpEdit.getByLabel("Headers").inputValue();
    assert.match(headers, /^authorization: Bear…$/);
    await otlpEdit.getByRole("button", { name: "Cancel" }).click();
    await otlpEdit.waitFor({ state: "detached" });
    page.once("dialog", (d) => d.accept());
    await page.getByRole("button", { name: "Delete Collector" }).click();
    await page.locator('tr[data-destination="Collector"]').waitFor({ state: "detached" });

    // Every other preset: its form drawn from the server's field list, tested against a mock
    // of that service, saved, listed with its type, its secret shown redacted, deleted.
    for (const p of PRESETS) {
      await page.getByLabel("Other destination type").selectOption(p.type);
      await page.getByRole("button", { name: "Add destination", exact: true }).click();
      const form = page.getByRole("dialog", { name: `Add ${p.label} destination` });
      await form.waitFor();
      const name = `${p.label} prod`;
      await form.getByLabel("Name", { exact: true }).fill(name);
      for (const [label, value] of p.fields) await form.getByLabel(label, { exact: true }).fill(value);
      if (p.choice) await form.getByLabel(p.choice[0], { exact: true }).selectOption(p.choice[1]);
      const secretInput = form.getByLabel(p.secret[0], { exact: true });
      // Required (Phoenix's key is optional): an inline error until it is given.
      if (!p.optional) {
        await secretInput.fill("");
        await secretInput.blur();
        await form.locator(".error").filter({ hasText: "Required." }).first().waitFor();
        assert.equal(await form.getByRole("button", { name: "Test Connection" }).isDisabled(), true);
      }
      await secretInput.fill(p.secret[1]);
      await form.getByRole("link", { name: `${p.label} documentation` }).waitFor();
      if (p.type === "langfuse") {
        await audit(page, "a preset's form");
        await shot(page, "09-langfuse-form");
      }
      await form.getByRole("button", { name: "Test Connection" }).click();
      await form.locator("#test-result").filter({ hasText: "Connection OK" }).waitFor({ timeout: 15000 });
      await form.getByRole("button", { name: "Save" }).click();
      await form.waitFor({ state: "detached", timeout: 15000 });
      const row = page.locator(`tr[data-destination="${name}"]`);
      await row.waitFor();
      assert.match(await row.textContent(), new RegExp(p.label.replace(/[()]/g, "\\$&")));
      await page.getByRole("button", { name: `Edit ${name}` }).click();
      const edit = page.getByRole("dialog", { name: `Edit ${p.label} destination` });
      assert.equal(await edit.getByLabel(p.secret[0], { exact: true }).inputValue(), `${p.secret[1].slice(0, 4)}…`);
      await edit.getByRole("button", { name: "Cancel" }).click();
      await edit.waitFor({ state: "detached" });
      assert.doesNotMatch(await page.locator("#destinations-body").textContent(), new RegExp(p.secret[1]));
      page.once("dialog", (d) => d.accept());
      await page.getByRole("button", { name: `Delete ${name}` }).click();
      await row.waitFor({ state: "detached" });
    }

    // Delete.
    page.once("dialog", (d) => d.accept());
    await page.getByRole("button", { name: "Delete Sentry production" }).click();
    await page.locator("#destinations-body").getByText("No destinations yet").waitFor();

    assert.deepEqual(consoleErrors, [], "errors in the browser console");
  } finally {
    await browser.close();
  }
});

test("beacon demo: the first-run block, and a completion in Recent completions", async () => {
  const browser = await launch();
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    const pageErrors = [];
    page.on("pageerror", (e) => pageErrors.push(String(e)));

    // The first-run block as a terminal shows it (docs/console/00-first-run.png).
    await page.setContent(`<!doctype html><html><body style="margin:0;background:#1e1e2e">
      <pre id="out" style="display:inline-block;margin:0;padding:16px 20px;color:#e6e6e6;font:14px/1.45 'DejaVu Sans Mono',monospace;white-space:pre"></pre></body></html>`);
    await page.evaluate((text) => {
      document.getElementById("out").textContent = `$ beacon demo\n${text}`;
    }, FIRST_RUN);
    await page.locator("#out").screenshot({ path: join(SHOTS, "00-first-run.png") });

    // Two completions through the demo: one plain, one streamed.
    for (const stream of [false, true]) {
      const r = await fetch(`${DEMO}/v1/chat/completions`, {
        method: "POST",
        headers: { authorization: `Bearer ${DEMO_KEY}`, "content-type": "application/json" },
        body: JSON.stringify({ model: "demo/echo-1", stream, messages: [
          { role: "system", content: "You are a helpful assistant." },
          { role: "user", content: stream ? "What does Beacon broadcast?" : "Hello, Beacon!" }] }),
      });
      assert.equal(r.status, 200);
      const text = await r.text();
      assert.match(text, /Echo:/);
    }

    // Sign in with the printed token, open Recent completions, open the newest one's spans.
    await page.goto(`${DEMO}/console`);
    await page.getByLabel("Operator token or management key").fill(DEMO_TOKEN);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("heading", { name: "Observability" }).waitFor();
    await page.getByRole("link", { name: "Recent completions" }).click();
    const rows = page.locator("#recent-body tr[data-request]");
    await page.waitForFunction(() => document.querySelectorAll("#recent-body tr[data-request]").length >= 2
      && [...document.querySelectorAll("#recent-body tr[data-request]")].every((r) => r.textContent.includes("demo-receiver: exported")),
    null, { timeout: 15000 });
    assert.match(await rows.first().locator('[data-col="cost"]').textContent(), /^\$/);
    await rows.first().getByRole("button", { name: /^Spans of / }).click();
    const detail = page.locator('#recent-detail section[data-destination="demo-receiver"]');
    await detail.locator('details[data-span="chat demo/echo-1"]').waitFor();
    await detail.getByText("What does Beacon broadcast?").first().waitFor();
    await audit(page, "recent completions (demo)");
    await shot(page, "07-recent-completions");
    assert.deepEqual(pageErrors, [], "errors in the page");
  } finally {
    await browser.close();
  }
});
