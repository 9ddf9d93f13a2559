// Neuroglancer itself (the built client from PyPI's `neuroglancer`
// package, served by its Python viewer server) showing a `neurocube demo`
// through the precomputed URLs, in headless Chromium with SwiftShader's
// WebGL: the canvas must show the EM image (many gray levels) and, with
// the segmentation layer, label colours, and every chunk request must
// have been answered 200 by neurocube.
//
// NEUROCUBE_BIN (default target/debug/neurocube), CHROMIUM (default
// /usr/bin/chromium), SCREENSHOT_DIR (where neuroglancer-*.png go).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { chromium } from 'playwright-core';

const root = resolve(import.meta.dirname, '..', '..');
const bin = resolve(root, process.env.NEUROCUBE_BIN || 'target/debug/neurocube');
const shots = process.env.SCREENSHOT_DIR || mkdtempSync(join(tmpdir(), 'neurocube-shots-'));
const procs = [];
let base, browser, dataDir;

// The first line of a child's stdout matching `re`.
function firstMatch(proc, re, what) {
  return new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`${what} did not start in 180 s`)), 180_000);
    let out = '';
    proc.stdout.on('data', (d) => {
      out += d;
      const m = out.match(re);
      if (m) { clearTimeout(timer); ok(m[1]); }
    });
    proc.on('exit', (code) => fail(new Error(`${what} exited with ${code}: ${out}`)));
  });
}

function start(cmd, args, re, what, env = {}) {
  const p = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'] });
  procs.push(p);
  return firstMatch(p, re, what);
}

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'neurocube-ng-'));
  base = await start(bin, ['demo', '--port', '0', '--data-dir', dataDir, '--size', '512x512x32', '--synapses', '3000'],
    /neurocube listening on (http:\/\/\S+)/, 'neurocube',
    { NEUROCUBE__STORE__DURABILITY: 'flush', NEUROCUBE__LOG__LEVEL: 'warn' });
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    // WebGL 2 without a GPU: ANGLE on SwiftShader.
    args: ['--no-sandbox', '--use-gl=angle', '--use-angle=swiftshader', '--enable-unsafe-swiftshader',
      '--ignore-gpu-blocklist', '--no-first-run', '--disable-background-networking'],
  });
});

after(async () => {
  if (browser) await browser.close();
  for (const p of procs) p.kill('SIGTERM');
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

// Open Neuroglancer on the demo; wait until the cross-section is drawn;
// return the panel's pixels and the precomputed requests neurocube answered.
async function show(layers) {
  const url = await start('python3', [join(import.meta.dirname, 'neuroglancer_viewer.py'), base, 'demo', layers],
    /(http:\/\/\S+)/, 'the neuroglancer viewer server');
  const page = await browser.newPage({ viewport: { width: 800, height: 600 } });
  const answers = [];
  page.on('response', (r) => { if (r.url().includes('/precomputed/')) answers.push([r.url(), r.status()]); });
  page.on('pageerror', (e) => console.error('page error:', e.message));
  await page.goto(url);
  // The xy panel is the canvas region right of the layer controls; poll
  // until it stops changing and holds data.
  let last = null;
  let stats;
  for (let i = 0; i < 60; i++) {
    await page.waitForTimeout(500);
    const png = await page.screenshot({ clip: { x: 200, y: 120, width: 400, height: 400 } });
    stats = await page.evaluate(async (b64) => {
      const img = new Image();
      img.src = `data:image/png;base64,${b64}`;
      await img.decode();
      const c = new OffscreenCanvas(img.width, img.height);
      const ctx = c.getContext('2d');
      ctx.drawImage(img, 0, 0);
      const d = ctx.getImageData(0, 0, img.width, img.height).data;
      const grays = new Set();
      let colored = 0, n = 0;
      for (let j = 0; j < d.length; j += 4 * 7) {
        n++;
        const [r, g, b] = [d[j], d[j + 1], d[j + 2]];
        if (Math.max(Math.abs(r - g), Math.abs(g - b), Math.abs(r - b)) > 24) colored++;
        else grays.add(r);
      }
      return { grays: grays.size, colored: colored / n };
    }, png.toString('base64'));
    const key = JSON.stringify(stats);
    if (key === last && stats.grays > 20) break;
    last = key;
  }
  const shot = await page.screenshot();
  await page.close();
  return { stats, answers, shot };
}

test('Neuroglancer draws the demo EM image from the precomputed URLs', async () => {
  const { stats, answers, shot } = await show('image');
  writeFileSync(join(shots, 'neuroglancer-image.png'), shot);
  assert.ok(answers.some(([u]) => u.endsWith('/precomputed/demo/image/info')), 'info was read');
  assert.ok(answers.filter(([u]) => /\d+-\d+_\d+-\d+_\d+-\d+$/.test(u)).length >= 4, 'chunks were read');
  assert.deepEqual(answers.filter(([, s]) => s !== 200), [], 'every precomputed request answered 200');
  assert.ok(stats.grays > 60, `${stats.grays} gray levels in the panel`);
  assert.ok(stats.colored < 0.02, `${stats.colored} of the panel coloured without a segmentation layer`);
});

test('with the segmentation layer Neuroglancer colours the labels (compressed_segmentation)', async () => {
  const { stats, answers, shot } = await show('both');
  writeFileSync(join(shots, 'neuroglancer-segmentation.png'), shot);
  const seg = answers.filter(([u]) => u.includes('/precomputed/demo/segmentation/') && !u.endsWith('/info'));
  assert.ok(seg.length >= 4, `${seg.length} segmentation chunks read`);
  assert.deepEqual(answers.filter(([, s]) => s !== 200), [], 'every precomputed request answered 200');
  assert.ok(stats.colored > 0.5, `only ${stats.colored} of the panel coloured`);
});

test('the synapse table shows as a precomputed annotation layer', async () => {
  const { stats, answers, shot } = await show('synapses');
  writeFileSync(join(shots, 'neuroglancer-synapses.png'), shot);
  const ann = answers.filter(([u]) => u.includes('/precomputed/demo/annotations/synapses/'));
  assert.ok(ann.some(([u]) => u.endsWith('/info')), 'the annotation info was read');
  assert.ok(ann.some(([u]) => u.endsWith('/spatial0/0_0_0')), 'the spatial index was read');
  // The lines are drawn (yellow over the gray EM).
  assert.ok(stats.colored > 0.005, `only ${stats.colored} of the panel coloured`);
  assert.deepEqual(answers.filter(([, s]) => s !== 200), [], 'every precomputed request answered 200');
});
