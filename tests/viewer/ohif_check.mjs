// Opens one study in OHIF's viewer in headless Chromium and records what a radiologist would
// see: whether the CT renders, whether the node's SEG and SR load (and what of them shows), and
// every error on the way. It asserts nothing: tests/integration/test_ohif_viewer.py does, from
// the JSON this writes.
//
//   node ohif_check.mjs '{"url": "http://127.0.0.1:PORT", "study": "1.2...", "mode": "ok",
//                         "shots": "/repo/var/screenshots", "out": "/tmp/result.json"}'
//
// mode "ok": CT, then the SEG (hydrated), then the SR; mode "not-evaluable": CT, then the SR;
// mode "marked": as "ok", on the answer to a radiologist's mark (the study also holds the mark's
// SR, so the node's SR and SEG are opened by their series description).
// Screenshots: ohif-study.png, ohif-seg.png, ohif-sr.png (and -panel.png: the measurement panel;
// -error.png: OHIF's error details, if any); ohif-not-evaluable-sr*.png; ohif-marked-*.png.
import fs from 'node:fs';
import path from 'node:path';
import puppeteer from 'puppeteer-core';

const args = JSON.parse(process.argv[2]);
const chromium = args.chromium || '/usr/bin/chromium';
const started = Date.now();
const seconds = () => ((Date.now() - started) / 1000).toFixed(1);
const sleep = ms => new Promise(resolve => setTimeout(resolve, ms));

const FULL = args.mode !== 'not-evaluable';         // CT, SEG and SR
const PREFIX = args.mode === 'marked' ? 'ohif-marked' : 'ohif';
const OWN = args.mode === 'marked' ? /CDSS EGFR/ : /./;  // the node's series, not the mark's
const result = {
  mode: args.mode, steps: [], console: [], pageErrors: [], httpErrors: [], failedRequests: [],
  errorDialogs: [], screenshots: {}, ctImage: '', ctRedPixels: null, segmentLabels: [],
  segRedPixels: 0, segImage: '', srViewportShown: false, srHydratePrompt: false, srText: '',
  srMeasurementPanel: '',
};

function save() {
  result.seconds = Number(seconds());
  fs.writeFileSync(args.out, JSON.stringify(result, null, 1));
}

async function step(name, body) {
  const t0 = Date.now();
  try {
    const detail = await body();
    result.steps.push({ name, ok: true, ms: Date.now() - t0, detail: detail ?? null });
    return true;
  } catch (error) {
    result.steps.push({ name, ok: false, ms: Date.now() - t0, error: String(error?.stack || error) });
    return false;
  }
}

const browser = await puppeteer.launch({
  executablePath: chromium,
  headless: true,
  // SwiftShader: WebGL without a GPU, as on a CI machine.
  args: ['--no-sandbox', '--disable-dev-shm-usage', '--use-gl=angle', '--use-angle=swiftshader',
         '--enable-unsafe-swiftshader', '--window-size=1600,1000'],
});
const page = await browser.newPage();
try {
  await run(page);
} finally {
  save();
  await browser.close();
}

async function run(page) {
  await page.setViewport({ width: 1600, height: 1000 });
  // OHIF's onboarding tour would cover the viewport: mark it as seen.
  await page.evaluateOnNewDocument(() => {
    localStorage.setItem('shownTours', JSON.stringify(['basicViewerTour']));
  });
  page.on('console', async message => {
    let text = `${seconds()} ${message.type()}: ${message.text()}`;
    for (const handle of message.args()) {     // an Error's stack, when one is logged
      try {
        const stack = await handle.evaluate(v => (v instanceof Error ? v.stack : null));
        if (stack) text += `\n    ${stack.replace(/\n/g, '\n    ')}`;
      } catch { /* the page moved on */ }
    }
    result.console.push(text);
  });
  page.on('pageerror', error => result.pageErrors.push(`${seconds()} ${error.stack || error}`));
  page.on('requestfailed', request => {
    const reason = request.failure()?.errorText;
    if (reason !== 'net::ERR_ABORTED') result.failedRequests.push(`${request.url()} ${reason}`);
  });
  page.on('response', response => {
    if (response.status() >= 400) result.httpErrors.push(`${response.status()} ${response.url()}`);
  });

  const url = `${args.url}/viewer?StudyInstanceUIDs=${encodeURIComponent(args.study)}`;
  const ctShown = await step('CT renders', async () => {
    await page.goto(url, { waitUntil: 'domcontentloaded', timeout: 60000 });
    await page.waitForSelector('[data-cy="viewport-pane"] canvas', { timeout: 90000 });
    // The overlay's instance number appears once the first image is in the viewport.
    await page.waitForFunction(() => /I:\s*\d+/.test(
      document.querySelector('[data-cy="viewport-overlay-bottom-right"]')?.innerText || ''),
      { timeout: 90000 });
    await settle();
    result.ctImage = await viewportText('[data-cy="viewport-overlay-bottom-right"]');
    // The same colour count as for the SEG below, on the CT alone: grey, so none.
    result.ctRedPixels = await countRed();
    return { image: result.ctImage, redPixels: result.ctRedPixels };
  });
  await dismissTour();
  await checkErrorDialog('after the CT', 'ohif-study-error.png');
  if (FULL) await shot(`${PREFIX}-study.png`);
  if (!ctShown) return;

  await step('open the right panel', async () => {
    // Collapsed, the panel is a strip of icons; a click on the segmentation icon opens it there.
    await page.click('[data-cy="panelSegmentation-btn"]');
    await sleep(500);
    if (!(await panelOpen())) {
      await page.click('[data-cy="side-panel-header-right"]');
      await sleep(500);
    }
    if (!(await panelOpen())) throw new Error('the right panel did not open');
  });

  if (FULL) {
    await step('SEG: load and hydrate', async () => {
      await openSeries('SEG', OWN);
      const yes = await page.waitForSelector('[data-cy="yes-hydrate-btn"]', { timeout: 60000 });
      await yes.click();
      await page.waitForFunction(() => /Primary lung tumor \(AI\)/.test(document.body.innerText),
        { timeout: 60000 });
      await settle();
    });
    await step('SEG: segments listed and drawn', async () => {
      result.segmentLabels = await page.evaluate(() => document.body.innerText.split('\n')
        .map(line => line.trim()).filter(line => /\(AI\)/.test(line)));
      for (let i = 0; i < 20 && result.segRedPixels < 20; i++) {
        result.segRedPixels = await countRed();
        if (result.segRedPixels < 20) await sleep(500);
      }
      // the slice OHIF shows the segment on (its overlay: "I:<instance number> (k/n)")
      result.segImage = await viewportText('[data-cy="viewport-overlay-bottom-right"]');
      return { labels: result.segmentLabels, redPixels: result.segRedPixels,
               image: result.segImage };
    });
    await checkErrorDialog('after the SEG', 'ohif-seg-error.png');
    await shot(`${PREFIX}-seg.png`);
  }

  await step('SR: load', async () => {
    await openSeries('SR', OWN);
    // OHIF shows a TID 1500 measurement report on its referenced image with an "SR" badge (and
    // asks to "hydrate" it when it can turn the SR's measurements into its own), any other SR
    // as text; or it fails with its error boundary.
    const outcome = await page.waitForFunction(() => {
      const text = document.body.innerText;
      if (/Something went wrong/.test(text)) return 'error';
      if (document.querySelector('[data-cy="yes-hydrate-btn"]')) return 'hydrate prompt';
      const pane = document.querySelector('[data-cy="viewport-pane"]');
      if (pane && /\bSR\b/.test(pane.innerText) && pane.querySelector('canvas')) {
        return 'SR viewport';
      }
      const grid = document.querySelector('[data-cy="viewport-grid"]');
      if (grid && !grid.querySelector('canvas') && grid.innerText.trim().length > 20) {
        return 'SR as text';
      }
      return false;
    }, { timeout: 60000, polling: 250 }).then(handle => handle.jsonValue());
    result.srHydratePrompt = outcome === 'hydrate prompt';
    if (result.srHydratePrompt) {
      await page.click('[data-cy="yes-hydrate-btn"]');
    }
    await settle();
    result.srViewportShown = outcome !== 'error';
    return outcome;
  });
  const srShot = FULL ? `${PREFIX}-sr` : 'ohif-not-evaluable-sr';
  result.srText = await viewportText('[data-cy="viewport-grid"]');
  await shot(`${srShot}.png`);
  await checkErrorDialog('after the SR', `${srShot}-error.png`);
  await step('SR: measurement panel', async () => {
    const tab = await page.$('[data-cy="trackedMeasurements-btn"]');
    if (tab) {
      await tab.click();
      await sleep(1000);
    }
    result.srMeasurementPanel = await page.evaluate(() => {
      const panels = [...document.querySelectorAll('[data-cy="side-panel-header-right"]')]
        .map(header => header.closest('[data-panel-id]') || header.parentElement?.parentElement);
      return panels.map(p => p?.innerText || '').join('\n');
    });
    return result.srMeasurementPanel;
  });
  await checkErrorDialog('in the measurement panel');
  await shot(`${srShot}-panel.png`);
}

async function settle() {
  await page.waitForNetworkIdle({ idleTime: 750, timeout: 30000 }).catch(() => {});
  await sleep(1000);
}

async function panelOpen() {
  return page.evaluate(() => [...document.querySelectorAll('*')].some(e =>
    e.childElementCount === 0 && e.textContent.trim() === 'Segmentations' && e.offsetWidth > 0));
}

async function viewportText(selector) {
  return page.$eval(selector, e => e.innerText).catch(() => '');
}

async function dismissTour() {
  const buttons = await page.$$('button, a, span');
  for (const button of buttons) {
    const text = await button.evaluate(e => e.innerText).catch(() => '');
    if (text === 'Skip all') await button.click().catch(() => {});
  }
}

async function openSeries(modality, description = /./) {
  // The study browser lists SEG and SR as rows without a picture; a double-click puts the series
  // into the active viewport (the first of that modality whose text matches ``description``).
  const rows = await page.$$('[data-cy="study-browser-thumbnail-no-image"]');
  for (const row of rows) {
    const label = await row.$eval('[data-cy="series-modality-label"]', e => e.innerText)
      .catch(() => row.evaluate(e => e.innerText));
    const text = await row.evaluate(e => e.innerText).catch(() => '');
    if (label.trim().split(/\s+/)[0] === modality && description.test(text)) {
      await row.click({ count: 2 });
      return;
    }
  }
  throw new Error(`no ${modality} series in the study browser`);
}

async function checkErrorDialog(when, screenshot = null) {
  // OHIF's error boundary shows a notification "Something went wrong"; its "Show Details"
  // opens a dialog with the error and stack.
  const text = await page.evaluate(() => document.body.innerText).catch(() => '');
  const match = text.match(/Something went wrong[^\n]*(\n[^\n]*){0,1}/);
  if (!match || result.errorDialogs.some(d => d.text === match[0])) return;
  const dialog = { when, text: match[0], details: '' };
  result.errorDialogs.push(dialog);
  for (const button of await page.$$('button')) {
    if ((await button.evaluate(e => e.innerText).catch(() => '')) !== 'Show Details') continue;
    await button.click().catch(() => {});
    await sleep(750);
    dialog.details = await page.$$eval('[role="dialog"]', nodes => nodes.map(n => n.innerText)
      .join('\n')).catch(() => '');
    if (screenshot) await shot(screenshot);
    for (const close of await page.$$('[role="dialog"] button')) {
      if ((await close.evaluate(e => e.innerText).catch(() => '')) === 'Close') {
        await close.click().catch(() => {});
        await sleep(300);
        break;
      }
    }
    break;
  }
}

async function shot(name) {
  fs.mkdirSync(args.shots, { recursive: true });
  const file = path.join(args.shots, name);
  await page.screenshot({ path: file }).catch(() => {});
  result.screenshots[name] = file;
}

async function countRed() {
  // The SEG's red, rgb(230, 40, 40): its outline, and its fill blended over grey CT.
  return countPixels('[data-cy="viewport-pane"]', [150, 255], [0, 110], [0, 110], 60);
}

async function countPixels(selector, [r0, r1], [g0, g1], [b0, b1], minRedOverGreen) {
  // The viewport's pixels as shown (a screenshot: WebGL canvases read back blank), counted in the
  // page with a 2D canvas.
  const element = await page.$(selector);
  if (!element) return 0;
  const png = await element.screenshot({ encoding: 'base64' });
  return page.evaluate(async (png, r0, r1, g0, g1, b0, b1, minRedOverGreen) => {
    const image = new Image();
    image.src = `data:image/png;base64,${png}`;
    await image.decode();
    const canvas = document.createElement('canvas');
    canvas.width = image.width;
    canvas.height = image.height;
    const context = canvas.getContext('2d');
    context.drawImage(image, 0, 0);
    const { data } = context.getImageData(0, 0, image.width, image.height);
    let count = 0;
    for (let i = 0; i < data.length; i += 4) {
      const [r, g, b] = [data[i], data[i + 1], data[i + 2]];
      if (r >= r0 && r <= r1 && g >= g0 && g <= g1 && b >= b0 && b <= b1 && r - g >= minRedOverGreen) count++;
    }
    return count;
  }, png, r0, r1, g0, g1, b0, b1, minRedOverGreen);
}
