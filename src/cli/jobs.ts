// `localtune jobs list|show|events|cancel|pause|resume`: fine-tuning jobs on a running server, through its public /v1 API.
import { ConfigError } from '../config.ts';
import type { components } from '../contract.ts';
import { CONNECTION_USAGE, clientFromArgs, type ApiClient } from './api-client.ts';
import { rejectExtra, takeFlag, takeOption } from './options.ts';

type Job = components['schemas']['FineTuningJob'];
type JobEvent = components['schemas']['FineTuningJobEvent'];
type Page<T> = { data: T[]; has_more: boolean };

export const JOBS_USAGE = `usage: localtune jobs list [--limit N]             the project's jobs, newest first
       localtune jobs show JOB_ID                the job object (JSON)
       localtune jobs events JOB_ID [--follow]   the job's events, oldest first; --follow waits for new ones until the job ends
       localtune jobs cancel JOB_ID              cancel a job that has not finished
       localtune jobs pause JOB_ID               pause a queued or running job (it keeps its progress)
       localtune jobs resume JOB_ID              resume a paused job
options (every jobs command):
${CONNECTION_USAGE}`;

/** Statuses after which nothing more happens to a job. */
export const FINISHED_STATUSES: ReadonlySet<string> = new Set(['succeeded', 'failed', 'cancelled']);

const isoTime = (unixSeconds: number) => new Date(unixSeconds * 1000).toISOString().replace('.000Z', 'Z');

export function formatEvent(e: JobEvent): string {
  return `${isoTime(e.created_at)}  ${e.level.padEnd(5)}  ${e.message}`;
}

/** Events newer than `sinceId` (all when null), oldest first; pages with `after` as the SDKs do. */
export async function eventsSince(client: ApiClient, jobId: string, sinceId: string | null): Promise<JobEvent[]> {
  const newestFirst: JobEvent[] = [];
  let after: string | undefined;
  for (;;) {
    const page = await client.get<Page<JobEvent>>(`/fine_tuning/jobs/${encodeURIComponent(jobId)}/events?limit=100${after ? `&after=${encodeURIComponent(after)}` : ''}`);
    const stop = page.data.findIndex((e) => e.id === sinceId);
    newestFirst.push(...(stop >= 0 ? page.data.slice(0, stop) : page.data));
    if (stop >= 0 || !page.has_more || page.data.length === 0) break;
    after = page.data[page.data.length - 1]!.id;
  }
  return newestFirst.reverse();
}

/** Calls `onEvent` for every event of the job, oldest first, polling until the job has finished; returns the final job. */
export async function followEvents(client: ApiClient, jobId: string, onEvent: (e: JobEvent) => void, pollMs = 1000): Promise<Job> {
  let lastId: string | null = null;
  for (;;) {
    // Read the status first: events written before a finished status are then all in the page read after it.
    const job = await client.get<Job>(`/fine_tuning/jobs/${encodeURIComponent(jobId)}`);
    for (const e of await eventsSince(client, jobId, lastId)) {
      onEvent(e);
      lastId = e.id;
    }
    if (FINISHED_STATUSES.has(job.status)) return job;
    await new Promise((r) => setTimeout(r, pollMs));
  }
}

function printJobTable(jobs: Job[]): void {
  const rows = [['ID', 'STATUS', 'MODEL', 'FINE_TUNED_MODEL', 'CREATED'], ...jobs.map((j) => [j.id, j.status, j.model, j.fine_tuned_model ?? '-', isoTime(j.created_at)])];
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  for (const r of rows) console.log(r.map((cell, c) => cell.padEnd(widths[c]!)).join('  ').trimEnd());
}

export async function jobsCommand(args: string[]): Promise<void> {
  const [action, ...rest] = args;
  const client = clientFromArgs(rest);
  const needId = () => {
    const id = rest.shift();
    if (!id || id.startsWith('--')) throw new ConfigError(`jobs ${action} needs a job id (see localtune jobs list)`);
    return encodeURIComponent(id);
  };
  if (action === 'list') {
    const limit = takeOption(rest, '--limit') ?? '20';
    rejectExtra(rest, 'localtune jobs list');
    const page = await client.get<Page<Job>>(`/fine_tuning/jobs?limit=${encodeURIComponent(limit)}`);
    if (page.data.length === 0) return console.log('no fine-tuning jobs yet (create one with POST /v1/fine_tuning/jobs, or run localtune demo)');
    printJobTable(page.data);
    if (page.has_more) console.log(`… more jobs: raise --limit (now ${limit})`);
  } else if (action === 'show') {
    const id = needId();
    rejectExtra(rest, 'localtune jobs show');
    console.log(JSON.stringify(await client.get<Job>(`/fine_tuning/jobs/${id}`), null, 2));
  } else if (action === 'events') {
    const id = needId();
    const follow = takeFlag(rest, '--follow');
    rejectExtra(rest, 'localtune jobs events');
    if (follow) {
      const job = await followEvents(client, decodeURIComponent(id), (e) => console.log(formatEvent(e)));
      console.log(`job ${job.id} ${job.status}${job.fine_tuned_model ? `: ${job.fine_tuned_model}` : ''}`);
    } else {
      for (const e of await eventsSince(client, decodeURIComponent(id), null)) console.log(formatEvent(e));
    }
  } else if (action === 'cancel' || action === 'pause' || action === 'resume') {
    const id = needId();
    rejectExtra(rest, `localtune jobs ${action}`);
    const job = await client.post<Job>(`/fine_tuning/jobs/${id}/${action}`);
    console.log(`job ${job.id} is now ${job.status}`);
  } else {
    throw new ConfigError(`unknown jobs action '${action ?? ''}' (list, show, events, cancel, pause, resume; try localtune jobs --help)`);
  }
}
