// The viewer page in headless Chromium: the real `neurocube demo` binary on a
// free port, Debian's chromium driven by playwright-core. Scrolls z with the
// wheel and the keys and checks canvas pixels against the raw cutout API.
//
// NEUROCUBE_BIN (default target/debug/neurocube), CHROMIUM (default
// /usr/bin/chromium), SCREENSHOT_DIR (where viewer-*.png go; default a temp dir).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { chromium } from 'playwright-core';

const root = resolve(import.meta.dirname, '..', '..');
const bin = resolve(root, process.env.NEUROCUBE_BIN || 'target/debug/neurocube');
const shots = process.env.SCREENSHOT_DIR || mkdtempSync(join(tmpdir(), 'neurocube-shots-'));
const EXTENT = [1024, 768, 32];

let server, base, browser, page, dataDir, profile;

function startDemo(dir, size, env = {}) {
  const proc = spawn(bin, ['demo', '--port', '0', '--data-dir', dir, '--size', size.join('x'), '--synapses', '0'], {
    env: { ...process.env, NEUROCUBE__STORE__DURABILITY: 'flush', NEUROCUBE__LOG__LEVEL: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return { proc, url: listening(proc) };
}

function startServer() {
  dataDir = mkdtempSync(join(tmpdir(), 'neurocube-browser-'));
  const demo = startDemo(dataDir, EXTENT);
  server = demo.proc;
  return demo.url;
}

function listening(server) {
  return new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error('neurocube did not start in 180 s')), 180_000);
    let out = '';
    server.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/neurocube listening on (http:\/\/\S+)/);
      if (m) { clearTimeout(timer); ok(m[1]); }
    });
    server.on('exit', (code) => fail(new Error(`neurocube exited with ${code}: ${out}`)));
  });
}

async function raw(ch, x0, x1, y, z) {
  const r = await fetch(`${base}/demo/${ch}/raw/0/${x0},${x1}/${y},${y + 1}/${z},${z + 1}/`);
  assert.equal(r.status, 200, await r.clone().text());
  return new Uint8Array(await r.arrayBuffer());
}

// The server's label colour (neurocube_core::render::label_color).
function labelColor(label) {
  if (label === 0n) return [0, 0, 0, 0];
  const M = (1n << 64n) - 1n;
  let z = (label + 0x9E3779B97F4A7C15n) & M;
  z = ((z ^ (z >> 30n)) * 0xBF58476D1CE4E5B9n) & M;
  z = ((z ^ (z >> 27n)) * 0x94D049BB133111EBn) & M;
  z ^= z >> 31n;
  const b = (s) => Number((z >> s) & 0xffn) | 0x40;
  return [b(0n), b(8n), b(16n), 255];
}

async function waitDrawn(z) {
  await page.waitForFunction(
    (z) => window.neurocube && window.neurocube.status.complete && window.neurocube.status.drawnZ === z,
    z,
    { timeout: 30_000 },
  );
  // One more animation frame so the drawn canvas is the settled one.
  await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
}

// Canvas pixels along the centre row, with the voxel each pixel centre shows.
async function centreRow(n) {
  return page.evaluate((n) => {
    const c = document.getElementById('view');
    const ctx = c.getContext('2d');
    const sy = Math.floor(c.height / 2);
    const sx0 = Math.floor(c.width / 2) - n / 2;
    const px = Array.from(ctx.getImageData(sx0, sy, n, 1).data);
    const voxels = [];
    for (let i = 0; i < n; i++) voxels.push(window.neurocube.voxelAt(sx0 + i + 0.5, sy + 0.5));
    return { px, voxels };
  }, n);
}

before(async () => {
  base = await startServer();
  profile = mkdtempSync(join(tmpdir(), 'neurocube-chromium-'));
  // A fresh profile directory: playwright passes it as --user-data-dir.
  browser = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    viewport: { width: 1280, height: 800 },
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
  page = browser.pages()[0] || (await browser.newPage());
  page.on('pageerror', (e) => console.error('page error:', e));
});

after(async () => {
  if (browser) await browser.close();
  if (server) server.kill('SIGTERM');
  for (const d of [dataDir, profile]) if (d) rmSync(d, { recursive: true, force: true });
});

test('scrolling z draws the tiles the raw cutout API holds', async () => {
  await page.goto(`${base}/viewer/?ds=demo&ch=image&ov=&x=512&y=384&zoom=1&z=3`);
  await waitDrawn(3);
  const box = await page.locator('#view').boundingBox();
  await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
  for (let i = 0; i < 4; i++) {
    await page.mouse.wheel(0, 100);
    await page.waitForFunction((z) => window.neurocube.view.z === z, 4 + i);
  }
  await waitDrawn(7);
  await page.keyboard.press('ArrowUp');
  await waitDrawn(8);
  assert.equal(await page.inputValue('#z'), '8');

  const { px, voxels } = await centreRow(64);
  const [x0, y, z] = voxels[0];
  assert.equal(z, 8);
  assert.deepEqual(voxels.map((v) => v[0]), Array.from({ length: 64 }, (_, i) => x0 + i), 'one voxel per pixel');
  const want = await raw('image', x0, x0 + 64, y, z);
  const got = [];
  for (let i = 0; i < 64; i++) {
    assert.equal(px[4 * i], px[4 * i + 1]);
    assert.equal(px[4 * i], px[4 * i + 2]);
    assert.equal(px[4 * i + 3], 255);
    got.push(px[4 * i]);
  }
  assert.deepEqual(got, Array.from(want), `canvas row at y=${y}, z=${z} equals the raw cutout`);

  const png = await page.screenshot();
  writeFileSync(join(shots, 'viewer-image.png'), png);
  // Not blank: many gray levels, and the 1024-voxel-wide volume lights 80% of
  // the 1280-pixel-wide canvas at zoom 1.
  const stats = await page.evaluate(() => {
    const c = document.getElementById('view');
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    const levels = new Set();
    let lit = 0;
    for (let i = 0; i < d.length; i += 4 * 97) { levels.add(d[i]); if (d[i] > 0) lit++; }
    return { levels: levels.size, lit, samples: Math.floor(d.length / (4 * 97)) };
  });
  assert.ok(stats.levels > 100, `only ${stats.levels} gray levels drawn`);
  assert.ok(stats.lit > stats.samples * 0.7, `${stats.lit} of ${stats.samples} samples lit`);
});

test('the segmentation overlay blends label colours at the chosen opacity', async () => {
  await page.fill('#opacity', '50');
  await page.locator('#opacity').dispatchEvent('input');
  await page.selectOption('#ov', 'segmentation');
  await waitDrawn(8);
  const { px, voxels } = await centreRow(64);
  const [x0, y, z] = voxels[0];
  const gray = await raw('image', x0, x0 + 64, y, z);
  const labels = new DataView((await raw('segmentation', x0, x0 + 64, y, z)).buffer);
  let labelled = 0;
  for (let i = 0; i < 64; i++) {
    const label = BigInt(labels.getUint32(4 * i, true));
    const col = labelColor(label);
    const a = label === 0n ? 0 : 0.5;
    if (label !== 0n) labelled++;
    for (let k = 0; k < 3; k++) {
      const want = gray[i] * (1 - a) + col[k] * a;
      assert.ok(Math.abs(px[4 * i + k] - want) <= 2, `pixel ${i} channel ${k}: ${px[4 * i + k]} vs ${want} (label ${label})`);
    }
  }
  assert.ok(labelled > 10 && labelled < 64, `${labelled} labelled voxels on the row`);
  writeFileSync(join(shots, 'viewer-overlay.png'), await page.screenshot());
});

test('z plays as a movie and the frame rate is shown', async () => {
  const z0 = await page.evaluate(() => window.neurocube.view.z);
  await page.fill('#rate', '20');
  await page.locator('#rate').dispatchEvent('change');
  await page.click('#play');
  await page.waitForFunction((z0) => window.neurocube.view.z >= z0 + 10, z0, { timeout: 30_000 });
  await page.waitForTimeout(1200);
  const fps = await page.evaluate(() => window.neurocube.status.fps);
  const text = await page.textContent('#fps');
  await page.click('#play');
  assert.ok(fps >= 5 && fps <= 25, `frame rate ${fps} at a chosen 20 frames/s`);
  assert.match(text, /^\d+(\.\d)? frames\/s$/);
  assert.equal(await page.evaluate(() => window.neurocube.status.errors), 0);
});

test('zooming out switches to the coarser levels the dataset has', async () => {
  await page.locator('#view').click({ position: { x: 10, y: 10 } });
  for (let i = 0; i < 4; i++) await page.keyboard.press('-');
  // 0.8^4 = 0.41 screen pixels per voxel: the coarsest level whose voxels
  // still cover a screen pixel (level 1 with the anisotropic 2x2x1 demo
  // pyramid; level 0 if the dataset has only one).
  const { want, got } = await page.evaluate(() => {
    const v = window.neurocube.view;
    let want = 0;
    v.meta.level_info.forEach((l, i) => { if (l.factor[0] * v.zoom <= 1.0001) want = i; });
    return { want, got: window.neurocube.status.level };
  });
  const z = await page.evaluate(() => window.neurocube.view.z);
  await waitDrawn(z);
  assert.equal(await page.evaluate(() => window.neurocube.status.level), want, `level ${got}`);
  const levels = await page.evaluate(() => window.neurocube.view.meta.levels);
  if (levels > 1) assert.equal(want, 1);
  const lit = await page.evaluate(() => {
    const c = document.getElementById('view');
    const d = c.getContext('2d').getImageData(Math.floor(c.width / 2) - 50, Math.floor(c.height / 2) - 50, 100, 100).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4) if (d[i] + d[i + 1] + d[i + 2] > 0) n++;
    return n;
  });
  assert.equal(lit, 10000, 'the centre of the zoomed-out view is drawn');
  assert.equal(await page.evaluate(() => window.neurocube.status.errors), 0);
  writeFileSync(join(shots, 'viewer-zoomed-out.png'), await page.screenshot());
});

test('on a server in token mode the viewer draws a private dataset from ?token=', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'neurocube-browser-tokens-'));
  const env = { NEUROCUBE__STORE__DURABILITY: 'flush', NEUROCUBE__LOG__LEVEL: 'warn' };
  const token = execFileSync(bin, ['token', 'create', '--user', 'viewer', '--admin', '--data-dir', dir], {
    env: { ...process.env, ...env },
  }).toString().trim();
  const demo = startDemo(dir, [512, 512, 4], { NEUROCUBE__AUTH__MODE: 'tokens' });
  const tab = await browser.newPage();
  try {
    const url = await demo.url;
    // Without the token the dataset does not exist.
    assert.equal((await fetch(`${url}/v1/datasets/demo`)).status, 404);
    await tab.goto(`${url}/viewer/?ds=demo&ch=image&ov=&x=256&y=256&zoom=1&z=2&token=${token}`);
    await tab.waitForFunction(
      () => window.neurocube && window.neurocube.status.complete && window.neurocube.status.drawnZ === 2,
      null,
      { timeout: 30_000 },
    );
    assert.ok(!tab.url().includes('token'), `the token stays in the address bar: ${tab.url()}`);
    const { px, voxels } = await tab.evaluate(() => {
      const c = document.getElementById('view');
      const sy = Math.floor(c.height / 2);
      const sx0 = Math.floor(c.width / 2) - 16;
      const d = Array.from(c.getContext('2d').getImageData(sx0, sy, 32, 1).data);
      const v = [];
      for (let i = 0; i < 32; i++) v.push(window.neurocube.voxelAt(sx0 + i + 0.5, sy + 0.5));
      return { px: d, voxels: v };
    });
    const [x0, y, z] = voxels[0];
    const r = await fetch(`${url}/demo/image/raw/0/${x0},${x0 + 32}/${y},${y + 1}/${z},${z + 1}/`, {
      headers: { Authorization: `Bearer ${token}` },
    });
    assert.equal(r.status, 200);
    const want = Array.from(new Uint8Array(await r.arrayBuffer()));
    assert.deepEqual(px.filter((_, i) => i % 4 === 0), want, 'the canvas shows the private voxels');
    assert.equal(await tab.evaluate(() => window.neurocube.status.errors), 0);
  } finally {
    await tab.close();
    demo.proc.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  }
});
