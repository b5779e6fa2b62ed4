// Training progress for a terminal: a redrawn bar with step, loss and ETA on a TTY, plain lines otherwise (logs, CI).

export interface StepProgress {
  step: number;
  totalSteps: number;
  trainLoss: number;
  /** Seconds left, or null until there is a rate to estimate from. */
  etaSeconds: number | null;
}

export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  const m = Math.floor(s / 60);
  return `${m}:${String(s % 60).padStart(2, '0')}`;
}

/** `[#########---------]  step 12/60  loss 1.234  ETA 0:45`, as wide as `columns`. */
export function progressBar(p: StepProgress, columns: number): string {
  const text = `  step ${p.step}/${p.totalSteps}  loss ${p.trainLoss.toFixed(3)}  ETA ${p.etaSeconds === null ? '-:--' : formatDuration(p.etaSeconds)}`;
  const width = Math.max(10, Math.min(40, columns - text.length - 3));
  const done = p.totalSteps > 0 ? Math.round((width * Math.min(p.step, p.totalSteps)) / p.totalSteps) : 0;
  return `[${'#'.repeat(done)}${'-'.repeat(width - done)}]${text}`;
}

export function progressLine(p: StepProgress): string {
  return `step ${p.step}/${p.totalSteps} train_loss=${p.trainLoss.toFixed(4)}${p.etaSeconds === null ? '' : ` eta=${formatDuration(p.etaSeconds)}`}`;
}

/** Estimates time left from the pace since the first step seen (the first step also pays for building graphs). */
export class EtaEstimator {
  private first: { step: number; at: number } | null = null;

  constructor(private readonly now: () => number = () => Date.now()) {}

  update(step: number, totalSteps: number): number | null {
    const at = this.now();
    if (!this.first) {
      this.first = { step, at };
      return null;
    }
    const steps = step - this.first.step;
    if (steps <= 0) return null;
    return (((at - this.first.at) / steps) * (totalSteps - step)) / 1000;
  }
}

export interface ProgressReporter {
  step(p: Omit<StepProgress, 'etaSeconds'>): void;
  /** A message line (job events); on a TTY it goes above the bar. */
  message(line: string): void;
  /** Ends the bar's line. */
  done(): void;
}

/** On a TTY redraws one bar line; otherwise prints a line every `everySteps` steps and at the last one. */
export function progressReporter(out: NodeJS.WriteStream, everySteps = 10): ProgressReporter {
  const eta = new EtaEstimator();
  let barShown = false;
  let last: StepProgress | null = null;
  const clearBar = () => {
    if (barShown) out.write('\r\x1b[2K');
    barShown = false;
  };
  return {
    step(s) {
      const p = { ...s, etaSeconds: eta.update(s.step, s.totalSteps) };
      last = p;
      if (out.isTTY) {
        out.write(`\r\x1b[2K${progressBar(p, out.columns || 80)}`);
        barShown = true;
      } else if (p.step % everySteps === 0 || p.step === p.totalSteps || p.step === 1) {
        out.write(`${progressLine(p)}\n`);
      }
    },
    message(line) {
      clearBar();
      out.write(`${line}\n`);
      if (out.isTTY && last) {
        out.write(progressBar(last, out.columns || 80));
        barShown = true;
      }
    },
    done() {
      if (barShown) out.write('\n');
      barShown = false;
    },
  };
}
