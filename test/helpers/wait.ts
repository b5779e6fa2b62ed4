// Waiting in tests without sleep-and-hope: poll a condition up to a deadline, and record the order in which things finish.
import { setTimeout as sleep } from 'node:timers/promises';

export interface WaitOptions {
  /** Fail after this long (a failure, not a speed target: generous, so a busy machine still passes). Default 120 s. */
  timeoutMs?: number;
  /** Pause between checks. Default 25 ms. */
  intervalMs?: number;
  /** Appended to the failure message (e.g. the server's output). */
  context?: () => string;
}

type Truthy<T> = Exclude<T, false | 0 | '' | null | undefined>;

/**
 * Calls `check` until it returns a truthy value and returns that value; throws `timed out waiting for <what>` (with the
 * last value seen) past the deadline.
 */
export async function waitFor<T>(what: string, check: () => T | Promise<T>, o: WaitOptions = {}): Promise<Truthy<T>> {
  const deadline = Date.now() + (o.timeoutMs ?? 120_000);
  for (;;) {
    const value = await check();
    if (value) return value as Truthy<T>;
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${o.timeoutMs ?? 120_000} ms waiting for ${what} (last: ${JSON.stringify(value)})${o.context ? `\n${o.context()}` : ''}`);
    }
    await sleep(o.intervalMs ?? 25);
  }
}

/** Labels in the order their promises settled: assert an ordering of events instead of a duration. */
export function settleOrder() {
  const order: string[] = [];
  return {
    order,
    track<T>(label: string, promise: Promise<T>): Promise<T> {
      return promise.finally(() => order.push(label));
    },
  };
}
