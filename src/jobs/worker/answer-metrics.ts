// How close a generated answer is to a reference: exact match after whitespace normalisation, and chrF (a character n-gram F-score).

/** Runs of whitespace become one space; leading and trailing whitespace goes. */
export const normalizeWhitespace = (text: string) => text.replace(/\s+/g, ' ').trim();

export const exactMatch = (answer: string, reference: string) => normalizeWhitespace(answer) === normalizeWhitespace(reference);

/** chrF's settings as sacreBLEU's default: character n-grams up to 6, recall weighted β = 2, whitespace ignored. */
const CHRF_ORDER = 6;
const CHRF_BETA = 2;

function ngramCounts(chars: string[], n: number): Map<string, number> {
  const counts = new Map<string, number>();
  for (let i = 0; i + n <= chars.length; i++) {
    const gram = chars.slice(i, i + n).join('');
    counts.set(gram, (counts.get(gram) ?? 0) + 1);
  }
  return counts;
}

/**
 * chrF (Popović 2015; as sacreBLEU computes a sentence score) in [0, 1]: for each n from 1 to 6, the share of the answer's
 * character n-grams found in the reference (precision) and of the reference's found in the answer (recall), each
 * averaged over the orders both texts are long enough for, then combined as F_β = (1 + β²)·P·R / (β²·P + R) with β = 2.
 * Whitespace is removed first; code points, not UTF-16 units, are the characters. 1 for identical texts, 0 when no
 * character is shared (and when exactly one of them is empty).
 */
export function chrF(answer: string, reference: string): number {
  const hyp = Array.from(answer.replace(/\s+/g, ''));
  const ref = Array.from(reference.replace(/\s+/g, ''));
  if (hyp.length === 0 || ref.length === 0) return hyp.length === ref.length ? 1 : 0;
  let precision = 0;
  let recall = 0;
  let orders = 0;
  for (let n = 1; n <= CHRF_ORDER; n++) {
    if (hyp.length < n || ref.length < n) break;
    const h = ngramCounts(hyp, n);
    const r = ngramCounts(ref, n);
    let matched = 0;
    for (const [gram, count] of h) matched += Math.min(count, r.get(gram) ?? 0);
    precision += matched / (hyp.length - n + 1);
    recall += matched / (ref.length - n + 1);
    orders++;
  }
  precision /= orders;
  recall /= orders;
  const b2 = CHRF_BETA * CHRF_BETA;
  return precision + recall === 0 ? 0 : ((1 + b2) * precision * recall) / (b2 * precision + recall);
}
