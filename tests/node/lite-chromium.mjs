// Mesh-Lite in a real browser: headless Debian Chromium, driven by playwright-core.
//
// Driven by the Rust test `lite_in_chromium` (crates/roomshard-cli/tests/lite.rs), which seeds a
// home, serves `roomshard_cli::lite::router` on 127.0.0.1 and runs this file with:
//   LITE_URL          the room page to open
//   LITE_EXPECT_TEXT  JSON array of strings that must appear as text on the page
//   ARTIFACT_DIR      where to save lite-room.png (a full-page screenshot)
// Its name does not match `node --test`'s default pattern, so the plain Node run in
// scripts/test.sh leaves it to the Rust test. Without LITE_URL it fails, saying how to run it; it
// also fails loudly if Chromium or playwright-core is missing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

const CHROMIUM = '/usr/bin/chromium';
const LITE_URL = process.env.LITE_URL;

test(
  'Mesh-Lite room page renders in headless Chromium',
  async () => {
    assert.ok(
      LITE_URL,
      'LITE_URL not set: run `cargo test -p roomshard-cli --test lite lite_in_chromium`, which serves a seeded room and runs this file',
    );
    assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: run .ci/install.sh (installs Debian's chromium)`);
    let chromium;
    try {
      ({ chromium } = await import('playwright-core'));
    } catch (e) {
      throw new Error(`playwright-core is not installed in tests/node/node_modules: run .ci/install.sh (${e.message})`);
    }
    const expected = JSON.parse(process.env.LITE_EXPECT_TEXT ?? '[]');
    const artifactDir = process.env.ARTIFACT_DIR ?? path.resolve('../../target/test-artifacts');
    const profile = mkdtempSync(path.join(tmpdir(), 'lite-chromium-'));
    // A fresh, empty profile: Playwright takes it as launchPersistentContext's userDataDir
    // (it refuses a --user-data-dir argument).
    const context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      viewport: { width: 1000, height: 800 },
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
    try {
      const page = context.pages()[0] ?? (await context.newPage());
      const dialogs = [];
      page.on('dialog', async (d) => {
        dialogs.push(d.message());
        await d.dismiss();
      });
      const failed = [];
      page.on('requestfailed', (r) => failed.push(`${r.url()}: ${r.failure()?.errorText}`));

      const response = await page.goto(LITE_URL, { waitUntil: 'load' });
      assert.equal(response.status(), 200, `GET ${LITE_URL}`);

      const text = await page.innerText('body');
      for (const t of expected) {
        assert.ok(text.includes(t), `page text contains ${JSON.stringify(t)}:\n${text}`);
      }

      // Every <img> loaded and decoded (a real PNG served through its signed URL).
      const images = await page.$$eval('img', (els) =>
        els.map((e) => ({ src: e.getAttribute('src'), complete: e.complete, width: e.naturalWidth })),
      );
      assert.ok(images.length > 0, 'the room page shows an image');
      for (const img of images) {
        assert.ok(img.complete && img.width > 0, `image loaded: ${JSON.stringify(img)}`);
      }

      // Escaped markup stayed text: no script element, no dialog, no injected <b>.
      assert.equal(await page.locator('script').count(), 0, 'no <script> element on the page');
      assert.equal(await page.locator('.body b').count(), 0, 'message bodies hold no markup');
      assert.deepEqual(dialogs, [], 'no script ran');
      assert.deepEqual(failed, [], 'no request failed');

      mkdirSync(artifactDir, { recursive: true });
      const shot = path.join(artifactDir, 'lite-room.png');
      await page.screenshot({ path: shot, fullPage: true });
      assert.ok(existsSync(shot));
      console.log(`screenshot: ${shot}`);
    } finally {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    }
  },
);
