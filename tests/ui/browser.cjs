// Drives Debian's chromium (headless, through playwright-core; no browser is downloaded)
// over the collector's web UI, as tests/tests/ui.rs sets it up. Prints one JSON line of
// what it saw; exits non-zero with the reason when a page does not do its job.
//
// Environment: TAPLINE_PLAYWRIGHT (path of the playwright-core package), CHROMIUM,
// TAPLINE_URL, TAPLINE_TOKEN, TAPLINE_EXPECT_TYPES (comma-separated alert types the
// list must show), TAPLINE_SCREENSHOTS (a directory for the pages' PNGs, optional).
"use strict";

const fs = require("fs");
const os = require("os");
const path = require("path");
const { chromium } = require(process.env.TAPLINE_PLAYWRIGHT);

const url = process.env.TAPLINE_URL;
const token = process.env.TAPLINE_TOKEN;
const expectTypes = (process.env.TAPLINE_EXPECT_TYPES || "").split(",").filter(Boolean);
const shots = process.env.TAPLINE_SCREENSHOTS || "";

function check(ok, what) {
  if (!ok) throw new Error(what);
}

async function main() {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "tapline-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      "--disable-dev-shm-usage"],
    viewport: { width: 1360, height: 860 },
    deviceScaleFactor: 1,
    timezoneId: "UTC",
    locale: "en-US",
  });
  const out = { pages: {} };
  const problems = [];
  try {
    const page = context.pages()[0] || (await context.newPage());
    page.setDefaultTimeout(20000);
    page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
    page.on("console", (m) => { if (m.type() === "error") problems.push(`console: ${m.text()}`); });
    const shot = async (name, full) => {
      if (shots) await page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: !!full });
    };
    const ready = async () => page.waitForSelector("body[data-ready]");
    const go = async (hash) => {
      await page.evaluate((h) => { location.hash = h; }, hash);
      await page.waitForFunction((h) => document.body.dataset.ready === h.replace(/^#/, ""), hash);
    };

    // Signed out: the UI sends the browser to the login page; a wrong token is refused.
    await page.goto(url);
    check(page.url().endsWith("/login"), `not sent to the login page: ${page.url()}`);
    await page.fill("#token", "tpl_wrong");
    await Promise.all([page.waitForLoadState("load"), page.click("button[type=submit]")]);
    check((await page.textContent("body")).includes("That is not the token"), "a wrong token was not refused");
    await shot("login");
    await page.fill("#token", token);
    await Promise.all([page.waitForURL((u) => !u.pathname.startsWith("/login")), page.click("button[type=submit]")]);
    // The refused attempt's 401 is logged by the browser as an error: expected.
    problems.length = 0;
    const cookies = await context.cookies();
    const session = cookies.find((c) => c.name === "tapline_session");
    check(session && session.httpOnly && session.sameSite === "Strict", `session cookie: ${JSON.stringify(cookies)}`);
    check(!(await page.evaluate(() => document.cookie)).includes("tapline_session"), "the session cookie is readable by scripts");

    // Alerts, newest first; every injected attack type is listed.
    await ready();
    await page.waitForSelector("#alerts tbody tr[data-alert]");
    const rows = await page.$$eval("#alerts tbody tr[data-alert]", (trs) => trs.map((tr) => ({
      id: tr.dataset.alert, type: tr.dataset.type, time: tr.cells[0].textContent })));
    check(rows.length > 0, "no alert rows");
    const times = rows.map((r) => r.time);
    check(times.every((t, i) => i === 0 || times[i - 1] >= t), `not newest first: ${times.join(" ")}`);
    out.pages.alerts = { rows: rows.length, total: Number(await page.getAttribute("[data-total]", "data-total")) };
    await shot("alerts");
    out.types = {};
    for (const t of expectTypes) {
      await go(`#/alerts?type=${t}`);
      const n = await page.$$eval("#alerts tbody tr[data-alert]", (trs, t) => trs.filter((tr) => tr.dataset.type === t).length, t);
      const other = await page.$$eval("#alerts tbody tr[data-alert]", (trs, t) => trs.filter((tr) => tr.dataset.type !== t).length, t);
      check(other === 0, `the type filter let ${other} other alerts through`);
      out.types[t] = n;
    }
    const missing = expectTypes.filter((t) => !out.types[t]);
    check(!missing.length, `attack types not in the alert list: ${missing.join(", ")}`);
    await go("#/alerts?severity=high");
    const sevs = await page.$$eval("#alerts tbody tr[data-alert] .badge", (bs) => bs.map((b) => b.textContent));
    check(sevs.every((s) => s === "high" || s === "critical"), `severity filter: ${sevs.join(",")}`);

    // One open rate_spike alert: explanation, chart with data, evidence, then feedback.
    await go("#/alerts?type=rate_spike&status=open");
    const link = await page.$("#alerts tbody tr[data-alert] a.alert-link");
    check(link, "no open rate_spike alert to open");
    await link.click();
    await page.waitForSelector("#activity-chart svg.chart[data-points]");
    const chart = await page.$eval("#activity-chart svg.chart", (s) => ({
      points: Number(s.dataset.points), nonzero: Number(s.dataset.nonzero),
      circles: s.querySelectorAll("circle.point").length, band: !!s.querySelector("polygon.band"),
      ticks: s.querySelectorAll("text.tick").length, units: [...s.querySelectorAll("text.unit")].map((t) => t.textContent) }));
    check(chart.points > 0 && chart.nonzero > 0 && chart.circles === chart.points, `chart without data: ${JSON.stringify(chart)}`);
    check(chart.units.some((u) => u.includes("requests per")), `chart without units: ${JSON.stringify(chart)}`);
    out.chart = chart;
    check((await page.$$("#evidence tbody tr")).length > 0, "no evidence rows");
    check((await page.textContent(".explanation")).length > 10, "no explanation");
    out.alert = page.url().split("#/alert/")[1];
    await shot("alert", true);
    // Per minute around the alert: two hours, the burst inside.
    await page.selectOption("#chart-step", "minute");
    await page.waitForSelector('#activity-chart svg.chart[data-points="120"]');
    out.minute_chart_nonzero = Number(await page.getAttribute("#activity-chart svg.chart", "data-nonzero"));
    check(out.minute_chart_nonzero > 0, "the per-minute chart is empty");
    check(await page.getAttribute("#alert-status [data-status]", "data-status") === "open", "the alert is not open");
    await page.click("#false-positive");
    await page.waitForSelector('#alert-status [data-status="false_positive"]');
    check((await page.textContent("#feedback-message")).includes("suppressed"), "no word of the suppression");
    check(await page.isDisabled("#resolve"), "the buttons stay enabled after a decision");
    await page.reload();
    await page.waitForSelector("#alert-status [data-status]");
    out.status_after_reload = await page.getAttribute("#alert-status [data-status]", "data-status");
    check(out.status_after_reload === "false_positive", `after reload: ${out.status_after_reload}`);

    // The actor behind it.
    await page.click("dl.facts a[href^='#/actor/']");
    await page.waitForSelector("#identities tbody tr");
    out.pages.actor = {
      identities: (await page.$$("#identities tbody tr")).length,
      days: (await page.$$("#days tbody tr")).length,
      addresses: (await page.$$("#addresses tbody tr")).length,
      endpoints: (await page.$$("#actor-endpoints tbody tr")).length,
      risk_points: Number(await page.getAttribute("#risk-chart svg.chart", "data-points")),
    };
    check(out.pages.actor.days > 0 && out.pages.actor.endpoints > 0 && out.pages.actor.risk_points > 0,
      `actor page: ${JSON.stringify(out.pages.actor)}`);
    await shot("actor", true);

    // The endpoint inventory.
    await page.click("nav a[data-nav=endpoints]");
    await page.waitForSelector("#endpoints tbody tr td.mono");
    out.pages.endpoints = { rows: (await page.$$("#endpoints tbody tr")).length,
      meters: (await page.$$("#endpoints meter")).length };
    check(out.pages.endpoints.rows > 5, `endpoints: ${JSON.stringify(out.pages.endpoints)}`);
    await shot("endpoints");

    // Agents and coverage.
    await page.click("nav a[data-nav=agents]");
    await page.waitForSelector("#agents tbody tr[data-agent]");
    out.pages.agents = await page.$$eval("#agents tbody tr[data-agent]", (trs) => trs.map((tr) => ({
      name: tr.dataset.agent, cells: [...tr.cells].map((c) => c.textContent.trim()) })));
    await shot("agents");
    check(!problems.length, problems.join("; "));
  } finally {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
  console.log(JSON.stringify(out));
}

main().catch((e) => {
  console.error(`browser test failed: ${e.stack || e}`);
  process.exit(1);
});
