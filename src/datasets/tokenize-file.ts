// A validated training file, streamed as tokenized examples in file order.
import { readJsonl, type JsonlReaderOptions } from './jsonl-reader.ts';
import {
  tokenizeChatExample,
  tokenizePreferenceExample,
  type ChatTokenizer,
  type TokenizedExample,
  type TokenizedPreference,
} from './tokenize-example.ts';
import type { TrainingFormat } from './validate.ts';

/** Tokenizes every line of a file that `validateTrainingFile` accepted; a line it would reject throws with its number. */
export async function* tokenizeChatFile(path: string, chat: ChatTokenizer, options?: JsonlReaderOptions): AsyncGenerator<TokenizedExample> {
  for await (const line of readJsonl(path, options)) {
    if ('problem' in line) throw new Error(`line ${line.lineNumber}: ${line.message}`);
    yield atLine(line.lineNumber, () => tokenizeChatExample(chat, line.value as { messages: Record<string, unknown>[]; tools?: unknown[] }));
  }
}

export async function* tokenizePreferenceFile(path: string, chat: ChatTokenizer, options?: JsonlReaderOptions): AsyncGenerator<TokenizedPreference> {
  for await (const line of readJsonl(path, options)) {
    if ('problem' in line) throw new Error(`line ${line.lineNumber}: ${line.message}`);
    yield atLine(line.lineNumber, () => tokenizePreferenceExample(chat, line.value));
  }
}

/** Template and tokenizer errors name the line they came from. */
function atLine<T>(lineNumber: number, tokenize: () => T): T {
  try {
    return tokenize();
  } catch (e) {
    throw new Error(`line ${lineNumber}: ${(e as Error).message}`, { cause: e });
  }
}

/** Either kind, for code that only counts tokens (statistics). */
export function tokenizeFile(path: string, format: TrainingFormat, chat: ChatTokenizer, options?: JsonlReaderOptions): AsyncGenerator<TokenizedExample | TokenizedPreference> {
  return format === 'chat' ? tokenizeChatFile(path, chat, options) : tokenizePreferenceFile(path, chat, options);
}
