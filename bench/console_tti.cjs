// Time to interactive of the console's first page: for each URL, ROUNDS cold
// loads (a new browser context each, so nothing is cached) in headless
// chromium, timed from navigation start until the login form can be used.
// Prints {url: {"median_ms", "runs_ms", "bytes"}} as JSON.
// Env: NODE_PATH (playwright-core), CHROMIUM; argv: ROUNDS URL...
const { chromium } = require("playwright-core");

(async () => {
  const rounds = parseInt(process.argv[2], 10);
  const urls = process.argv.slice(3);
  const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", args: ["--no-sandbox"] });
  const out = {};
  for (const url of urls) out[url] = { runs_ms: [], bytes: 0 };
  for (let r = 0; r < rounds; r++) {
    for (const url of urls) { // interleaved, so that both see the same machine
      const ctx = await browser.newContext();
      const page = await ctx.newPage();
      let bytes = 0;
      page.on("response", async (resp) => { try { bytes += (await resp.body()).length; } catch (e) { /* */ } });
      await page.goto(url);
      await page.getByLabel("Password").waitFor();
      const ms = await page.evaluate(() => performance.now());
      out[url].runs_ms.push(ms);
      out[url].bytes = bytes;
      await ctx.close();
    }
  }
  for (const url of urls) {
    const s = [...out[url].runs_ms].sort((a, b) => a - b);
    out[url].median_ms = s[Math.floor(s.length / 2)];
  }
  await browser.close();
  console.log(JSON.stringify(out));
})().catch((e) => { console.error(e); process.exit(1); });
