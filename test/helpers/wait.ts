// Waiting in tests without sleep-and-hope: poll a condition up to a deadline, and record the order in which things finish.
import { setTimeout as sleep } from 'node:timers/promises';
import type OpenAI from 'openai';
import type { FineTuningJob } from 'openai/resources/fine-tuning/jobs/jobs';

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

export const FINISHED_STATUSES: ReadonlySet<string> = new Set(['succeeded', 'failed', 'cancelled']);

/** Retrieves job `id` every 200 ms until `until(job)` holds (default: it finished) and returns that job. */
export function waitForJob(
  client: OpenAI,
  id: string,
  o: WaitOptions & { until?: (job: FineTuningJob) => boolean | Promise<boolean>; what?: string } = {},
): Promise<FineTuningJob> {
  const until = o.until ?? ((job: FineTuningJob) => FINISHED_STATUSES.has(job.status));
  let status = '';
  return waitFor(`job ${id} to be ${o.what ?? 'finished'}`, async () => {
    const job = await client.fineTuning.jobs.retrieve(id);
    status = job.status;
    return (await until(job)) && job;
  }, { intervalMs: 200, ...o, context: () => `(status ${status})${o.context ? `\n${o.context()}` : ''}` });
}
