// Drives the web console in Debian's chromium (headless) through playwright-core,
// as a user would: log in, see the worker, deploy through the form after its dry
// run, watch the model run, chat in the playground (streamed), embed, create a key
// and a user, see usage, events and the audit log, change the password. Prints one
// JSON object of what it saw; screenshots of every page go to SHOTS_DIR.
// Env: BASE_URL, ADMIN_PASSWORD, MODEL_PATH, SHOTS_DIR, CHROMIUM.
const { chromium } = require("playwright-core");
const path = require("path");

const base = process.env.BASE_URL;
const shots = process.env.SHOTS_DIR;
const out = { pages: {}, labels_missing: {} };

async function shot(page, name) {
  await page.screenshot({ path: path.join(shots, name + ".png"), fullPage: true });
}

// Every form control has a label (or an aria-label): the page is usable with a screen reader.
async function unlabelled(page) {
  return page.evaluate(() => [...document.querySelectorAll("input, select, textarea")]
    .filter((e) => !e.labels.length && !e.getAttribute("aria-label") && e.type !== "hidden")
    .map((e) => e.outerHTML.slice(0, 80)));
}

async function visit(page, hash, heading) {
  await page.goto(base + "/" + hash);
  await page.getByRole("heading", { level: 1, name: heading }).waitFor();
}

(async () => {
  const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox"] });
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  // script errors and policy violations; failed requests are expected (a wrong password on purpose)
  page.on("console", (m) => { if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) errors.push(m.text()); });
  try {
    // log in with the keyboard only
    await page.goto(base + "/");
    await page.getByRole("heading", { name: "Log in to Corral" }).waitFor();
    await shot(page, "login");
    out.labels_missing.login = await unlabelled(page);
    await page.getByLabel("Password").fill("wrong password");
    await page.keyboard.press("Enter");
    out.bad_login = await page.getByRole("alert").innerText();
    await page.getByLabel("Password").fill(process.env.ADMIN_PASSWORD);
    await page.keyboard.press("Enter");
    await page.getByRole("heading", { level: 1, name: "Overview" }).waitFor();

    // overview: the CPU-only worker, ready
    const row = page.getByRole("row", { name: /w1/ });
    await row.getByText("ready").waitFor();
    out.pages.overview = await row.innerText();
    out.health = await page.getByLabel("Cluster health").innerText();
    await shot(page, "overview");

    // models: a dry run first, then the deploy; a model that cannot be placed shows why
    await visit(page, "#/models", "Models");
    out.labels_missing.models = await unlabelled(page);
    await page.getByLabel("Name").fill("ghost");
    await page.getByLabel("Source").fill("/nowhere/ghost.gguf");
    await page.getByRole("button", { name: "Check placement" }).click();
    await page.getByText("Cannot place:").waitFor({ timeout: 20000 });
    out.refused = await page.locator("form[aria-label='Deploy a model']").innerText();
    out.refused_deploy_enabled = await page.getByRole("button", { name: "Deploy", exact: true }).isEnabled();
    await shot(page, "deploy-refused");
    await page.getByLabel("Name").fill("tiny");
    await page.getByLabel("Source").fill(process.env.MODEL_PATH);
    await page.getByLabel("Context").fill("1024");
    await page.getByLabel("Engine arguments").fill("-t 1");
    await page.getByLabel("Allow CPU offload").check();
    await page.getByRole("button", { name: "Check placement" }).click();
    await page.getByText("Placement:").waitFor({ timeout: 20000 });
    out.plan = await page.locator("form[aria-label='Deploy a model']").innerText();
    await shot(page, "deploy-plan");
    await page.getByRole("button", { name: "Deploy", exact: true }).click();
    await page.getByRole("heading", { level: 1, name: "Model tiny" }).waitFor();
    await page.getByText("1/1 running").waitFor({ timeout: 60000 });
    await page.getByRole("cell", { name: "running" }).waitFor();
    out.pages.model = await page.locator("main").innerText();
    await shot(page, "model");

    // the instance: its engine log, tailed
    await page.getByRole("link", { name: /^tiny-/ }).first().click();
    await page.getByRole("heading", { level: 1, name: /^Instance tiny-/ }).waitFor();
    await page.waitForFunction(() => document.querySelector(".log").textContent.length > 100, null, { timeout: 20000 });
    out.log_has_server = (await page.locator(".log").innerText()).includes("server");
    await shot(page, "instance");

    // a rolling update from the model's page (after the instance's: it replaces that instance)
    await visit(page, "#/model/tiny", "Model tiny");
    await page.getByLabel("Context size").fill("2048");
    await page.getByRole("button", { name: "Update", exact: true }).click();
    out.update = await page.getByText(/Rolling update|Updated/).innerText();
    await page.waitForFunction(() => /1\/1 running/.test(document.querySelector("main").textContent) &&
      document.querySelectorAll("main tbody tr").length === 1, null, { timeout: 60000 });

    // playground: a key for it, a streamed chat, then embeddings
    await visit(page, "#/playground", "Playground");
    out.labels_missing.playground = await unlabelled(page);
    await page.getByRole("button", { name: "Create a playground key" }).click();
    await page.waitForFunction(() => document.getElementById("f-api-key").value.startsWith("sk-corral"));
    await page.getByLabel("Model").selectOption("tiny");
    await page.getByLabel("System prompt").fill("You are terse.");
    await page.getByLabel("Message").fill("hello");
    await page.getByLabel("Max tokens").fill("12");
    await page.evaluate(() => {
      window.__updates = 0;
      new MutationObserver((records) => { window.__updates += records.length; }).observe(document.querySelector(".answer"),
        { childList: true, characterData: true, subtree: true });
    });
    await page.getByRole("button", { name: "Send" }).click();
    await page.getByText(/finish: /).waitFor({ timeout: 60000 });
    out.answer = await page.getByLabel("Answer").innerText();
    out.answer_updates = await page.evaluate(() => window.__updates);
    out.chat_meta = await page.getByText(/finish: /).innerText();
    await shot(page, "playground");
    await page.getByRole("tab", { name: "Embeddings" }).click();
    await page.getByLabel("Model").selectOption("embed");
    await page.getByLabel("Input").fill("hello world");
    await page.getByRole("button", { name: "Embed" }).click();
    await page.getByText(/dimensions/).waitFor({ timeout: 30000 });
    out.embedding = await page.getByLabel("Embedding").innerText();
    await shot(page, "playground-embeddings");

    // keys
    await visit(page, "#/keys", "API keys");
    out.labels_missing.keys = await unlabelled(page);
    await page.getByLabel("Key name").fill("web");
    await page.getByLabel("Requests per minute").fill("60");
    await page.getByRole("button", { name: "Create key" }).click();
    out.new_key = await page.getByLabel("New key").innerText();
    await page.getByRole("cell", { name: "web", exact: true }).waitFor();
    await shot(page, "keys");

    // usage: what the playground spent
    await visit(page, "#/usage", "Usage");
    await page.getByRole("cell", { name: "tiny", exact: true }).waitFor();
    out.pages.usage = await page.locator("main").innerText();
    await shot(page, "usage");

    // users and audit (admin)
    await visit(page, "#/users", "Users");
    out.labels_missing.users = await unlabelled(page);
    await page.getByLabel("User name").fill("alice");
    await page.getByLabel("Initial password").fill("alice-password-1");
    await page.getByRole("button", { name: "Create user" }).click();
    await page.getByRole("cell", { name: "alice", exact: true }).waitFor();
    await shot(page, "users");
    await visit(page, "#/audit", "Audit log");
    await page.getByRole("cell", { name: "model.create" }).first().waitFor();
    out.pages.audit = await page.locator("main").innerText();
    await shot(page, "audit");

    // events, live: a scale shows up without reloading
    await visit(page, "#/events", "Events");
    await page.getByText("model 'tiny' deployed by admin").waitFor();
    const changed = page.getByText("model 'tiny' changed by admin");
    const before = await changed.count(); // the rolling update above said so once already
    await page.evaluate(async () => {
      await fetch("/api/models/tiny", { method: "PATCH", headers: { "Content-Type": "application/json",
        Authorization: "Bearer " + sessionStorage.getItem("corral.token") }, body: JSON.stringify({ replicas: 1, ctx: 1024 }) });
    });
    await page.waitForFunction((n) => [...document.querySelectorAll("td")]
      .filter((td) => td.textContent === "model 'tiny' changed by admin").length > n, before, { timeout: 20000 });
    out.pages.events = await page.locator("main").innerText();
    await shot(page, "events");

    // a phone's width: nothing wider than the screen
    await page.setViewportSize({ width: 390, height: 844 });
    await visit(page, "#/overview", "Overview");
    await page.getByRole("row", { name: /w1/ }).waitFor();
    out.phone_overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    await shot(page, "overview-phone");
    await visit(page, "#/playground", "Playground");
    out.phone_overflow_playground = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    await shot(page, "playground-phone");
    await page.setViewportSize({ width: 1280, height: 900 });

    // password change: back to the login page, the new password works
    await visit(page, "#/account", "Account");
    out.labels_missing.account = await unlabelled(page);
    await page.getByLabel("Current password").fill(process.env.ADMIN_PASSWORD);
    await page.getByLabel("New password").fill("a-new-admin-password");
    await page.getByRole("button", { name: "Change password" }).click();
    await page.getByRole("heading", { name: "Log in to Corral" }).waitFor();
    await page.getByLabel("Password").fill("a-new-admin-password");
    await page.getByRole("button", { name: "Log in" }).click();
    await page.getByRole("heading", { level: 1, name: "Overview" }).waitFor();
    out.relogin = true;
  } catch (e) {
    out.error = String(e && e.stack || e);
    try { await shot(page, "failure"); out.failure_text = (await page.locator("body").innerText()).slice(0, 3000); } catch (e2) { /* */ }
  }
  out.page_errors = errors;
  await browser.close();
  console.log(JSON.stringify(out));
})();
