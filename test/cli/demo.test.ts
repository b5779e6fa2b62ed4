// The README's main command, `npm run demo`, end to end and not on a TTY: it trains the built-in model on the
// customer-support set and every tuned answer equals the trained one (the demo exits 1 otherwise).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEMO_DATASET, readDemoQuestions } from '../../src/cli/demo.ts';

test('npm run demo tunes the default model until it gives every trained answer', { timeout: 600_000 }, async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'localtune-demo-'));
  try {
    const child = spawn('npm', ['run', '--silent', 'demo'], { env: { ...process.env, LOCALTUNE_DATA_DIR: dataDir }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (c: Buffer) => { out += c.toString(); });
    child.stderr.on('data', (c: Buffer) => { out += c.toString(); });
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    assert.equal(code, 0, out);

    const questions = readDemoQuestions(readFileSync(DEMO_DATASET, 'utf8'), DEMO_DATASET);
    assert.match(out, new RegExp(`tuned model gives ${questions.length} of ${questions.length} trained answers exactly`));
    // Not a TTY: progress comes as plain lines, ending at the last step.
    assert.match(out, /^step 1\/(\d+) train_loss=[\d.]+$/m);
    const total = /^step 1\/(\d+)/m.exec(out)![1];
    assert.match(out, new RegExp(`^step ${total}/${total} train_loss=[\\d.]+ eta=0:00$`, 'm'));
    assert.doesNotMatch(out, /\r|\x1b\[/, 'no terminal control sequences in plain output');
    // The side-by-side table shows each question with a ✓ tuned answer, and the way on.
    assert.equal(out.match(/✓ /g)?.length, questions.length);
    assert.match(out, /http:\/\/127\.0\.0\.1:8000\/dashboard\//);
    assert.ok(out.includes(`localtune serve --data-dir ${dataDir}) serves ft:localtune-default:default:support-demo:`), 'says how to serve the tuned model');
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
});
