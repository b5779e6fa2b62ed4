// Drives the dashboard in headless Chromium (Debian's, installed by scripts/ensure-chromium.mjs) while a real job
// trains: the key form, the job list, the loss curve growing step by step, the answer scores and samples of its
// generation-based validation, and the playground answering like the API.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createReadStream, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { startTestServer } from '../helpers/server.ts';

const KEY = 'sk-dashboard-browser-test';
const DATASET = 'scripts/demo/customer-support.jsonl';


test('the dashboard shows a training job live and chats with its tuned model', { timeout: 300_000 }, async () => {
  const executablePath = execFileSync(process.execPath, ['scripts/ensure-chromium.mjs', '--print-path'], { encoding: 'utf8' }).trim();
  const server = await startTestServer({ env: { LOCALTUNE_API_KEYS: `team:${KEY}` } });
  const browser = await chromium.launch({ executablePath, args: ['--no-sandbox'] });
  const screenshots = mkdtempSync(join(tmpdir(), 'localtune-dashboard-'));
  try {
    const client = server.client(KEY);
    const file = await client.files.create({ file: createReadStream(DATASET), purpose: 'fine-tune' });
    const job = await client.fineTuning.jobs.create({
      model: 'localtune-default',
      training_file: file.id,
      validation_file: file.id,
      suffix: 'browser',
      method: { type: 'supervised', supervised: { hyperparameters: { n_epochs: 15, batch_size: 4, learning_rate_multiplier: 1 } } },
    });

    const page = await browser.newPage({ viewport: { width: 1366, height: 900 } });
    const pageErrors: string[] = [];
    page.on('pageerror', (err) => pageErrors.push(err.message));
    await page.goto(`${server.url}/dashboard/`);

    // Keys are configured, so the page asks for one before it shows anything.
    await page.waitForSelector('#key-form:not([hidden])');
    await page.fill('#api-key', KEY);
    await page.click('#key-form button[type=submit]');
    await page.click(`#job-list button[data-job-id="${job.id}"]`);
    await page.waitForSelector(`#job-detail[data-job-id="${job.id}"]`);

    // The loss curve appears with the first metrics events and grows while the job runs. What the page shows is
    // sampled until the job ends; the point count and the status come from the same render, so no race with the job.
    const seenWhileRunning = new Set<number>();
    for (let status = ''; status !== 'succeeded';) {
      assert.ok(status !== 'failed' && status !== 'cancelled', `job ended ${status}`);
      const shown = await page.evaluate(() => ({
        points: Number(document.querySelector('#loss-chart')?.getAttribute('data-points') ?? 0),
        status: document.querySelector('#job-status')?.textContent ?? '',
        progress: document.querySelector('#job-progress-text')?.textContent ?? '',
      }));
      status = shown.status;
      if (status === 'running' && shown.points > 0 && !seenWhileRunning.has(shown.points)) {
        seenWhileRunning.add(shown.points);
        assert.match(shown.progress, /^step \d+ of 90 · training loss \d/);
        if (seenWhileRunning.size === 2) await page.screenshot({ path: join(screenshots, 'desktop-running.png'), fullPage: true });
      }
      await page.waitForTimeout(250);
    }
    assert.ok(seenWhileRunning.size >= 2, `the curve was drawn and grew while the job ran: point counts ${[...seenWhileRunning]}`);

    // When the job ends the page shows it, with the tuned model in the models table.
    const done = await client.fineTuning.jobs.retrieve(job.id);
    await page.waitForSelector(`#checkpoint-table td.model-id:text-is("${done.fine_tuned_model}")`);
    const trainPoints = await page.$eval('#loss-chart path.series-train', (p) => Number(p.getAttribute('data-points')));
    assert.equal(trainPoints, 90, 'every step is on the finished curve, once');
    const trainPath = await page.$eval('#loss-chart path.series-train', (p) => p.getAttribute('d') ?? '');
    assert.equal(trainPath.match(/L/g)?.length, 89, 'the training loss is one line through every step');
    assert.ok(await page.$('#loss-chart path.series-valid'), 'the validation loss is drawn too');
    assert.ok(await page.$('#accuracy-chart path.series-train'), 'the accuracy chart is drawn');
    // The job has a validation file: its answers were scored at epoch ends (every few, within their time share, and
    // the last), and each kept checkpoint that answered shows three validation prompts with reference and answer.
    const answered = [];
    for await (const e of client.fineTuning.jobs.listEvents(job.id, { limit: 100 })) if (e.type === 'metrics' && typeof (e.data as Record<string, unknown>).valid_exact_match === 'number') answered.push(e);
    assert.ok(answered.length >= 2, `answers scored at ${answered.length} epoch ends`);
    assert.equal(await page.$eval('#answers-chart path.series-exact', (p) => Number(p.getAttribute('data-points'))), answered.length);
    assert.equal(await page.$eval('#answers-chart path.series-similar', (p) => Number(p.getAttribute('data-points'))), answered.length);
    const withSamples = (await client.fineTuning.jobs.checkpoints.list(job.id)).data.filter((c) => 'valid_samples' in c.metrics).length;
    assert.ok(withSamples >= 1, 'the final checkpoint answered');
    assert.equal(await page.$$eval('#answer-samples details', (d) => d.length), withSamples);
    const sample = await page.$$eval('#answer-samples details[open] tbody tr', (rows) => rows.map((r) => [...r.children].map((td) => td.textContent ?? '')));
    assert.equal(sample.length, 3);
    for (const [prompt, reference] of sample) assert.ok(prompt!.length > 0 && reference!.length > 0, JSON.stringify(sample));

    // The playground asks the tuned model; at temperature 0 it answers what the API answers.
    const question = 'How long is the warranty?';
    const viaApi = await client.chat.completions.create({ model: done.fine_tuned_model!, messages: [{ role: 'user', content: question }], temperature: 0, max_tokens: 128 });
    await page.click(`#checkpoint-table tr:has(td.model-id:text-is("${done.fine_tuned_model}")) button`);
    // The click may first reload the model list (a model the page has not listed yet), so wait for the choice.
    await page.waitForFunction((model) => (document.querySelector('#chat-model') as HTMLSelectElement).value === model, done.fine_tuned_model, { timeout: 30_000 });
    await page.fill('#chat-input', question);
    await page.click('#chat-send');
    await page.waitForSelector('#chat-log li.from-assistant');
    const shown = await page.$eval('#chat-log li.from-assistant', (li) => li.lastChild?.textContent ?? '');
    assert.equal(shown, viaApi.choices[0]!.message.content);
    await page.screenshot({ path: join(screenshots, 'desktop-done.png'), fullPage: true });

    // Phone width: one column, nothing wider than the screen.
    await page.setViewportSize({ width: 390, height: 844 });
    await page.waitForTimeout(300);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    assert.equal(overflow, 0, 'no horizontal scrolling at phone width');
    await page.screenshot({ path: join(screenshots, 'phone-done.png'), fullPage: true });
    assert.deepEqual(pageErrors, []);
    console.log(`dashboard screenshots: ${screenshots}`);
  } finally {
    await browser.close();
    await server.stop();
  }
});
