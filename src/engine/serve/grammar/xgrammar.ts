// Loads @mlc-ai/web-xgrammar (xgrammar, the structured-output engine of vLLM, SGLang and TensorRT-LLM, compiled to WebAssembly) in Node.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type * as XGrammarModule from '@mlc-ai/web-xgrammar';

export type { CompiledGrammar, GrammarCompiler, GrammarMatcher, StructuralTagFormat, TokenizerInfo } from '@mlc-ai/web-xgrammar';
export type XGrammar = typeof XGrammarModule;

let loaded: XGrammar | null = null;

/**
 * The package ships one UMD bundle inside a `"type": "module"` package: Node loads it as ESM, where its CommonJS branch
 * (require, __filename) cannot run. So the bundle is evaluated here as the CommonJS module it is written to be.
 */
export function xgrammar(): XGrammar {
  if (loaded) return loaded;
  const require = createRequire(import.meta.url);
  const path = require.resolve('@mlc-ai/web-xgrammar');
  const module = { exports: {} as XGrammar };
  new Function('exports', 'module', 'require', '__filename', '__dirname', readFileSync(path, 'utf8')).call(module.exports, module.exports, module, require, path, path);
  loaded = module.exports;
  return loaded;
}

/**
 * Drops the module after it aborted (xgrammar's fatal checks abort the whole WebAssembly instance, e.g. on a $ref
 * it cannot resolve): the next xgrammar() call evaluates a fresh one.
 */
export function discardXgrammar(): void {
  loaded = null;
}
