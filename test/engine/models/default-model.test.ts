// The built-in default model: byte-identical from a seed, loadable as a model directory, an exact UTF-8 tokenizer, a ChatML template.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { Template } from '@huggingface/jinja';
import { DEFAULT_MODEL_ID, ensureDefaultModel, writeDefaultModel } from '../../../src/engine/models/default-model.ts';
import { readModelDir } from '../../../src/engine/models/model-dir.ts';
import { baseParameters, parameterCount } from '../../../src/engine/models/parameters.ts';
import { readTensor } from '../../../src/engine/models/safetensors.ts';
import { createRng } from '../../../src/engine/random.ts';

const root = mkdtempSync(join(tmpdir(), 'lt-dm-'));
const dir = ensureDefaultModel(root);

function hashes(d: string): Record<string, string> {
  return Object.fromEntries(readdirSync(d).sort().map((f) => [f, createHash('sha256').update(readFileSync(join(d, f))).digest('hex')]));
}

test('same seed => byte-identical files; another seed => other weights, same tokenizer', () => {
  const again = join(root, 'again');
  const other = join(root, 'other');
  writeDefaultModel(again);
  writeDefaultModel(other, 7);
  const h = hashes(dir);
  assert.deepEqual(Object.keys(h), ['config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']);
  assert.deepEqual(hashes(again), h);
  const o = hashes(other);
  assert.notEqual(o['model.safetensors'], h['model.safetensors']);
  assert.equal(o['tokenizer.json'], h['tokenizer.json']);
});

test('loads as a model directory: Llama, GQA 8/4, tied, 3,033,344 parameters, HF-like init', () => {
  assert.equal(dir, join(root, DEFAULT_MODEL_ID));
  assert.equal(ensureDefaultModel(root), dir, 'second call keeps it');
  const m = readModelDir(dir);
  assert.deepEqual(
    [m.config.hiddenSize, m.config.numLayers, m.config.numHeads, m.config.numKvHeads, m.config.intermediateSize, m.config.vocabSize, m.contextLength],
    [256, 4, 8, 4, 704, 320, 2048],
  );
  assert.equal(m.config.tieWordEmbeddings, true);
  assert.equal(parameterCount(baseParameters(m.config)), 3_033_344);
  const std = (x: Float32Array) => Math.sqrt(x.reduce((s, v) => s + v * v, 0) / x.length);
  assert.ok(Math.abs(std(readTensor(m.tensors.get('model.layers.0.mlp.up_proj.weight')!).data) - 0.02) < 0.001);
  assert.ok(Math.abs(std(readTensor(m.tensors.get('model.embed_tokens.weight')!).data) - 0.1) < 0.005);
  assert.ok(readTensor(m.tensors.get('model.norm.weight')!).data.every((v) => v === 1));
});

test('tokenizer round-trips arbitrary UTF-8 exactly and keeps ChatML specials whole', () => {
  const tokenizer = new Tokenizer(JSON.parse(readFileSync(join(dir, 'tokenizer.json'), 'utf8')), JSON.parse(readFileSync(join(dir, 'tokenizer_config.json'), 'utf8')));
  const rng = createRng(3);
  // decode([]) throws in @huggingface/tokenizers 0.2, so no empty sample.
  const samples = ['Hello, world!', '  leading and trailing  ', 'tabs\tand\nnewlines\r\n', 'héllo 日本語 🎉 عربى ∑∫', '\u0000\u0001\u007f\u00ad'];
  for (let i = 0; i < 50; i++) {
    let s = '';
    for (let j = 0; j < 20; j++) {
      let cp = rng.uint32() % 0x110000;
      if (cp >= 0xd800 && cp <= 0xdfff) cp = 0x41; // lone surrogates are not valid UTF-8
      s += String.fromCodePoint(cp);
    }
    samples.push(s);
  }
  for (const s of samples) {
    const { ids } = tokenizer.encode(s);
    assert.deepEqual(ids, [...Buffer.from(s, 'utf8')], JSON.stringify(s));
    assert.equal(tokenizer.decode(ids), s);
  }
  assert.deepEqual(tokenizer.encode('<|im_start|>user\nhi<|im_end|><|endoftext|>').ids, [257, 117, 115, 101, 114, 10, 104, 105, 258, 256]);
  assert.equal(tokenizer.decode([257, 104, 105, 258], { skip_special_tokens: true }), 'hi');
});

test('ChatML template: roles, tool calls, tool results, generation prompt', () => {
  const cfg = JSON.parse(readFileSync(join(dir, 'tokenizer_config.json'), 'utf8'));
  assert.equal(cfg.eos_token, '<|im_end|>');
  assert.equal(cfg.pad_token, '<|endoftext|>');
  const template = new Template(cfg.chat_template);
  const messages = [
    { role: 'system', content: 'Be brief.' },
    { role: 'user', content: [{ type: 'text', text: 'Weather?' }] },
    { role: 'assistant', content: null, tool_calls: [{ id: 'c1', type: 'function', function: { name: 'weather', arguments: '{"city":"Oslo"}' } }] },
    { role: 'tool', tool_call_id: 'c1', content: 'rain' },
    { role: 'assistant', content: 'Rain.' },
  ];
  assert.equal(
    template.render({ messages, add_generation_prompt: false }),
    '<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWeather?<|im_end|>\n' +
      '<|im_start|>assistant\n<tool_call>\n{"name": "weather", "arguments": {"city":"Oslo"}}\n</tool_call><|im_end|>\n' +
      '<|im_start|>tool\nrain<|im_end|>\n<|im_start|>assistant\nRain.<|im_end|>\n',
  );
  assert.equal(template.render({ messages: [{ role: 'user', content: 'hi' }], add_generation_prompt: true }), '<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n');
  const withTools = template.render({ messages: messages.slice(0, 2), tools: [{ type: 'function', function: { name: 'weather', parameters: {} } }], add_generation_prompt: true });
  assert.match(withTools, /^<\|im_start\|>system\nBe brief\.\n\n# Tools\n[^]*"name": "weather"[^]*<\|im_end\|>\n<\|im_start\|>user\nWeather\?<\|im_end\|>\n<\|im_start\|>assistant\n$/);
  assert.equal(withTools.match(/<\|im_start\|>system/g)!.length, 1);
});
