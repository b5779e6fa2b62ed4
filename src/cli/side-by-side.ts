// Prints rows of text in columns of fixed width, wrapping each cell, for the demo's base-vs-tuned comparison.

/** Control characters (a random base model emits any byte) would move the cursor or ring the bell: show them as '·'. */
export function printable(text: string): string {
  return text.replace(/[\u0000-\u001f\u007f-\u009f\ufffd]/g, '·');
}

function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = '';
  for (let word of printable(text).split(' ')) {
    while (word.length > width) {
      if (line) lines.push(line);
      line = '';
      lines.push(word.slice(0, width));
      word = word.slice(width);
    }
    if (!line) line = word;
    else if (line.length + 1 + word.length <= width) line += ` ${word}`;
    else {
      lines.push(line);
      line = word;
    }
  }
  lines.push(line);
  return lines;
}

/** The header, a rule, then each row with its cells wrapped to the column widths, a blank line between rows. */
export function sideBySide(header: string[], rows: string[][], totalWidth: number): string {
  const gap = 3;
  const width = Math.max(12, Math.floor((totalWidth - gap * (header.length - 1)) / header.length));
  const render = (cells: string[]) => {
    const wrapped = cells.map((c) => wrap(c, width));
    const height = Math.max(...wrapped.map((w) => w.length));
    return Array.from({ length: height }, (_, i) => wrapped.map((w) => (w[i] ?? '').padEnd(width)).join(' '.repeat(gap)).trimEnd());
  };
  return [...render(header), '-'.repeat(width * header.length + gap * (header.length - 1)), ...rows.flatMap((r, i) => [...(i ? [''] : []), ...render(r)])].join('\n');
}
